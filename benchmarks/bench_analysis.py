"""How many spread patches an analysis needs: P@10 of spread:N against the full analysis.

    .venv/bin/python benchmarks/bench_analysis.py [--model MTT_musicnn] [--ns 2,4,6,8,10,16]
        [--gamemusic ~/.cache/soundalike-bench/gamemusic] [--philharmonia ../shared/data/philharmonia]
        [--per-instrument 50]

Every track is analyzed once in full (all patches, per-patch embeddings kept).  A
``spread:N`` embedding is then the mean of the N patch rows the plan picks
(:func:`soundalike.ingest.plan.planned_patches`): the seeked excerpts give exactly those
rows (tests/test_ingest_plan.py checks it to 1e-5 on every format), so one full pass
measures every N.  For comparison, the first 30 s alone (the first 10 patches) are
measured too: truncating instead of spreading.

Prints, per N: same-soundtrack P@10 (gamemusic) and same-instrument P@10
(Philharmonia) with the spread embeddings, the drop from the full analysis, the P@10 of a
*mixed* index (queries spread, catalog full), the mean cosine between a track's spread
and full vector, how often a track's own full vector is the nearest to its spread
vector, and the patch ratio (network work) on tracks of 4 minutes or more.

``--budget-fusion`` prints the same table for the default embedding, ``musicnn-fusion``,
from the similarity benchmark's cached per-patch features (``benchmarks/simcache.py``).

``--fusion bf16`` (or ``int8``) weighs the default embedding instead: ``musicnn-fusion``
spread:N and full from the similarity benchmark's cached fp32 per-patch features
(``benchmarks/simcache.py``: both networks, every patch), against the same patches run
in the other precision (read from the files on the musicnn patch grid, so they are the
cached rows' own patches): same-soundtrack / same-instrument P@10 and the largest change
of a track's tag probabilities.  The issue's rule for a precision default: P@10 within
0.01 and tag probabilities within 1e-2 of fp32.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_analysis.py --fusion bf16 --ns 4,6,8,10
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np


def _rows(paths: list[Path], model: str) -> list[np.ndarray]:
    from soundalike.audio.io import load
    from soundalike.models.zoo import load_analyzer

    a = load_analyzer(model)
    out = []
    for i, p in enumerate(paths):
        w = load(p, sr=a.sample_rate)
        out.append(np.asarray(a.analyze(w.y, w.sr).patch_embeddings, np.float32))
        if (i + 1) % 50 == 0:
            print(f"  analyzed {i + 1}/{len(paths)}", flush=True)
    return out


def _p_at_10(Q: np.ndarray, X: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean fraction of a query's k nearest others (cosine, itself excluded) sharing its label."""
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Qn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    nn = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return float((labels[nn] == labels[:, None]).mean())


def _spread(rows: list[np.ndarray], n: int | None, *, first: bool = False, pool=None) -> np.ndarray:
    from soundalike.ingest.plan import spread_indices

    pool = pool or (lambda r: r.mean(axis=0))
    out = []
    for r in rows:
        if n is None:
            out.append(pool(r))
        elif first:
            out.append(pool(r[:n]))
        else:
            picks = spread_indices(n_patches_full=len(r), n=n)
            out.append(pool(r if picks is None else r[picks]))
    return np.stack(out).astype(np.float32)


def _table(name: str, rows: list[np.ndarray], labels: np.ndarray, ns: list[int], pool=None) -> None:
    """``pool``: a track's vector from its rows (default: their mean)."""
    full = _spread(rows, None, pool=pool)
    p_full = _p_at_10(full, full, labels)
    long_ = [len(r) for r in rows if len(r) >= 80]
    print(f"\n{name}: {len(rows)} tracks, {len(set(labels))} labels, {sum(map(len, rows))} patches in full, "
          f"{len(long_)} tracks of >= 4 min")
    print(f"| analysis | P@10 | drop vs full | mixed index P@10 | cos(spread, full) | own full vector nearest "
          f"| patches, all tracks | patch ratio on >= 4 min |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| full | {p_full:.4f} | 0 | {p_full:.4f} | 1 | 1 | {sum(map(len, rows))} | 1x |")
    for n in ns:
        for first in (False, True) if n == 10 else (False,):
            sp = _spread(rows, n, first=first, pool=pool)
            p = _p_at_10(sp, sp, labels)
            # Mixed index: the query is a spread vector, the catalog holds full vectors
            # (its own full vector removed by the diagonal): how the two mix in one index.
            pm = _p_at_10(sp, full, labels)
            cos = np.sum(sp * full, 1) / np.linalg.norm(sp, axis=1) / np.linalg.norm(full, axis=1)
            S = (sp / np.linalg.norm(sp, axis=1, keepdims=True)) @ (full / np.linalg.norm(full, axis=1, keepdims=True)).T
            own = float((S.argmax(axis=1) == np.arange(len(sp))).mean())
            n_p = sum(min(len(r), n) for r in rows)
            ratio = (np.mean([len(r) / n for r in rows if len(r) >= 80]) if long_ else float("nan"))
            label = f"first {n} patches (30 s)" if first else f"spread:{n}"
            print(f"| {label} | {p:.4f} | {p_full - p:+.4f} | {pm:.4f} | {cos.mean():.4f} | {own:.3f} "
                  f"| {n_p} | {ratio:.1f}x |")


