"""The feature cache: keyed by content and config, atomic, survives renames."""

from __future__ import annotations

import numpy as np

from soundalike.data.cache import FeatureCache, content_hash


def test_hit_miss_and_keys(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"hello")
    cache = FeatureCache(tmp_path / "c")
    calls = []

    def compute(p):
        calls.append(p)
        return np.arange(4, dtype=np.float32) + len(calls)

    a = cache.get_or_compute(f, "cfgA", compute)
    b = cache.get_or_compute(f, "cfgA", compute)
    np.testing.assert_array_equal(a, b)
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    c = cache.get_or_compute(f, "cfgB", compute)  # another config: recomputed
    assert len(calls) == 2 and c[0] == 2
    # same content under another name: a hit
    g = tmp_path / "renamed.bin"
    g.write_bytes(b"hello")
    assert content_hash(g) == content_hash(f)
    np.testing.assert_array_equal(cache.get_or_compute(g, "cfgA", compute), a)
    assert len(calls) == 2
    # changed content: a miss
    f.write_bytes(b"hello, world")
    cache.get_or_compute(f, "cfgA", compute)
    assert len(calls) == 3
    assert not list((tmp_path / "c").rglob("*.tmp"))


def test_corrupt_entry_is_a_miss_and_disabled_cache(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"x")
    cache = FeatureCache(tmp_path / "c")
    cache.put("k", content_hash(f), np.ones(3))
    entry = next((tmp_path / "c").rglob("*.npy"))
    entry.write_bytes(b"garbage")
    assert cache.get("k", content_hash(f)) is None and not entry.exists()
    off = FeatureCache(tmp_path / "d", enabled=False)
    off.get_or_compute(f, "k", lambda p: np.zeros(2))
    assert not (tmp_path / "d").exists()
