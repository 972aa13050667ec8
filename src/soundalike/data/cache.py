"""On-disk feature cache keyed by file content hash + feature configuration.

``<cache root>/features/<config key>/<hash[:2]>/<hash>.npy``.  The file's *content*
names the entry (renaming or touching a file keeps its features; editing it does
not), and the config key names how the features were made (sample rate, mel
parameters, backbone model id...), so a second training run skips decoding entirely
and a changed config never reads stale arrays.  Writes go to a temporary file and are
renamed into place, so a killed process never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def content_hash(path: str | Path) -> str:
    """BLAKE2b-128 hex digest of a file's bytes (memoised per path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    h = _HASH_MEMO.get(key)
    if h is None:
        d = hashlib.blake2b(digest_size=16)
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                d.update(chunk)
        h = _HASH_MEMO[key] = d.hexdigest()
    return h


class FeatureCache:
    """A folder of ``.npy`` arrays, one per (file content, feature config).

    Parameters
    ----------
    root : cache folder (default :func:`soundalike.paths.cache_dir`)
    enabled : ``False`` turns every lookup into a miss and every store into a no-op
    """

    def __init__(self, root: str | Path | None = None, *, enabled: bool = True):
        if root is None:
            from soundalike.paths import cache_dir

            root = cache_dir()
        self.root = Path(root).expanduser() / "features"
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def _file(self, config_key: str, digest: str) -> Path:
        return self.root / config_key / digest[:2] / f"{digest}.npy"

    def get(self, config_key: str, digest: str) -> np.ndarray | None:
        """The cached array, or ``None`` (a corrupt entry counts as a miss and is removed)."""
        if not self.enabled:
            return None
        f = self._file(config_key, digest)
        if not f.exists():
            return None
        try:
            return np.load(f, allow_pickle=False)
        except (OSError, ValueError):
            f.unlink(missing_ok=True)
            return None

    def put(self, config_key: str, digest: str, array: np.ndarray) -> None:
        if not self.enabled:
            return
        f = self._file(config_key, digest)
        f.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=f.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
            os.replace(tmp, f)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_or_compute(self, path: str | Path, config_key: str,
                       compute: Callable[[Path], np.ndarray]) -> np.ndarray:
        """Cached features of ``path`` under ``config_key``, computing and storing them on a miss.

        Errors raised by ``compute`` (e.g. :class:`~soundalike.errors.AudioDecodeError`)
        propagate and nothing is stored.
        """
        digest = content_hash(path)
        arr = self.get(config_key, digest)
        if arr is not None:
            self.hits += 1
            return arr
        self.misses += 1
        arr = compute(Path(path))
        self.put(config_key, digest, arr)
        return arr
