"""--precision: bf16 autocast, int8 dynamic quantization and the bf16 front ends (mixed,
mixed-ef) of the pretrained taggers."""

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


@pytest.mark.parametrize("precision", ["bf16", "int8", "mixed", "mixed-ef"])
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
    ("MSD_vgg", "mixed-ef", "not a musicnn"),
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
    # --precision fp32 on a default that carries a precision: the plain model
    plain = ingest([tmp_path / "m"], catalog=tmp_path / "plain.sqlite", precision="fp32", workers=1)
    assert plain.model_name == "MTT_musicnn" and plain.ingested == 2


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


def _front_end_inputs(net, patches: np.ndarray):
    """Each front-end block's input for ``patches``, as ``Musicnn.forward`` slices it."""
    import torch

    x = net.bn_in(torch.from_numpy(patches).unsqueeze(1)).squeeze(1).transpose(1, 2)
    lo, hi = net.pad_time
    x = torch.nn.functional.pad(x, (0, 0, lo, hi))
    return [x[:, lo - b.pad_time[0] : lo + patches.shape[-1] + b.pad_time[1]] for b in net.frontend]


def test_error_fed_bf16_filters_are_bf16_and_err_less_on_log_mel_windows(patches):
    """``round_bf16_ef``: every weight a bfloat16 number, and on the windows the filters
    really read (centred log-mel of music) their rounding error is a fraction of what
    rounding each weight to its nearest bf16 leaves (3.2-3.7x smaller on these patches)."""
    import torch

    from soundalike.models.musicnn import round_bf16_ef

    net = load("MTT_musicnn").net
    for b, x in zip(net.frontend, _front_end_inputs(net, patches[::2])):
        out, _, kt, kf = b.weight.shape
        w = b.weight.reshape(out, kt * kf)
        q = round_bf16_ef(w, (kt, kf))
        assert q.dtype == torch.float64 and torch.equal(q.to(torch.bfloat16).double(), q)
        xc = x - x.mean(dim=(1, 2), keepdim=True)
        X = torch.nn.functional.unfold(xc.unsqueeze(1), (kt, kf)).transpose(1, 2).reshape(-1, kt * kf).double()
        nearest = (X @ (w.double() - w.to(torch.bfloat16).double()).T).pow(2).mean().sqrt()
        fed = (X @ (w.double() - q).T).pow(2).mean().sqrt()
        assert fed < nearest / 2, (kt, kf, float(nearest), float(fed))
    with pytest.raises(ValueError, match="not 7 x 30"):
        round_bf16_ef(net.frontend[0].weight.reshape(204, -1), (7, 30))


def test_mixed_ef_is_its_own_model_and_its_front_end_stays_near_fp32(patches):
    """``mixed-ef``: the front end in bf16 (each frame centred, bias after the max,
    error-fed filters), mid-end and dense in fp32; its own model id, also for the fusion;
    each block's output within a few bf16 steps of fp32's, however it is centred (the
    centres' shares are exact: a wrong one would move the outputs by the offset's size)."""
    import torch

    fp32, mixed, ef = load("MTT_musicnn"), load("MTT_musicnn", precision="mixed"), load("MTT_musicnn", precision="mixed-ef")
    assert ef.net.bf16_parts == {"timbral", "temporal", "bias", "ef", "frames"}
    assert ef.name == "MTT_musicnn@mixed-ef" and len({fp32.model_id, mixed.model_id, ef.model_id}) == 3
    fusion = load_analyzer("musicnn-fusion@mixed-ef")
    assert fusion.name == "musicnn-fusion@mixed-ef" and fusion.model_id != load_analyzer("musicnn-fusion").model_id
    assert all(m.precision == "mixed-ef" for m in fusion.models.values())
    with torch.inference_mode():
        for b, x in zip(fp32.net.frontend, _front_end_inputs(fp32.net, patches[:4])):
            x = x * 2.0 + 3.0  # on an offset, as log-mel input is
            ref = b(x)
            for frames in (False, True):
                got = b.forward_bf16(x, ef=True, frames=frames)
                assert got.dtype == torch.float32 and got.shape == ref.shape
                err = float((got - ref).abs().max())
                assert 0 < err < 2e-2 * float(ref.abs().max()), (frames, err)


