"""Does a 10-s clip find the track it came from?  Segment-aware search, through ``soundalike.similar``.

A catalog of a labelled set (default: the game-soundtrack set) is built as ``ingest``
stores it with the default model (``musicnn-fusion``) and budget (``spread:10``): each
track's vector is the mean of its 10 spread patches' vectors and its segment vectors
are those patches' (:func:`soundalike.ingest.plan.track_segments`); the vectors come from
the per-patch cache (``simcache.py``), and a real ``ingest`` of the first ``--check``
tracks is compared with them (the maximum difference is printed).  Then ``soundalike
index adapt`` runs on it, as ingest does past 200 tracks.  Clips are real audio: 10-s
excerpts decoded from the files (``--clips`` random ones per track, and each track's
opening), written to WAV and queried with ``soundalike.similar_with_query`` (the
adapted model, segment-aware); the same clip vectors are also searched against the track
vectors alone (``nearest_to_vector(segments=False)``), side by side.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_clips.py [CSV] [--clips 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_similarity as B  # noqa: E402

DEFAULT = Path.home() / ".cache" / "soundalike-bench" / "gamemusic" / "gamemusic.csv"
#: bench_similarity block names in musicnn-fusion's block order
FUSION_BLOCKS = ("MTT.pen", "MSD.pen", "MTT.avg", "MSD.avg")


def ingest_like(track, analyzer, *, n: int = 10) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """What ingest stores for a track at ``spread:n``: its vector and ``(starts, segment vectors)``.

    The patches are the ones ingest picks (from the file header's length, as ingest does).
    """
    from soundalike.audio.io import info
    from soundalike.ingest.plan import patch_grid, planned_patches
    from soundalike.models.fusion import fuse

    grid = patch_grid(analyzer)
    P = fuse([B.block_patches(track.arrays, b) for b in FUSION_BLOCKS])  # (n_patches, 1906)
    meta = info(track.path)
    picks = planned_patches(analyzer, f"spread:{n}", frames=meta.frames, source_sr=meta.sr)
    ix = np.arange(len(P)) if picks is None else np.minimum(np.asarray(picks), len(P) - 1)
    vec = P[ix].astype(np.float64).mean(axis=0).astype(np.float32)
    starts = np.asarray([max(0, grid.start(int(k))) / grid.sr for k in ix], np.float32)
    return vec, (starts, P[ix])


def build_catalog(path: Path, tracks, analyzer) -> dict[int, int]:
    """The catalog; returns track index -> catalog id."""
    import os

    from soundalike.catalog.store import Catalog
    from soundalike.ingest.plan import store_track_segments

    ids = {}
    with Catalog.open(path) as cat:
        cat.register_model(model_id=analyzer.model_id, name=analyzer.name, dim=analyzer.embedding_dim,
                           labels=analyzer.labels)
        with cat.transaction():
            for i, t in enumerate(tracks):
                st = os.stat(t.path)
                vec, segs = ingest_like(t, analyzer)
                tid = cat.upsert_track(path=str(Path(t.path).resolve()), content_hash=f"bench-{i}",
                                       size=st.st_size, mtime=st.st_mtime,
                                       duration_s=float(t.arrays["duration_s"]), title=Path(t.path).stem,
                                       album=t.label)
                cat.put_analysis(tid, analyzer.model_id, vec, analysis="spread:10")
                store_track_segments(cat, tid, model_id=analyzer.model_id, segments=segs)
                ids[i] = tid
    return ids


def check_against_ingest(tracks, analyzer, d: Path, n: int) -> float:
    """Lowest cosine between the cache-built vectors/segments and a real ingest's (the same
    patches; ingest seeks to each, the cache decoded the file whole)."""
    import shutil

    from soundalike.catalog.store import Catalog
    from soundalike.ingest import ingest
    folder = d / "check"
    folder.mkdir()
    for t in tracks[:n]:
        shutil.copy(t.path, folder / Path(t.path).name)
    ingest([folder], catalog=d / "check.sqlite", model=analyzer.name, workers=1)
    worst = 1.0
    with Catalog.open(d / "check.sqlite") as cat:
        for t in tracks[:n]:
            tr = cat.track_by_path(str((folder / Path(t.path).name).resolve()))
            vec, (starts, S) = ingest_like(t, analyzer)
            got = cat.get_analysis(tr.id, analyzer.model_id).embedding
            gs, gS = cat.get_segments(tr.id, analyzer.model_id)
            if not np.array_equal(gs, starts):
                raise SystemExit(f"{t.path}: ingest picked other patches ({gs} vs {starts})")
            Sn = S / np.linalg.norm(S, axis=1, keepdims=True)
            gSn = gS / np.linalg.norm(gS, axis=1, keepdims=True)
            cos_track = float(got @ vec / (np.linalg.norm(got) * np.linalg.norm(vec)))
            worst = min(worst, cos_track, float((Sn * gSn).sum(1).min()))
    return worst


def write_clips(tracks, d: Path, *, per_track: int, clip_s: float, seed: int) -> list[tuple[Path, int, str]]:
    import soundfile as sf

    from soundalike.audio.io import load

    rng = np.random.default_rng(seed)
    out = []
    for i, t in enumerate(tracks):
        dur = float(t.arrays["duration_s"])
        offsets = [("opening", 0.0)] + [("random", float(rng.uniform(0, max(0.0, dur - clip_s))))
                                        for _ in range(per_track)]
        for kind, off in offsets:
            y = load(t.path, sr=16000, offset_s=off, duration_s=clip_s).y
            p = d / f"clip{i:04d}-{kind}-{int(off)}.wav"
            sf.write(p, y, 16000)
            out.append((p, i, kind))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--clips", type=int, default=2, help="random clips per track (plus its opening)")
    ap.add_argument("--clip-s", type=float, default=10.0)
    ap.add_argument("--check", type=int, default=2, help="tracks ingested for real to check the vectors")
    ap.add_argument("--limit", type=int, default=None, help="first N tracks only (a smoke run)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from soundalike.catalog.store import Catalog
    from soundalike.models.fusion import FUSION_NAME
    from soundalike.models.zoo import load_analyzer
    from soundalike.search.adapt import adapt_catalog, catalog_size
    from soundalike.search.similar import nearest_to_vector, similar_with_query

    torch.set_num_threads(2)
    tracks = B.load_tracks(args.data, compute=False)[: args.limit]
    analyzer = load_analyzer(FUSION_NAME)
    res: dict = {"tracks": len(tracks)}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if args.check:
            res["min_cos_vs_ingest"] = check_against_ingest(tracks, analyzer, d, args.check)
            print(f"cache-built vectors vs a real ingest of {args.check} tracks: lowest cosine "
                  f"{res['min_cos_vs_ingest']:.4f} (track vectors and segments)", flush=True)
        db = d / "clips.sqlite"
        ids = build_catalog(db, tracks, analyzer)
        with Catalog.open(db) as cat:
            rep = adapt_catalog(cat)
            res["adapted"] = rep.to_dict()
            res["catalog_bytes"] = catalog_size(cat)
            res["segments"] = cat.count_segments(rep.model_id)
        clips = write_clips(tracks, d, per_track=args.clips, clip_s=args.clip_s, seed=0)
        print(f"{len(tracks)} tracks, {res['segments']} segment vectors ({rep.name}, {rep.dim}-d); "
              f"{len(clips)} clips of {args.clip_s:g} s", flush=True)
        rows = []
        t0 = time.perf_counter()
        with Catalog.open(db) as cat:
            for j, (p, i, kind) in enumerate(clips):
                rq, hits = similar_with_query(p, k=1, catalog=cat)
                plain = nearest_to_vector(cat, model_id=rq.model_id, vector=rq.vector, k=1, segments=False)
                rows.append({"kind": kind, "seg": bool(hits and hits[0].track.id == ids[i]),
                             "track": bool(plain and plain[0].track.id == ids[i])})
                if (j + 1) % 50 == 0:
                    print(f"  {j + 1}/{len(clips)} clips ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\n{'clips':22} {'n':>4} {'track vectors':>14} {'+ best segment':>15}")
    for kind in ("random", "opening", "all"):
        sel = [r for r in rows if kind == "all" or r["kind"] == kind]
        a, b = np.mean([r["track"] for r in sel]), np.mean([r["seg"] for r in sel])
        res[kind] = {"n": len(sel), "track_vectors_p1": float(a), "segment_aware_p1": float(b)}
        print(f"{kind + ' ' + format(args.clip_s, 'g') + '-s clips':22} {len(sel):4d} {a:14.3f} {b:15.3f}")
    print(f"catalog {res['catalog_bytes'] / 1e6:.1f} MB for {len(tracks)} tracks; "
          f"load {open('/proc/loadavg').read().split()[0]}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
