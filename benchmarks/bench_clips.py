"""Segment-aware search, measured before it is built: does a 9-s clip find its own track?

Five random 9-s clips (3 patches) per track of a labelled set are queried against (a) the
track vectors and (b) per-30-s-segment vectors of every track (a track scores its best
segment).  Uses the ``simcache.py`` cache; prints P@1 per embedding variant.

    .venv/bin/python benchmarks/bench_clips.py [~/.cache/soundalike-bench/gamemusic/gamemusic.csv]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_similarity as B  # noqa: E402

DEFAULT = Path.home() / ".cache" / "soundalike-bench" / "gamemusic" / "gamemusic.csv"


def main(argv: list[str] | None = None) -> int:
    data = Path(argv[0] if argv else DEFAULT)
    tracks = B.load_tracks(data, compute=False)
    for v in ("MTT.pen:mean", "fusion", "fusion|adapt"):
        rng = np.random.default_rng(0)
        pipe = B.Pipeline(v, [t.arrays for t in tracks])
        T = B.l2n(pipe.X)
        clips, own, segs, seg_own = [], [], [], []
        for i, t in enumerate(tracks):
            n = t.n_patches
            for _ in range(5):
                s = int(rng.integers(0, max(1, n - 3)))
                clips.append({k: a[s : s + 3] for k, a in t.arrays.items() if a.ndim == 2})
                own.append(i)
            for s in range(0, n, B.SEGMENT_PATCHES):
                segs.append({k: a[s : s + B.SEGMENT_PATCHES] for k, a in t.arrays.items() if a.ndim == 2})
                seg_own.append(i)
        C, S = B.l2n(pipe.transform(clips)), B.l2n(pipe.transform(segs))
        own, seg_own = np.asarray(own), np.asarray(seg_own)
        by_track = (C @ T.T).argmax(1)
        sim = C @ S.T
        best = np.stack([sim[:, seg_own == j].max(1) for j in range(len(tracks))], axis=1)
        print(f"{v:14} 9-s clip -> own track P@1: track vectors {np.mean(by_track == own):.3f}, "
              f"best 30-s segment {np.mean(best.argmax(1) == own):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
