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


def _spread(rows: list[np.ndarray], n: int | None, *, first: bool = False) -> np.ndarray:
    from soundalike.ingest.plan import spread_indices

    out = []
    for r in rows:
        if n is None:
            out.append(r.mean(axis=0))
        elif first:
            out.append(r[:n].mean(axis=0))
        else:
            picks = spread_indices(n_patches_full=len(r), n=n)
            out.append((r if picks is None else r[picks]).mean(axis=0))
    return np.stack(out).astype(np.float32)


def _table(name: str, rows: list[np.ndarray], labels: np.ndarray, ns: list[int]) -> None:
    full = _spread(rows, None)
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
            sp = _spread(rows, n, first=first)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="MTT_musicnn")
    ap.add_argument("--ns", default="2,4,6,8,10,12,16")
    ap.add_argument("--gamemusic", type=Path, default=Path("~/.cache/soundalike-bench/gamemusic").expanduser())
    ap.add_argument("--philharmonia", type=Path,
                    default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "philharmonia")
    ap.add_argument("--per-instrument", type=int, default=50)
    ap.add_argument("--cache", type=Path, default=Path("~/.cache/soundalike-bench/budget-rows").expanduser())
    args = ap.parse_args()
    ns = [int(x) for x in args.ns.split(",")]
    print(f"model {args.model}; load average {open('/proc/loadavg').read().split()[:3]}")
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
            files = sorted(files, key=lambda p: -p.stat().st_size)[: args.per_instrument]
            items += [(p, d.name) for p in files]
        sets.append(("Philharmonia (same instrument)", "philharmonia", items))
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
    os.environ.setdefault("SOUNDALIKE_THREADS", str(os.cpu_count() or 1))
    main()
