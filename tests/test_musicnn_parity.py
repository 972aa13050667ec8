"""The PyTorch ports reproduce the original TensorFlow musicnn/vgg models.

Reference outputs were made once with the original code on TensorFlow (see
tests/data/musicnn_reference/README.md); here the same synthetic signals are
regenerated, turned into patches by our own front end, and run through the port.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from soundalike.audio import synth
from soundalike.models.pretrained import SPECS, load

REF = Path(__file__).parent / "data" / "musicnn_reference" / "reference.npz"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REF) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def patches(reference) -> np.ndarray:
    """Rebuild the reference patches from the recipe stored in the file."""
    model = load("MTT_musicnn")
    out, owners = [], []
    for s in json.loads(str(reference["signals"])):
        y = getattr(synth, s["fn"])(sr=s["sr"], **s["kwargs"])
        p = model.patches(y, s["sr"])
        out.append(p)
        owners += [s["name"]] * len(p)
    assert owners == list(reference["owners"])
    return np.concatenate(out)


def test_reference_inputs_are_rebuilt_and_finite(reference, patches):
    assert np.isfinite(patches).all()
    np.testing.assert_allclose(patches.mean(axis=2), reference["patch_freq_profile"], atol=1e-4)
    np.testing.assert_allclose(patches.max(axis=(1, 2)), reference["patch_max"], atol=1e-4)
    # loud signals are in there: mel power far above float16's 65504 / 10000
    assert (reference["max_mel_power"] > 6.55).sum() >= 5


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("name", list(SPECS))
def test_port_matches_tensorflow(name, layout, reference, patches, monkeypatch):
    """Both layouts of musicnn's front-end convolutions (channels-last on AVX-512, NCHW on
    an AVX2-only CPU: ``musicnn.front_end_nchw``) give TensorFlow's numbers."""
    from soundalike.models.musicnn import LAYOUT_ENV, front_end_nchw

    monkeypatch.setenv(LAYOUT_ENV, layout)
    assert front_end_nchw() is (layout == "nchw")
    out = load(name).run_patches(patches, batch_size=8)
    np.testing.assert_allclose(out["probs"], reference[f"{name}/probs"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(out["penultimate"], reference[f"{name}/penultimate"], rtol=0, atol=1e-3)
    if f"{name}/max_pool" in reference:
        ref = reference[f"{name}/max_pool"]
        np.testing.assert_allclose(out["max_pool"], ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    # the reference is not degenerate: patches of different signals get different tags
    assert np.ptp(reference[f"{name}/probs"], axis=0).max() > 0.1


@pytest.mark.parametrize("name", ["MTT_vgg", "MSD_vgg"])
def test_vgg_block_summaries_agree_with_the_ported_layers(name, reference, patches):
    """The VGG port's extra per-patch summaries (the similarity bench's VGG layers) are the
    blocks the TF-matched penultimate is made of: block 5's map is the penultimate's two
    time steps of 128 channels, and block 4 per band averages to block 4 overall."""
    import torch

    net = load(name).net
    with torch.inference_mode():
        plain = net(torch.from_numpy(patches))
        assert plain.keys() == {"logits", "penultimate"}  # off by default: inference pays nothing
        net.with_extras = True
        try:
            r = {k: v.numpy() for k, v in net(torch.from_numpy(patches)).items()}
        finally:
            net.with_extras = False
    np.testing.assert_array_equal(r["penultimate"], plain["penultimate"].numpy())
    assert set(net.extra_dims) <= r.keys()
    for k, d in net.extra_dims.items():
        assert r[k].shape == (len(patches), d) and np.isfinite(r[k]).all()
    np.testing.assert_allclose(r["penultimate"], reference[f"{name}/penultimate"], rtol=0, atol=1e-3)
    halves = r["penultimate"].reshape(len(patches), 2, 128)
    np.testing.assert_allclose(r["block5_max"], halves.max(axis=1), rtol=0, atol=1e-5)
    np.testing.assert_allclose(r["block5_mean"], halves.mean(axis=1), rtol=0, atol=1e-5)
    bands = r["block4_time_mean"].reshape(len(patches), 6, 128)
    np.testing.assert_allclose(bands.mean(axis=1), r["block4_mean"], rtol=0, atol=1e-4)
    assert (r["block4_max"] >= r["block4_mean"] - 1e-5).all() and (r["block3_max"] >= r["block3_mean"] - 1e-5).all()
    # the summaries tell the reference's signals apart
    assert np.ptp(r["block4_mean"], axis=0).max() > 0.1
