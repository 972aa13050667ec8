"""What the diffusion re-rank costs a ``similar()`` query: the same queries with it on and
off, interleaved, on a real SQLite catalog of clustered random vectors.

    .venv/bin/python benchmarks/bench_rerank.py --tracks 5000 --dim 320

Prints p50/p90 ms per query each way and the difference per re-ranked candidate
(:data:`soundalike.search.rerank.POOL`).  Timings are noisy on a shared machine: read the
two columns of one run side by side.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tracks", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=320)
    ap.add_argument("--queries", type=int, default=150)
    args = ap.parse_args(argv)

    import soundalike
    from soundalike.catalog.store import Catalog
    from soundalike.search import rerank

    rng = np.random.default_rng(0)
    n, d = args.tracks, args.dim
    centres = rng.normal(size=(max(2, n // 100), d))
    X = (centres[rng.integers(0, len(centres), n)] + 0.7 * rng.normal(size=(n, d))).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        cat = Catalog.open(Path(tmp) / "bench.sqlite")
        cat.register_model(model_id="bench-1", name="bench", dim=d)
        with cat.transaction():
            for i, x in enumerate(X):
                tid = cat.upsert_track(path=f"/music/{i}.ogg", content_hash=str(i), size=1, mtime=0.0,
                                       duration_s=100.0 + 0.37 * i)
                cat.put_analysis(tid, "bench-1", x)
        qs = [int(i) for i in rng.choice(np.arange(1, n + 1), min(args.queries, n), replace=False)]
        for flag in (True, False):  # warm the index cache both ways
            soundalike.similar(qs[0], k=10, catalog=cat, rerank=flag)
        on, off = [], []
        for q in qs:
            for flag, times in ((True, on), (False, off)):
                t = time.perf_counter()
                soundalike.similar(q, k=10, catalog=cat, rerank=flag)
                times.append(time.perf_counter() - t)
        cat.close()
    p = lambda a, x: float(np.percentile(a, x)) * 1e3  # noqa: E731
    extra = p(on, 50) - p(off, 50)
    print(f"{n} tracks, {d}-d, {len(qs)} queries, k = 10, pool {rerank.POOL}: similar() p50 {p(on, 50):.1f} ms "
          f"with the re-rank, {p(off, 50):.1f} ms without (p90 {p(on, 90):.1f} / {p(off, 90):.1f}); "
          f"+{extra:.1f} ms a query, {extra / rerank.POOL * 1e3:.0f} us a candidate; "
          f"load {open('/proc/loadavg').read().split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
