"""How long `soundalike index adapt` takes on a large catalog, and what it adds to the file.

Builds a synthetic catalog of N tracks (default 10,000) holding ``musicnn-fusion``-shaped
vectors (1906-d: four blocks, clustered like real catalogs: a few hundred "albums"), runs
:func:`soundalike.search.adapt.adapt_catalog` on it and prints the fit and store times and
the catalog's size before and after, next to the targets (issue 12: <= 10 minutes on 2
cores for 10k tracks; the catalog at most ~2x larger).  It also prints the size of the
same catalog with today's 200-d MTT_musicnn vectors, for scale.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_adapt.py [--tracks 10000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build(path: Path, *, n: int, dims: tuple[int, ...], name: str, model_id: str, seed: int = 0,
          segments: int = 0) -> float:
    """The synthetic catalog; with ``segments``, each track also gets that many segment vectors
    (its blocks plus more noise), stored as ingest stores them before any adaptation."""
    from soundalike.catalog.store import Catalog, Tag
    from soundalike.models.fusion import fuse
    from soundalike.ingest.plan import store_track_segments

    rng = np.random.default_rng(seed)
    n_albums = max(1, n // 30)
    centres = [rng.normal(size=(n_albums, d)).astype(np.float32) for d in dims]
    album = rng.integers(0, n_albums, n)
    t0 = time.perf_counter()
    with Catalog.open(path) as cat:
        cat.register_model(model_id=model_id, name=name, dim=int(sum(dims)))
        for s in range(0, n, 1000):
            with cat.transaction():
                for i in range(s, min(n, s + 1000)):
                    blocks = [c[album[i]] + 0.7 * rng.normal(size=c.shape[1]).astype(np.float32) for c in centres]
                    tid = cat.upsert_track(path=f"/music/album{album[i]:04d}/track{i:06d}.mp3",
                                           content_hash=f"{i:032x}", size=4_000_000, mtime=0.0,
                                           duration_s=180.0, sr=44100, channels=2, format="mp3",
                                           title=f"Track {i}", artist=f"Artist {album[i]}")
                    cat.set_tags(tid, [Tag(f"tag{j}", "tag", "model", 0.5, model_id)
                                       for j in rng.choice(50, 5, replace=False)], source="model",
                                 model_id=model_id)
                    cat.put_analysis(tid, model_id, fuse(blocks) if len(dims) > 1 else blocks[0],
                                     {f"tag{j}": 0.1 for j in range(50)})
                    if segments:
                        seg = fuse([b[None, :] + 0.5 * rng.normal(size=(segments, len(b))).astype(np.float32)
                                    for b in blocks])
                        store_track_segments(cat, tid, model_id=model_id,
                                             segments=(np.arange(segments, dtype=np.float32) * 18.0, seg))
    return time.perf_counter() - t0


def size(path: Path) -> int:
    """Bytes of live pages once the WAL is folded back (what the catalog really takes)."""
    import sqlite3

    conn = sqlite3.connect(str(path))  # measurement only: the catalog is closed here
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages, free, page = (conn.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_count", "freelist_count", "page_size"))
        return (pages - free) * page
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tracks", type=int, default=10_000)
    ap.add_argument("--segments", type=int, default=10, help="segment vectors per track (0: none)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from soundalike.catalog.store import Catalog
    from soundalike.models.fusion import FUSION_NAME, block_dims
    from soundalike.search.adapt import adapt_catalog

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as d:
        fused = Path(d) / "fusion.sqlite"
        segd = Path(d) / "segments.sqlite"
        old = Path(d) / "mtt.sqlite"
        build_s = build(fused, n=args.tracks, dims=block_dims(), name=FUSION_NAME, model_id="musicnn-fusion-bench")
        build(old, n=args.tracks, dims=(200,), name="MTT_musicnn", model_id="MTT_musicnn-bench")
        before, mtt = size(fused), size(old)
        t0 = time.perf_counter()
        with Catalog.open(fused) as cat:
            rep = adapt_catalog(cat)
        total_s = time.perf_counter() - t0
        after = size(fused)
        seg_rep, seg_before, seg_after, seg_s = None, None, None, None
        if args.segments:
            # the same catalog, ingested with segment vectors (base model, before any adaptation)
            build(segd, n=args.tracks, dims=block_dims(), name=FUSION_NAME, model_id="musicnn-fusion-bench",
                  segments=args.segments)
            seg_before = size(segd)
            t0 = time.perf_counter()
            with Catalog.open(segd) as cat:
                seg_rep = adapt_catalog(cat)
            seg_s = time.perf_counter() - t0
            seg_after = size(segd)
    row = {"tracks": args.tracks, "build_s": round(build_s, 1), "adapt_s": round(total_s, 2),
           "fit_s": rep.fit_s, "write_s": rep.write_s, "dim": rep.dim, "bytes_mtt_200d": mtt,
           "bytes_before": before, "bytes_after": after, "growth": round(after / before, 3),
           "segments_per_track": args.segments, "bytes_segments_before_adapt": seg_before,
           "bytes_segments_after_adapt": seg_after, "adapt_s_with_segments": seg_s and round(seg_s, 2),
           "load": open("/proc/loadavg").read().split()[0]}
    print(f"{args.tracks} tracks of {FUSION_NAME} ({sum(block_dims())}-d): adapt {total_s:.1f} s "
          f"(fit {rep.fit_s:.1f} s, store {rep.write_s:.1f} s) -> {rep.dim}-d;  target <= 600 s on 2 cores")
    print(f"catalog {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB after adapt (x{after / before:.2f}; target <= ~2x); "
          f"the same catalog with 200-d MTT_musicnn vectors: {mtt / 1e6:.1f} MB;  load {row['load']}")
    if seg_rep is not None:
        print(f"with {args.segments} segment vectors per track: {seg_before / 1e6:.1f} MB before adapt "
              f"(base-model segments, float16), {seg_after / 1e6:.1f} MB after (segments in the adapted "
              f"space, base ones dropped; x{seg_after / after:.2f} of the adapted catalog without segments, "
              f"x{seg_after / before:.2f} of the catalog before adapt); adapt {seg_s:.1f} s, "
              f"{seg_rep.segment_tracks} tracks' segments mapped")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
