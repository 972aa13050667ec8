"""--precision: bf16 autocast and int8 dynamic quantization of the pretrained taggers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundalike.audio import synth
from soundalike.errors import ModelError
from soundalike.models.pretrained import load
from soundalike.models.zoo import load_analyzer, split_precision

REF = Path(__file__).parent / "data" / "musicnn_reference" / "reference.npz"


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    with np.load(REF) as z:
        signals = json.loads(str(z["signals"]))
    model = load("MTT_musicnn")
    return np.concatenate([model.patches(getattr(synth, s["fn"])(sr=s["sr"], **s["kwargs"]), s["sr"])
                           for s in signals])


@pytest.mark.parametrize("precision", ["bf16", "int8", "mixed"])
def test_other_precisions_stay_close_to_fp32_and_say_what_they_are(precision, patches):
    fp32 = load("MTT_musicnn")
    other = load("MTT_musicnn", precision=precision)
    assert other.name == f"MTT_musicnn@{precision}" and other.model_id.startswith(other.name + "-")
    assert other.model_id != fp32.model_id and fp32.precision == "fp32"
    a = fp32.run_patches(patches)
    b = other.run_patches(patches)
    assert all(v.dtype == np.float32 for v in b.values())
    dp = np.abs(a["probs"] - b["probs"]).max()
    assert dp < 5e-2, f"{precision}: per-patch tag probabilities move by {dp}"
    # track level (the mean over patches), what becomes catalog tags: within 1e-2
    assert np.abs(a["probs"].mean(0) - b["probs"].mean(0)).max() < 1e-2
    cos = np.sum(a["penultimate"] * b["penultimate"], 1) / (
        np.linalg.norm(a["penultimate"], axis=1) * np.linalg.norm(b["penultimate"], axis=1))
    assert cos.min() > 0.999
    assert dp > 0  # it really ran in another arithmetic


def test_precision_by_name_and_by_argument_is_the_same_analyzer():
    assert split_precision("MTT_musicnn@bf16") == ("MTT_musicnn", "bf16")
    assert split_precision("runs/x@y") == ("runs/x@y", "fp32")
    assert load_analyzer("MTT_musicnn@bf16") is load_analyzer("MTT_musicnn", precision="bf16")
    assert load_analyzer("MTT_musicnn", precision="fp32") is load_analyzer("MTT_musicnn")


@pytest.mark.parametrize("spec, precision, match", [
    ("mfcc-stats", "bf16", "only the pretrained"), ("MTT_musicnn", "fp16", "unknown precision"),
    ("MTT_musicnn@bf16", "int8", "says precision bf16"), ("MTT_vgg", "mixed", "not a musicnn"),
])
def test_bad_precision_requests_are_clear_errors(spec, precision, match):
    with pytest.raises(ModelError, match=match):
        load_analyzer(spec, precision=precision)


def test_ingest_with_bf16_records_its_own_model(tmp_path):
    from soundalike.ingest import ingest
    from soundalike.catalog.store import Catalog

    (tmp_path / "m").mkdir()
    sf.write(tmp_path / "m" / "a.flac", synth.demo_track("drum-loop", seed=0, duration_s=4.0, sr=16000), 16000)
    s = ingest([tmp_path / "m"], catalog=tmp_path / "c.sqlite", model="MTT_musicnn", precision="bf16", workers=1)
    assert s.ingested == 1 and s.model_name == "MTT_musicnn@bf16"
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        (m,) = cat.models()
        assert m.name == "MTT_musicnn@bf16" and m.model_id == load_analyzer("MTT_musicnn@bf16").model_id


def test_a_catalog_keeps_the_precision_it_was_made_with(tmp_path, monkeypatch):
    """A changed default precision never splits an older catalog into two embedding spaces."""
    from soundalike.catalog.store import Catalog
    from soundalike.ingest import ingest
    from soundalike.models import zoo

    (tmp_path / "m").mkdir()
    sf.write(tmp_path / "m" / "a.flac", synth.demo_track("drum-loop", seed=0, duration_s=4.0, sr=16000), 16000)
    old = tmp_path / "old.sqlite"
    s = ingest([tmp_path / "m"], catalog=old, model="MTT_musicnn", workers=1)
    assert s.model_name == "MTT_musicnn"
    monkeypatch.setattr(zoo, "DEFAULT_ANALYZER", "MTT_musicnn@bf16")  # the default changes
    sf.write(tmp_path / "m" / "b.flac", synth.demo_track("bass-groove", seed=1, duration_s=4.0, sr=16000), 16000)
    again = ingest([tmp_path / "m"], catalog=old, workers=1)
    assert again.model_name == "MTT_musicnn" and (again.ingested, again.unchanged) == (1, 1)
    with Catalog.open(old) as cat:
        assert [m.name for m in cat.models()] == ["MTT_musicnn"]
    fresh = ingest([tmp_path / "m"], catalog=tmp_path / "new.sqlite", workers=1)
    assert fresh.model_name == "MTT_musicnn@bf16" and fresh.ingested == 2
    # asking for a model or a precision is always obeyed
    asked = ingest([tmp_path / "m"], catalog=old, precision="bf16", workers=1)
    assert asked.model_name == "MTT_musicnn@bf16" and asked.ingested == 2


def test_mixed_precision_centres_the_front_end_exactly_and_keeps_the_rest_fp32(patches):
    """``mixed``: the five front-end convolutions in bf16 on centred input, the mid-end and
    dense layers in fp32.  Centring is exact arithmetic: in fp32 it changes nothing beyond
    rounding (bf16 is where it matters: the offset the log-mel sits on is rounded away with
    the detail otherwise)."""
    import torch

    net = load("MTT_musicnn").net
    x = torch.from_numpy(patches[:4]).transpose(1, 2)  # (B, T, F), as the front end reads it
    x = torch.nn.functional.pad(x * 2.0 + 3.0, (0, 0, 3, 3))  # an offset, as log-mel input has
    with torch.inference_mode():
        for b in net.frontend:
            plain, centred = b(x[:, : 187 + b.kernel_time - 1]), b(x[:, : 187 + b.kernel_time - 1], center=True)
            np.testing.assert_allclose(centred.numpy(), plain.numpy(), rtol=0, atol=1e-5 * float(plain.abs().max()))
    fp32, mixed = load("MTT_musicnn"), load("MTT_musicnn", precision="mixed")
    assert mixed.net.bf16_parts == {"timbral", "temporal", "center"} and not fp32.net.bf16_parts
    assert load_analyzer("musicnn-fusion@mixed").name == "musicnn-fusion@mixed"
    assert all(m.precision == "mixed" for m in load_analyzer("musicnn-fusion@mixed").models.values())
