"""TF1 checkpoint bundle reader: the real musicnn wheel files, hand-built bundles, damage."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from soundalike.errors import CheckpointError
from soundalike.models.tfbundle import (
    is_optimizer_slot,
    musicnn_checkpoint_dir,
    musicnn_package_dir,
    read_bundle,
    read_index,
)

# ----------------------------------------------------------------------------- a tiny bundle writer
# Written from the format description (LevelDB table + BundleEntryProto), independent of the reader.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_varint(num: int, v: int) -> bytes:
    return _varint(num << 3) + _varint(v)


def _field_bytes(num: int, b: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(b)) + b


_DT = {np.dtype("float32"): 1, np.dtype("int32"): 3, np.dtype("float16"): 19, np.dtype("int64"): 9}


def _entry(arr: np.ndarray, offset: int) -> bytes:
    shape = b"".join(_field_bytes(2, _field_varint(1, d)) for d in arr.shape)
    return (_field_varint(1, _DT[arr.dtype]) + _field_bytes(2, shape) + _field_varint(4, offset)
            + _field_varint(5, arr.nbytes))


def _block(items: list[tuple[bytes, bytes]], restart_every: int = 2) -> bytes:
    body = bytearray()
    restarts = []
    prev = b""
    for i, (k, v) in enumerate(items):
        if i % restart_every == 0:
            restarts.append(len(body))
            shared = 0
        else:
            shared = 0
            while shared < min(len(prev), len(k)) and prev[shared] == k[shared]:
                shared += 1
        body += _varint(shared) + _varint(len(k) - shared) + _varint(len(v)) + k[shared:] + v
        prev = k
    for r in restarts:
        body += struct.pack("<I", r)
    body += struct.pack("<I", len(restarts))
    return bytes(body)


def write_bundle(prefix: Path | str, tensors: dict[str, np.ndarray]) -> None:
    """Write ``prefix.index`` + ``prefix.data-00000-of-00001`` (two data blocks)."""
    data = bytearray()
    items = [(b"", _field_varint(1, 1))]  # header: num_shards = 1
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        items.append((name.encode(), _entry(a, len(data))))
        data += a.astype(a.dtype.newbyteorder("<")).tobytes()
    half = max(1, len(items) // 2)
    out = bytearray()
    index_items = []
    for chunk in (items[:half], items[half:]):
        if not chunk:
            continue
        blk = _block(chunk)
        handle = _varint(len(out)) + _varint(len(blk))
        out += blk + b"\x00" + b"\x00\x00\x00\x00"  # no compression, CRC unchecked
        index_items.append((chunk[-1][0], handle))
    meta = _block([])
    meta_handle = _varint(len(out)) + _varint(len(meta))
    out += meta + b"\x00" * 5
    idx = _block(index_items)
    idx_handle = _varint(len(out)) + _varint(len(idx))
    out += idx + b"\x00" * 5
    footer = meta_handle + idx_handle
    footer += b"\x00" * (40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57)
    out += footer
    Path(f"{prefix}.index").write_bytes(bytes(out))
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))


@pytest.fixture
def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv/kernel": rng.standard_normal((3, 5, 1, 4)).astype(np.float32),
        "conv/kernel/Adam": rng.standard_normal((3, 5, 1, 4)).astype(np.float32),
        "conv/kernel/Adam_1": rng.standard_normal((3, 5, 1, 4)).astype(np.float32),
        "conv/bias": rng.standard_normal(4).astype(np.float32),
        "beta1_power": np.array(0.9, np.float32),
        "global_step": np.array(1234, np.int64),
        "half": rng.standard_normal((2, 3)).astype(np.float16),
        "counts": np.arange(6, dtype=np.int32).reshape(3, 2),
    }


def test_round_trip_of_a_hand_built_bundle(tmp_path, tensors):
    write_bundle(tmp_path / "model.ckpt", tensors)
    got = read_bundle(tmp_path / "model.ckpt")
    assert set(got) == {"conv/kernel", "conv/bias", "half", "counts"}  # slots and step left out
    for k, v in got.items():
        assert v.dtype == tensors[k].dtype and v.shape == tensors[k].shape
        np.testing.assert_array_equal(v, tensors[k])
    with_slots = read_bundle(tmp_path / "model.ckpt.index", include_slots=True)
    assert set(with_slots) == set(tensors)
    np.testing.assert_array_equal(with_slots["conv/kernel/Adam_1"], tensors["conv/kernel/Adam_1"])


def test_dot_file_bundle_in_a_folder(tmp_path, tensors):
    d = tmp_path / "m"
    d.mkdir()
    write_bundle(f"{d}/", tensors)  # ".index" and ".data-00000-of-00001", as in the musicnn wheel
    assert (d / ".index").is_file()
    np.testing.assert_array_equal(read_bundle(d)["conv/bias"], tensors["conv/bias"])


@pytest.mark.parametrize("name,slot", [
    ("dense/kernel/Adam", True), ("dense/kernel/Adam_1", True), ("beta2_power", True),
    ("x/Momentum", True), ("dense/kernel", False), ("batch_normalization/beta", False),
    ("Adam_dense/kernel", False),
])
def test_optimizer_slot_names(name, slot):
    assert is_optimizer_slot(name) is slot


def test_real_musicnn_bundle_weights():
    d = musicnn_checkpoint_dir("MTT_musicnn")
    assert d.parent == musicnn_package_dir()
    entries = read_index(d / ".index")
    w = read_bundle(d)
    slots = [k for k in entries if is_optimizer_slot(k)]
    assert slots and not set(slots) & set(w)
    assert set(w) == set(entries) - set(slots)
    assert w["conv2d/kernel"].shape == (7, 38, 1, 204)  # timbral 7 x int(0.4*96)
    assert w["dense_1/kernel"].shape == (200, 50)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in w.values())
    # the moving variances of a trained net are positive
    assert all((v > 0).all() for k, v in w.items() if k.endswith("moving_variance"))


@pytest.mark.parametrize("name", ["MTT_vgg", "MSD_musicnn", "MSD_vgg"])
def test_other_wheel_bundles_read(name):
    w = read_bundle(musicnn_checkpoint_dir(name))
    assert w["dense/bias"].dtype == np.float32 and len(w) > 20


def test_unknown_model_folder():
    with pytest.raises(CheckpointError, match="no checkpoint bundle"):
        musicnn_checkpoint_dir("MTT_nonexistent")


def test_missing_files(tmp_path, tensors):
    with pytest.raises(CheckpointError, match="not found"):
        read_bundle(tmp_path / "nothing.ckpt")
    write_bundle(tmp_path / "m.ckpt", tensors)
    (tmp_path / "m.ckpt.data-00000-of-00001").unlink()
    with pytest.raises(CheckpointError, match="data file not found"):
        read_bundle(tmp_path / "m.ckpt")


def test_malformed_index(tmp_path, tensors):
    write_bundle(tmp_path / "m.ckpt", tensors)
    idx = tmp_path / "m.ckpt.index"
    good = idx.read_bytes()
    idx.write_bytes(b"")
    with pytest.raises(CheckpointError, match="too short"):
        read_bundle(tmp_path / "m.ckpt")
    idx.write_bytes(good[:-3])
    with pytest.raises(CheckpointError, match="magic"):
        read_bundle(tmp_path / "m.ckpt")
    idx.write_bytes(b"\xff" * 20 + good[20:])  # blocks overwritten with garbage
    with pytest.raises(CheckpointError):
        read_bundle(tmp_path / "m.ckpt")
    idx.write_bytes(b"not a checkpoint at all, just some text that is long enough to have a footer")
    with pytest.raises(CheckpointError, match="m.ckpt.index"):
        read_bundle(tmp_path / "m.ckpt")


def test_truncated_data_file(tmp_path):
    d = tmp_path / "MTT_musicnn"
    shutil.copytree(musicnn_checkpoint_dir("MTT_musicnn"), d)
    data = d / ".data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_bundle(d)