def _cached_rows(root: Path, path: Path) -> dict[str, np.ndarray]:
    """simcache's arrays for ``path`` (a file whose size matches; mtimes of a re-copied data
    set move while the bytes stay)."""
    import simcache

    c = simcache.cache_path(root, path)
    with np.load(c, allow_pickle=False) as z:
        if str(z["stamp"]).split(":")[1] != str(path.stat().st_size):
            raise SystemExit(f"{path}: the cached features are stale; run benchmarks/simcache.py {root}")
        return {k: z[k] for k in z.files}


def fusion_precision(sets: list, *, precision: str, ns: list[int], per_instrument_note: str) -> None:
    """musicnn-fusion in ``precision`` vs fp32 on the same patches (see the module docstring)."""
    from soundalike.audio.io import load, load_excerpts
    from soundalike.ingest.plan import spread_indices
    from soundalike.models.fusion import BLOCKS, fuse
    from soundalike.models.zoo import load_analyzer

    ref = load_analyzer("musicnn-fusion")
    other = load_analyzer("musicnn-fusion", precision=precision)
    g = other.patch_grid
    print(f"\nmusicnn-fusion fp32 ({ref.model_id}) vs {other.name} ({other.model_id}); {per_instrument_note}")
    print("| set | analysis | fp32 P@10 | fp32 drop vs full | " + precision + " P@10 | " + precision
          + " - fp32 P@10 | max abs diff, track tag probabilities | mean cos(" + precision + ", fp32) |")
    print("|---|---|---|---|---|---|---|---|")
    for title, root, items in sets:
        labels = np.array([lab for _, lab in items])
        data = [_cached_rows(root, p) for p, _ in items]
        full = np.stack([fuse([d[f"{m}/{layer}"].mean(0) for m, layer in BLOCKS]) for d in data])
        p_full = _p_at_10(full, full, labels)
        print(f"| {title} | full | {p_full:.4f} | 0 | | | | |")
        for n in ns:
            E32, E, dmax = [], [], 0.0
            t = time.perf_counter()
            for (path, _), d in zip(items, data):
                n_full = len(d["MTT_musicnn/probs"])
                picks = spread_indices(n_patches_full=n_full, n=n)
                idx = list(range(n_full)) if picks is None else picks
                E32.append(fuse([d[f"{m}/{layer}"][idx].mean(0) for m, layer in BLOCKS]))
                if picks is None:  # the whole file, as ingest analyzes a track this short
                    w = load(path, sr=g.sr)
                    a = other.analyze(w.y, w.sr)
                else:
                    a = other.analyze_excerpts(load_excerpts(path, sr=g.sr, starts=[g.start(k) for k in idx],
                                                             length=g.length), g.sr)
                E.append(a.embedding)
                p32 = {lab: float(d[f"{m}/probs"][idx, j].mean()) for lab, (m, j) in zip(ref.labels, ref._sources)}
                dmax = max(dmax, max(abs(a.predictions[k] - p32[k]) for k in p32))
            E32, E = np.stack(E32), np.stack(E)
            p32, p = _p_at_10(E32, E32, labels), _p_at_10(E, E, labels)
            cos = float(np.mean(np.sum(E * E32, 1) / np.linalg.norm(E, axis=1) / np.linalg.norm(E32, axis=1)))
            print(f"| {title} | spread:{n} | {p32:.4f} | {p_full - p32:+.4f} | {p:.4f} | {p - p32:+.4f} "
                  f"| {dmax:.4f} | {cos:.5f} |  ({time.perf_counter() - t:.0f} s)", flush=True)


def fusion_budget(sets: list, *, ns: list[int]) -> None:
    """The budget table for ``musicnn-fusion`` from simcache's fp32 per-patch features (every
    patch of both networks; missing files are computed first): a track's vector at
    ``spread:N`` is the fusion of its N picked patches' block means, as ingest makes it."""
    import simcache

    from soundalike.models.fusion import BLOCKS, block_dims, fuse

    cuts = np.cumsum(block_dims())[:-1]

    def pool(r: np.ndarray) -> np.ndarray:
        return fuse([b.mean(axis=0) for b in np.split(r, cuts, axis=1)])

    for title, root, items in sets:
        simcache.ensure(root, [p for p, _ in items])
        data = [_cached_rows(root, p) for p, _ in items]
        rows = [np.concatenate([d[f"{m}/{layer}"] for m, layer in BLOCKS], axis=1) for d in data]
        _table(f"{title}, musicnn-fusion", rows, np.array([lab for _, lab in items]), ns, pool=pool)


