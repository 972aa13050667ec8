"""Read TensorFlow-1 checkpoint bundles with nothing but Python and NumPy.

A TF1 ``Saver`` checkpoint named ``PREFIX`` is two files:

``PREFIX.index``
    An SSTable (the LevelDB table format): data blocks of prefix-compressed
    key/value entries, an index block pointing at them, and a 48-byte footer.
    The empty key holds a ``BundleHeaderProto``; every other key is a variable
    name whose value is a ``BundleEntryProto`` (dtype, shape, shard, offset, size).
``PREFIX.data-00000-of-00001``
    The raw little-endian tensor bytes, at the offsets the index gives.

The musicnn wheel saves its bundles with an empty prefix inside each model folder,
so the files are the dot-files ``.index`` and ``.data-00000-of-00001``; its
``checkpoint`` text file points at absolute paths on the author's machine and is
ignored here.

Only the subset of protobuf wire format these two messages use is decoded.  Optimizer
state (``.../Adam``, ``.../Adam_1``, ``beta1_power``, momentum slots) is not a weight
and is left out by :func:`read_bundle` unless asked for.

Examples
--------
>>> from soundalike.models.tfbundle import musicnn_checkpoint_dir, read_bundle
>>> weights = read_bundle(musicnn_checkpoint_dir("MTT_musicnn"))   # doctest: +SKIP
>>> weights["dense/kernel"].shape                                   # doctest: +SKIP
(1258, 200)
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundalike.errors import CheckpointError

#: LevelDB / TF table magic number, last 8 bytes of every SSTable.
_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
#: Each block is followed by a 1-byte compression type and a 4-byte CRC.
_BLOCK_TRAILER_LEN = 5

#: TensorFlow ``DataType`` enum -> NumPy dtype (little-endian), for the types a
#: checkpoint of weights can hold.
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),   # DT_FLOAT
    2: np.dtype("<f8"),   # DT_DOUBLE
    3: np.dtype("<i4"),   # DT_INT32
    4: np.dtype("u1"),    # DT_UINT8
    5: np.dtype("<i2"),   # DT_INT16
    6: np.dtype("i1"),    # DT_INT8
    9: np.dtype("<i8"),   # DT_INT64
    10: np.dtype("?"),    # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}

#: Variable names that are optimizer state, not model weights.
_SLOT_RE = re.compile(
    r"(/(Adam|Adam_\d+|Momentum|RMSProp|RMSProp_\d+|Adagrad|Adadelta|Adadelta_\d+|Ftrl|Ftrl_\d+)$)"
    r"|(^|/)(beta1_power|beta2_power|global_step)$"
)


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives in the data file (one ``BundleEntryProto``).

    Attributes
    ----------
    name : variable name, e.g. ``"conv2d/kernel"``
    dtype : NumPy dtype of the stored values
    shape : tensor shape (TensorFlow layout, e.g. conv kernels are ``(h, w, in, out)``)
    shard_id : which ``.data-NNNNN-of-NNNNN`` file holds it
    offset, size : byte range in that file
    """

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int


def is_optimizer_slot(name: str) -> bool:
    """Whether ``name`` is optimizer state (Adam moments, beta powers, step counter)."""
    return bool(_SLOT_RE.search(name))


# --------------------------------------------------------------------------- protobuf wire format


def _varint(buf: bytes | memoryview, pos: int, where: str) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError(f"{where}: truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointError(f"{where}: varint too long")


def _fields(buf: bytes, where: str):
    """Yield ``(field_number, wire_type, value)``; value is int or bytes."""
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = _varint(buf, pos, where)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, where)
        elif wire == 1:
            if pos + 8 > n:
                raise CheckpointError(f"{where}: truncated fixed64")
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos, where)
            if pos + length > n:
                raise CheckpointError(f"{where}: truncated length-delimited field")
            value = bytes(buf[pos : pos + length])
            pos += length
        elif wire == 5:
            if pos + 4 > n:
                raise CheckpointError(f"{where}: truncated fixed32")
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise CheckpointError(f"{where}: unsupported protobuf wire type {wire}")
        yield field, wire, value


