"""Does a 10-s clip find the track it came from?  Segment-aware search, through ``soundalike.similar``.

A catalog of a labelled set (default: the game-soundtrack set) is built as ``ingest``
stores it with the default model (``musicnn-fusion``) and a budget ``spread:N`` (``--ns``,
default: the model's own budget; several are compared side by side in one run, each its
own catalog, on the same clips): each track's vector is the mean of its N spread
patches' vectors and its segment vectors are those patches'
(:func:`soundalike.ingest.plan.track_segments`); the vectors come from
the per-patch cache (``simcache.py``), and a real ``ingest`` of the first ``--check``
tracks is compared with them (the maximum difference is printed).  Then ``soundalike
index adapt`` runs on it, as ingest does past 200 tracks.  Clips are real audio: 10-s
excerpts decoded from the files (``--clips`` random ones per track, and each track's
opening), written to WAV and queried with ``soundalike.similar_with_query`` (the
adapted model, segment-aware); the same clip vectors are also searched against the track
vectors alone (``nearest_to_vector(segments=False)``), side by side.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_clips.py [CSV] [--clips 2] [--ns 4,6]
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


def ingest_like(track, analyzer, *, n: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
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


def build_catalog(path: Path, tracks, analyzer, *, n: int) -> dict[int, int]:
    """The catalog as ingest stores it at ``spread:n``; returns track index -> catalog id."""
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
                vec, segs = ingest_like(t, analyzer, n=n)
                tid = cat.upsert_track(path=str(Path(t.path).resolve()), content_hash=f"bench-{i}",
                                       size=st.st_size, mtime=st.st_mtime,
                                       duration_s=float(t.arrays["duration_s"]), title=Path(t.path).stem,
                                       album=t.label)
                cat.put_analysis(tid, analyzer.model_id, vec, analysis=f"spread:{n}")
                store_track_segments(cat, tid, model_id=analyzer.model_id, segments=segs)
                ids[i] = tid
    return ids


def check_against_ingest(tracks, analyzer, d: Path, n_tracks: int, *, n: int) -> float:
    """Lowest cosine between the cache-built vectors/segments and a real ingest's at
    ``spread:n`` (the same patches; ingest seeks to each, the cache decoded the file whole)."""
    import shutil

    from soundalike.catalog.store import Catalog
    from soundalike.ingest import ingest
    folder = d / "check"
    folder.mkdir()
    for t in tracks[:n_tracks]:
        shutil.copy(t.path, folder / Path(t.path).name)
    ingest([folder], catalog=d / "check.sqlite", model=analyzer.name, workers=1, analysis=f"spread:{n}")
    worst = 1.0
    with Catalog.open(d / "check.sqlite") as cat:
        for t in tracks[:n_tracks]:
            tr = cat.track_by_path(str((folder / Path(t.path).name).resolve()))
            vec, (starts, S) = ingest_like(t, analyzer, n=n)
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


def search_clips(db: Path, clips, ids: dict[int, int], *, label: str) -> list[dict]:
    """Each clip's own track first? With segments (the default search) and track vectors only."""
    from soundalike.catalog.store import Catalog
    from soundalike.search.similar import nearest_to_vector, similar_with_query

    rows = []
    t0 = time.perf_counter()
    with Catalog.open(db) as cat:
        for j, (p, i, kind) in enumerate(clips):
            rq, hits = similar_with_query(p, k=1, catalog=cat)
            plain = nearest_to_vector(cat, model_id=rq.model_id, vector=rq.vector, k=1, segments=False)
            rows.append({"kind": kind, "seg": bool(hits and hits[0].track.id == ids[i]),
                         "track": bool(plain and plain[0].track.id == ids[i])})
            if (j + 1) % 100 == 0:
                print(f"  {label}: {j + 1}/{len(clips)} clips ({time.perf_counter() - t0:.0f} s)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--clips", type=int, default=2, help="random clips per track (plus its opening)")
    ap.add_argument("--clip-s", type=float, default=10.0)
    ap.add_argument("--ns", default=None,
                    help="budgets spread:N to compare, comma-separated (default: the model's own)")
    ap.add_argument("--check", type=int, default=2, help="tracks ingested for real to check the vectors")
    ap.add_argument("--limit", type=int, default=None, help="first N tracks only (a smoke run)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from soundalike.catalog.store import Catalog
    from soundalike.ingest.plan import AnalysisPlan, default_analysis
    from soundalike.models.fusion import FUSION_NAME
    from soundalike.models.zoo import load_analyzer
    from soundalike.search.adapt import adapt_catalog, catalog_size

    torch.set_num_threads(2)
    tracks = B.load_tracks(args.data, compute=False)[: args.limit]
    analyzer = load_analyzer(FUSION_NAME)
    ns = ([int(x) for x in args.ns.split(",")] if args.ns
          else [AnalysisPlan.parse(default_analysis(analyzer)).n_patches])
    res: dict = {"tracks": len(tracks), "budgets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        clips = write_clips(tracks, d, per_track=args.clips, clip_s=args.clip_s, seed=0)
        for n in ns:
            r: dict = res["budgets"].setdefault(f"spread:{n}", {})
            dn = d / f"spread{n}"
            dn.mkdir()
            if args.check:
                r["min_cos_vs_ingest"] = check_against_ingest(tracks, analyzer, dn, args.check, n=n)
                print(f"spread:{n}: cache-built vectors vs a real ingest of {args.check} tracks: lowest cosine "
                      f"{r['min_cos_vs_ingest']:.4f} (track vectors and segments)", flush=True)
            db = dn / "clips.sqlite"
            ids = build_catalog(db, tracks, analyzer, n=n)
            with Catalog.open(db) as cat:
                rep = adapt_catalog(cat)
                r["adapted"] = rep.to_dict()
                r["catalog_bytes"] = catalog_size(cat)
                r["segments"] = cat.count_segments(rep.model_id)
            print(f"spread:{n}: {len(tracks)} tracks, {r['segments']} segment vectors ({rep.name}, {rep.dim}-d); "
                  f"{len(clips)} clips of {args.clip_s:g} s", flush=True)
            rows = search_clips(db, clips, ids, label=f"spread:{n}")
            for kind in ("random", "opening", "all"):
                sel = [x for x in rows if kind == "all" or x["kind"] == kind]
                r[kind] = {"n": len(sel), "track_vectors_p1": float(np.mean([x["track"] for x in sel])),
                           "segment_aware_p1": float(np.mean([x["seg"] for x in sel]))}
    print(f"\n| {args.clip_s:g}-s clips | n | " + " | ".join(
        f"spread:{n} track vectors | spread:{n} + best segment" for n in ns) + " |")
    print("|---|---|" + "---|---|" * len(ns))
    for kind in ("random", "opening", "all"):
        first = res["budgets"][f"spread:{ns[0]}"][kind]
        cells = " | ".join(f"{res['budgets'][f'spread:{n}'][kind]['track_vectors_p1']:.3f} | "
                           f"{res['budgets'][f'spread:{n}'][kind]['segment_aware_p1']:.3f}" for n in ns)
        print(f"| {kind} | {first['n']} | {cells} |")
    print("catalog " + ", ".join(f"spread:{n} {res['budgets'][f'spread:{n}']['catalog_bytes'] / 1e6:.1f} MB"
                                 for n in ns) + f" for {len(tracks)} tracks; load {open('/proc/loadavg').read().split()[0]}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