def test_ingest_precision_mixed_ef_from_the_command_line(tmp_path):
    import os
    import subprocess
    import sys

    from soundalike.catalog.store import Catalog

    (tmp_path / "m").mkdir()
    sf.write(tmp_path / "m" / "a.flac", synth.demo_track("piano-arpeggio", seed=2, duration_s=7.0, sr=16000), 16000)
    p = subprocess.run([sys.executable, "-m", "soundalike", "ingest", str(tmp_path / "m"), "--catalog",
                        str(tmp_path / "c.sqlite"), "--model", "MTT_musicnn", "--precision", "mixed-ef",
                        "--workers", "1"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        (m,) = cat.models()
        assert m.name == "MTT_musicnn@mixed-ef" and m.model_id == load_analyzer("MTT_musicnn@mixed-ef").model_id
        (t,) = list(cat.iter_tracks())
        got = cat.get_analysis(t.id, m.model_id).embedding
    y = synth.demo_track("piano-arpeggio", seed=2, duration_s=7.0, sr=16000)
    want = load_analyzer("MTT_musicnn").analyze(y, 16000).embedding
    assert not np.array_equal(got, want)  # another arithmetic, not fp32 under another name
    assert float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want))) > 0.999


@pytest.mark.parametrize("name", ["MTT_musicnn", "MSD_musicnn"])
def test_mixed_ef_keeps_every_patch_within_the_tag_rule(name):
    """The rule for a default precision is 1e-2 on a track's tag probabilities; on the
    reference signals (synthetic music: piano, drums, bass, noise) mixed-ef keeps every
    single patch within it (measured 0.0023 MTT, 0.0036 MSD) and errs well under half
    what ``mixed`` does (0.0106, 0.0148)."""
    with np.load(REF) as z:
        signals = json.loads(str(z["signals"]))
    fp32 = load(name)
    p = np.concatenate([fp32.patches(getattr(synth, s["fn"])(sr=s["sr"], **s["kwargs"]), s["sr"]) for s in signals])
    ref = fp32.run_patches(p)["probs"]
    err = {prec: float(np.abs(load(name, precision=prec).run_patches(p)["probs"] - ref).max())
           for prec in ("mixed", "mixed-ef")}
    assert 0 < err["mixed-ef"] < 1e-2 and err["mixed-ef"] < err["mixed"] / 2, err


def test_native_bf16_can_be_forced_either_way(monkeypatch):
    from soundalike.models.musicnn import BF16_ENV, native_bf16

    monkeypatch.setenv(BF16_ENV, "emulated")
    assert native_bf16() is False
    monkeypatch.setenv(BF16_ENV, "Native")
    assert native_bf16() is True
    monkeypatch.setenv(BF16_ENV, "")
    import torch

    assert native_bf16() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    from soundalike.errors import ConfigError
    from soundalike.models.musicnn import LAYOUT_ENV, front_end_nchw

    monkeypatch.setenv(BF16_ENV, "yes")
    with pytest.raises(ConfigError, match="SOUNDALIKE_BF16='yes': use native or emulated"):
        native_bf16()
    monkeypatch.delenv(BF16_ENV)
    monkeypatch.setenv(LAYOUT_ENV, "NCHW ")
    assert front_end_nchw() is True
    monkeypatch.setenv(LAYOUT_ENV, "channels-last")
    with pytest.raises(ConfigError, match="use nchw or nhwc"):
        front_end_nchw()