def _parse_shape(buf: bytes, where: str) -> tuple[int, ...]:
    dims: list[int] = []
    for field, wire, value in _fields(buf, where):
        if field == 2 and wire == 2:  # TensorShapeProto.dim
            size = 0
            for f2, w2, v2 in _fields(value, where):
                if f2 == 1 and w2 == 0:
                    size = v2 if v2 < 1 << 63 else v2 - (1 << 64)
            dims.append(size)
        elif field == 3 and wire == 0 and value:  # unknown_rank
            raise CheckpointError(f"{where}: tensor of unknown rank")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes, where: str) -> TensorEntry:
    dtype_code = 0
    shape: tuple[int, ...] = ()
    shard_id = offset = size = 0
    sliced = False
    for field, wire, value in _fields(buf, where):
        if field == 1 and wire == 0:
            dtype_code = value
        elif field == 2 and wire == 2:
            shape = _parse_shape(value, where)
        elif field == 3 and wire == 0:
            shard_id = value
        elif field == 4 and wire == 0:
            offset = value
        elif field == 5 and wire == 0:
            size = value
        elif field == 7:
            sliced = True
    if sliced:
        raise CheckpointError(f"{where}: tensor {name!r} is stored in slices (partitioned variables are not supported)")
    if dtype_code not in _DTYPES:
        raise CheckpointError(f"{where}: tensor {name!r} has unsupported dtype code {dtype_code}")
    if any(d < 0 for d in shape):
        raise CheckpointError(f"{where}: tensor {name!r} has a negative dimension {shape}")
    return TensorEntry(name, _DTYPES[dtype_code], shape, shard_id, offset, size)


# --------------------------------------------------------------------------- SSTable


def _block_entries(data: bytes, offset: int, size: int, where: str):
    """Yield ``(key, value)`` of one uncompressed table block."""
    if offset + size + _BLOCK_TRAILER_LEN > len(data) or size < 4:
        raise CheckpointError(f"{where}: block at {offset}+{size} lies outside the file")
    compression = data[offset + size]
    if compression != 0:
        raise CheckpointError(f"{where}: compressed table blocks (type {compression}) are not supported")
    block = memoryview(data)[offset : offset + size]
    (n_restarts,) = struct.unpack_from("<I", block, size - 4)
    end = size - 4 - 4 * n_restarts
    if end < 0:
        raise CheckpointError(f"{where}: corrupt block restart array")
    pos = 0
    key = b""
    while pos < end:
        shared, pos = _varint(block, pos, where)
        non_shared, pos = _varint(block, pos, where)
        vlen, pos = _varint(block, pos, where)
        if shared > len(key) or pos + non_shared + vlen > end:
            raise CheckpointError(f"{where}: corrupt block entry")
        key = key[:shared] + bytes(block[pos : pos + non_shared])
        pos += non_shared
        yield key, bytes(block[pos : pos + vlen])
        pos += vlen


def read_index(index_path: str | Path) -> dict[str, TensorEntry]:
    """Parse a bundle's ``.index`` file: tensor name -> :class:`TensorEntry`.

    Raises
    ------
    CheckpointError
        Missing or unreadable file, bad magic number, corrupt blocks or records.
    """
    p = Path(index_path)
    where = str(p)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{where}: checkpoint index file not found") from None
    except OSError as exc:
        raise CheckpointError(f"{where}: cannot read checkpoint index ({exc.strerror or exc})") from None
    if len(data) < _FOOTER_LEN:
        raise CheckpointError(f"{where}: too short to be a checkpoint index ({len(data)} bytes)")
    (magic,) = struct.unpack_from("<Q", data, len(data) - 8)
    if magic != _TABLE_MAGIC:
        raise CheckpointError(f"{where}: not a TensorFlow checkpoint index (bad table magic)")
    footer = data[len(data) - _FOOTER_LEN :]
    _, pos = _varint(footer, 0, where)  # metaindex offset
    _, pos = _varint(footer, pos, where)  # metaindex size
    idx_off, pos = _varint(footer, pos, where)
    idx_size, pos = _varint(footer, pos, where)

    entries: dict[str, TensorEntry] = {}
    header_seen = False
    for _, handle in _block_entries(data, idx_off, idx_size, where):
        b_off, hp = _varint(handle, 0, where)
        b_size, _ = _varint(handle, hp, where)
        for key, value in _block_entries(data, b_off, b_size, where):
            if key == b"":
                header_seen = True
                _check_header(value, where)
                continue
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise CheckpointError(f"{where}: tensor name is not UTF-8") from None
            entries[name] = _parse_entry(name, value, where)
    if not header_seen:
        raise CheckpointError(f"{where}: no bundle header record")
    return entries