#: Mixed-precision splits weighed by ``--mixed``: which parts of each musicnn run in bf16.
MIXED_SPLITS = {
    "bf16 (everything)": None,
    "timbral": {"timbral"},
    "front end (timbral + temporal)": {"timbral", "temporal"},
    "mid + dense": {"mid", "dense"},
    "temporal + mid + dense": {"temporal", "mid", "dense"},
    "timbral centred": {"timbral", "center"},
    "front end centred": {"timbral", "temporal", "center"},
    "everything (front end centred)": {"timbral", "temporal", "mid", "dense", "center"},
    # FreqMaxBlock.forward_bf16: centred input, the bias added in fp32 after the max
    "front end centred, bias after the max": {"timbral", "temporal", "bias"},
    "front end centred, bias after, filters as bf16 hi + lo (two convolutions)": {"timbral", "temporal", "bias",
                                                                                  "split"},
    "the same, hi + lo summed by oneDNN into bf16": {"timbral", "temporal", "bias", "split", "fused"},
    "front end centred, bias after, error-fed bf16 filters": {"timbral", "temporal", "bias", "ef"},
    "the same, each frame centred (mixed-ef)": {"timbral", "temporal", "bias", "ef", "frames"},
}


def mixed_precision(sets: list, *, n: int, splits: dict | None = None) -> dict[str, dict]:
    """Per-layer mixed precision of musicnn-fusion against fp32 on the same patches.

    Every track's patches (gamemusic: ``spread:n``; Philharmonia notes: all of a note's
    patches, as ingest analyzes a note that short) are made once (log-mel), then both
    networks run on them in fp32 and in each split of :data:`MIXED_SPLITS` (the named
    parts in bf16, the rest fp32).  Per split: the largest change of any of the 100 tag
    probabilities (MTT and MSD, track means) and of a single patch's, P@10 of the fused
    embedding, and the networks' speed (patches/s, one thread, same run).
    """
    import torch

    from soundalike.audio.io import info, load, load_excerpts
    from soundalike.ingest.plan import planned_patches
    from soundalike.models.zoo import load_analyzer

    torch.set_num_threads(1)
    a = load_analyzer("musicnn-fusion")
    for m in a.models.values():
        m.threads = 1
    g, first = a.patch_grid, next(iter(a.models.values()))
    splits = MIXED_SPLITS if splits is None else {k: MIXED_SPLITS[k] for k in splits}
    results: dict[str, dict] = {}
    for title, items in sets:
        labels = np.array([lab for _, lab in items])
        patches = []
        for p, _ in items:
            meta = info(p)
            picks = planned_patches(a, f"spread:{n}", frames=meta.frames, source_sr=meta.sr)
            if picks is None:
                patches.append(first.patches(load(p, sr=g.sr).y, g.sr))
            else:
                ex = load_excerpts(p, sr=g.sr, starts=[g.start(k) for k in picks], length=g.length)
                mel = first.logmel(np.stack(ex), g.sr)
                patches.append(np.ascontiguousarray(mel[:, :, a._lead_frames : a._lead_frames + first.patch_frames]))
        n_p = sum(len(x) for x in patches)

        def run(parts):
            nets = [m.net for m in a.models.values()]
            for net in nets:
                net.bf16_parts = frozenset(parts or ())
            bf16_all = parts is None
            for m in a.models.values():
                m.precision = "bf16" if bf16_all else "fp32"
            try:
                t = time.perf_counter()
                outs = [{name: m.run_patches(P) for name, m in a.models.items()} for P in patches]
                dt = time.perf_counter() - t
            finally:
                for net in nets:
                    net.bf16_parts = frozenset()
                for m in a.models.values():
                    m.precision = "fp32"
            from soundalike.models.fusion import BLOCKS, fuse

            E = np.stack([fuse([o[m][layer].mean(0) for m, layer in BLOCKS]) for o in outs])
            track = [np.concatenate([o[m]["probs"].mean(0) for m in a.models]) for o in outs]
            patch = [np.concatenate([o[m]["probs"] for m in a.models], axis=1) for o in outs]
            return E, track, patch, n_p / dt

        E0, T0, P0, speed0 = run(())
        p0 = _p_at_10(E0, E0, labels)
        print(f"\n{title}: {len(items)} tracks, {n_p} patches (spread:{n}; shorter tracks whole), "
              f"load {' '.join(open('/proc/loadavg').read().split()[:3])}\n")
        print("| bf16 parts (rest fp32) | patches/s, both networks | vs fp32 | max abs diff, track tag probabilities "
              "| max abs diff, one patch | P@10 | P@10 - fp32 |")
        print("|---|---|---|---|---|---|---|")
        print(f"| none (fp32) | {speed0:.1f} | 1.00x | 0 | 0 | {p0:.4f} | 0 |", flush=True)
        for name, parts in splits.items():
            E, T, P, speed = run(parts)
            dt_ = max(float(np.abs(x - y).max()) for x, y in zip(T, T0))
            dp = max(float(np.abs(x - y).max()) for x, y in zip(P, P0))
            p10 = _p_at_10(E, E, labels)
            results.setdefault(name, {})[title] = (speed / speed0, dt_, dp, p10 - p0)
            print(f"| {name} | {speed:.1f} | {speed / speed0:.2f}x | {dt_:.4f} | {dp:.4f} | {p10:.4f} "
                  f"| {p10 - p0:+.4f} |", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="MTT_musicnn")
    ap.add_argument("--ns", default="2,4,6,8,10,12,16")
    ap.add_argument("--gamemusic", type=Path, default=Path("~/.cache/soundalike-bench/gamemusic").expanduser())
    ap.add_argument("--philharmonia", type=Path,
                    default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "philharmonia")
    ap.add_argument("--per-instrument", type=int, default=50, help="the N longest notes of each (0: all)")
    ap.add_argument("--cache", type=Path, default=Path("~/.cache/soundalike-bench/budget-rows").expanduser())
    ap.add_argument("--fusion", default=None, metavar="PRECISION",
                    help="weigh musicnn-fusion in PRECISION (bf16, int8) against fp32 instead")
    ap.add_argument("--mixed", type=int, default=None, metavar="N",
                    help="weigh per-layer mixed precision of musicnn-fusion (spread:N) against fp32 instead")
    ap.add_argument("--budget-fusion", action="store_true",
                    help="the budget table (--ns) for musicnn-fusion, from simcache's per-patch features")
    ap.add_argument("--splits", default="", help="with --mixed: names of MIXED_SPLITS, separated by ';' (default all)")
    args = ap.parse_args()
    ns = [int(x) for x in args.ns.split(",")]
    print(f"model {'musicnn-fusion' if args.fusion or args.budget_fusion or args.mixed else args.model}; "
          f"load average {open('/proc/loadavg').read().split()[:3]}")
    args.cache.mkdir(parents=True, exist_ok=True)

    sets = []
    if (args.gamemusic / "gamemusic.csv").exists():
        with open(args.gamemusic / "gamemusic.csv") as f:
            items = [(args.gamemusic / r["path"], r["label"]) for r in csv.DictReader(f)]
        sets.append(("gamemusic (same soundtrack)", "gamemusic", items))
    if args.philharmonia.exists():
        items = []
        for d in sorted(p for p in args.philharmonia.iterdir() if p.is_dir()):
            files = sorted(d.glob("*.mp3"))
            # the longest notes first: they are the only ones a budget can change
            files = sorted(files, key=lambda p: -p.stat().st_size)[: args.per_instrument or None]
            items += [(p, d.name) for p in files]
        sets.append(("Philharmonia (same instrument)", "philharmonia", items))
    if args.mixed:
        mixed_precision([(t, items) for t, _, items in sets], n=args.mixed,
                        splits=args.splits.split(";") if args.splits else None)
        return
    roots = {"gamemusic": args.gamemusic, "philharmonia": args.philharmonia}
    if args.budget_fusion:
        fusion_budget([(t, roots[k].resolve(), items) for t, k, items in sets], ns=ns)
        return
    if args.fusion:
        fusion_precision([(t, roots[k].resolve(), items) for t, k, items in sets], precision=args.fusion,
                         ns=ns, per_instrument_note=f"Philharmonia: the {args.per_instrument} longest notes "
                                                    f"per instrument")
        return
    for title, key, items in sets:
        cache = args.cache / f"{key}-{args.model}-{len(items)}.npz"
        if cache.exists():
            with np.load(cache, allow_pickle=False) as z:
                rows = [z[f"r{i}"] for i in range(len(items))]
        else:
            t = time.perf_counter()
            rows = _rows([p for p, _ in items], args.model)
            print(f"  {key}: full analysis of {len(items)} tracks in {time.perf_counter() - t:.0f} s")
            np.savez(cache, **{f"r{i}": r for i, r in enumerate(rows)})
        _table(title, rows, np.array([lab for _, lab in items]), ns)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # simcache
    os.environ.setdefault("SOUNDALIKE_THREADS", str(os.cpu_count() or 1))
    main()