def test_ingest_with_a_mistyped_override_says_so_and_makes_no_catalog(tmp_path):
    """The error comes before any work: no catalog file is left behind for the rerun."""
    import os
    import subprocess
    import sys

    (tmp_path / "music").mkdir()
    env = {**os.environ, "SOUNDALIKE_BF16": "bogus"}
    r = subprocess.run([sys.executable, "-m", "soundalike", "ingest", str(tmp_path / "music"),
                        "--catalog", str(tmp_path / "c.sqlite")], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "SOUNDALIKE_BF16='bogus': use native or emulated" in r.stderr
    assert not (tmp_path / "c.sqlite").exists()


def test_emulated_bf16_front_end_gives_the_native_kernels_numbers(patches, monkeypatch):
    """On a CPU without native bf16 (AVX2 only) mixed-ef's front end runs in fp32 on the
    same bf16 numbers, its outputs rounded to bf16 as the native kernels' are: each block
    within one bf16 step of the native result, every output a bf16 number before the
    fp32 shares are added, and the tag probabilities of whole patches within 1e-3."""
    import torch

    from soundalike.models.musicnn import BF16_ENV

    ef = load("MTT_musicnn", precision="mixed-ef")
    few = patches[:2]
    with torch.inference_mode():
        for b, x in zip(ef.net.frontend, _front_end_inputs(ef.net, few)):
            x = x * 2.0 + 3.0
            xb = (x - x.mean(dim=(1, 2), keepdim=True)).to(torch.bfloat16).contiguous().unsqueeze(3).permute(0, 3, 1, 2)
            hi, lo = b.bf16_filters(True)
            monkeypatch.setenv(BF16_ENV, "emulated")
            emu = b._emulated_bf16(xb, hi, lo, split=False)
            assert emu.dtype == torch.bfloat16
            ref = torch.nn.functional.conv2d(xb.double(), hi.double())
            ref = torch.nn.functional.max_pool2d(ref, (1, ref.shape[3]))
            step = ref.abs().clamp_min(1e-30) * 2.0 ** -7  # one bf16 step (8-bit mantissa)
            assert bool(((emu.double() - ref).abs() <= step).all())
            native = torch.nn.functional.conv2d(xb, hi)
            native = torch.nn.functional.max_pool2d(native, (1, native.shape[3]))
            assert bool(((emu.double() - native.double()).abs() <= 2 * step).all())
            split = b._emulated_bf16(xb, hi, lo, split=True)
            assert split.dtype == torch.float32
            exact = torch.nn.functional.conv2d(xb.double(), (hi.double() + lo.double()))
            exact = torch.nn.functional.max_pool2d(exact, (1, exact.shape[3]))
            assert float((split.double() - exact).abs().max()) < float((emu.double() - exact).abs().max()) + 1e-9
    from soundalike.models.musicnn import LAYOUT_ENV

    runs = {}
    for mode, layout in (("emulated", "nhwc"), ("emulated", "nchw"), ("native", "nhwc")):
        monkeypatch.setenv(BF16_ENV, mode)
        monkeypatch.setenv(LAYOUT_ENV, layout)
        runs[mode, layout] = ef.run_patches(few)
    native = runs["native", "nhwc"]
    for layout in ("nhwc", "nchw"):
        got = runs["emulated", layout]
        assert np.abs(got["probs"] - native["probs"]).max() < 1e-3
        assert np.abs(got["max_pool"] - native["max_pool"]).max() < 1e-3 * np.abs(native["max_pool"]).max()


def test_bf16_without_native_kernels_says_it_is_slow(monkeypatch):
    from soundalike.models.musicnn import BF16_ENV
    from soundalike.models.pretrained import SPECS, PretrainedModel

    monkeypatch.setenv(BF16_ENV, "emulated")
    with pytest.warns(UserWarning, match="no native bfloat16"):
        PretrainedModel(SPECS["MTT_musicnn"], precision="mixed")
    monkeypatch.setenv(BF16_ENV, "native")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PretrainedModel(SPECS["MTT_musicnn"], precision="mixed-ef")


def test_the_command_line_says_a_slow_precision_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    from soundalike.models.musicnn import BF16_ENV

    f = tmp_path / "a.wav"
    sf.write(f, synth.demo_track("piano-arpeggio", seed=1, duration_s=3.5, sr=16000), 16000)
    p = subprocess.run([sys.executable, "-m", "soundalike", "tag", str(f), "--model", "MTT_musicnn@mixed"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, BF16_ENV: "emulated"})
    assert p.returncode == 0, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert lines == ["warning: precision mixed: this CPU has no native bfloat16 kernels (no AVX-512), so it "
                     "runs many times slower than fp32 here; use fp32 or mixed-ef"], p.stderr
    assert "a.wav" in p.stdout
    # a mistyped override: one clear line, before any file is read
    p = subprocess.run([sys.executable, "-m", "soundalike", "tag", str(f)], capture_output=True, text=True,
                       timeout=300, env={**os.environ, BF16_ENV: "fast"})
    assert p.returncode == 1 and p.stderr.strip() == (
        "error: SOUNDALIKE_BF16='fast': use native or emulated (or leave it unset)"), p.stderr