def _check_header(buf: bytes, where: str) -> None:
    for field, wire, value in _fields(buf, where):
        if field == 2 and wire == 0 and value != 0:  # endianness: 0 = LITTLE
            raise CheckpointError(f"{where}: big-endian checkpoints are not supported")


# --------------------------------------------------------------------------- bundle


def _bundle_paths(prefix: str | Path) -> tuple[Path, str]:
    """Index path and data-file stem for a prefix or a folder holding ``.index``."""
    p = Path(prefix)
    if p.is_dir():
        return p / ".index", str(p) + "/"
    s = str(p)
    if s.endswith(".index"):
        s = s[: -len(".index")]
    return Path(s + ".index"), s


def read_bundle(prefix: str | Path, *, include_slots: bool = False) -> dict[str, np.ndarray]:
    """Read every tensor of a TF1 checkpoint bundle.

    Parameters
    ----------
    prefix : the checkpoint prefix (``model.ckpt`` for ``model.ckpt.index``), the
        ``.index`` path itself, or a folder whose bundle has an empty prefix (the
        dot-files ``.index`` and ``.data-00000-of-00001``, as in the musicnn wheel)
    include_slots : also return optimizer state (Adam moments etc.)

    Returns
    -------
    dict
        name -> read-only NumPy array in TensorFlow layout and stored dtype.

    Raises
    ------
    CheckpointError
        A file is missing, truncated or malformed, or a tensor's byte size does not
        match its dtype and shape.
    """
    index_path, stem = _bundle_paths(prefix)
    entries = read_index(index_path)
    n_shards = max((e.shard_id for e in entries.values()), default=0) + 1
    shards: dict[int, bytes] = {}
    out: dict[str, np.ndarray] = {}
    for name, e in sorted(entries.items()):
        if not include_slots and is_optimizer_slot(name):
            continue
        if e.shard_id not in shards:
            data_path = Path(f"{stem}.data-{e.shard_id:05d}-of-{n_shards:05d}")
            try:
                shards[e.shard_id] = data_path.read_bytes()
            except FileNotFoundError:
                raise CheckpointError(f"{data_path}: checkpoint data file not found") from None
            except OSError as exc:
                raise CheckpointError(f"{data_path}: cannot read checkpoint data ({exc.strerror or exc})") from None
        data = shards[e.shard_id]
        count = int(np.prod(e.shape, dtype=np.int64))
        if e.size != count * e.dtype.itemsize:
            raise CheckpointError(
                f"{index_path}: tensor {name!r} is {e.size} bytes but {e.shape} x {e.dtype} needs "
                f"{count * e.dtype.itemsize}"
            )
        if e.offset + e.size > len(data):
            raise CheckpointError(
                f"{stem}.data-{e.shard_id:05d}-of-{n_shards:05d}: truncated "
                f"(tensor {name!r} needs bytes {e.offset}..{e.offset + e.size}, file has {len(data)})"
            )
        arr = np.frombuffer(data, dtype=e.dtype, count=count, offset=e.offset).reshape(e.shape)
        out[name] = arr
    return out


# --------------------------------------------------------------------------- the musicnn wheel


def musicnn_package_dir() -> Path:
    """The installed ``musicnn`` package folder, found without importing musicnn.

    Raises
    ------
    CheckpointError
        The musicnn wheel is not installed.
    """
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("musicnn")
    except importlib.metadata.PackageNotFoundError:
        raise CheckpointError(
            "the musicnn wheel is not installed: run `pip install --no-deps musicnn==0.1.0` "
            "(it ships the pretrained weights; its code is never imported)"
        ) from None
    pkg = Path(str(dist.locate_file("musicnn")))
    if not pkg.is_dir():
        raise CheckpointError(f"{pkg}: musicnn is registered as installed but its folder is missing")
    return pkg


def musicnn_checkpoint_dir(name: str) -> Path:
    """Folder of one pretrained model in the musicnn wheel, e.g. ``"MTT_musicnn"``.

    Raises
    ------
    CheckpointError
        Wheel not installed, or no such model folder with a ``.index`` file.
    """
    d = musicnn_package_dir() / name
    if not (d / ".index").is_file():
        raise CheckpointError(f"{d}: no checkpoint bundle (.index) for model {name!r} in the musicnn wheel")
    return d
