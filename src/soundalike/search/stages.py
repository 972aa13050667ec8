"""Per-request stage timings: where the slowest requests spend their time.

Off unless a caller starts a record on its thread (``soundalike serve`` does for
``/api/similar`` when ``SOUNDALIKE_TIMINGS`` names a file; see :mod:`soundalike.web.app`);
while off, :func:`mark` costs one thread-local lookup.

>>> rec = start()
>>> mark("filter"); mark("search")
>>> [name for name, _ in stop()]
['start', 'filter', 'search']
"""

from __future__ import annotations

import threading
import time

_local = threading.local()


def start() -> list[tuple[str, float]]:
    """Begin a record on this thread: ``[(stage, time.perf_counter() seconds), ...]``."""
    rec = [("start", time.perf_counter())]
    _local.rec = rec
    return rec


def mark(name: str) -> None:
    """Note that stage ``name`` ended now (nothing when no record runs on this thread)."""
    rec = getattr(_local, "rec", None)
    if rec is not None:
        rec.append((name, time.perf_counter()))


def stop() -> list[tuple[str, float]] | None:
    """End this thread's record and return it (``None``: none was running)."""
    rec = getattr(_local, "rec", None)
    _local.rec = None
    return rec
