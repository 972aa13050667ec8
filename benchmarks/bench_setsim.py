"""Set-based similarity over a track's patches, against its one mean-pooled vector.

Every variant in ``bench_similarity.py`` compares one mean-pooled vector per track.  This
script measures what compares a track's *set* of per-patch vectors instead, label-free,
with same-label P@10 in numpy (labels used only to score):

- ``chamfer``: the mean over each patch of its best cosine in the other track, symmetrised;
- ``kme{tau}``: a kernel mean embedding, the mean of ``exp((cos - 1) / tau)`` over every
  patch pair, normalised by each track's self-similarity (large ``tau``: the mean vector);
- ``bos{k}``: bag of sounds: a k-means codebook fitted on the catalog's own patch vectors
  (z-scored, block-normalised, PCA 64), a track = its soft-assignment histogram
  (``exp(10 cos)`` weights), Hellinger (square root) then cosine;
- ``+X{w}``: the score blended with the adapted track vector's cosine at weight ``w``.

Patches are either in the product's adapted space (``fusion|adapt256n5`` applied to each
patch, as the catalog's segment vectors are) or in a per-patch space fitted on all patches
(``pz``); ``s10`` uses only the ~10 patches the catalog keeps per track.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_setsim.py ~/.cache/soundalike-bench/gamemusic/gamemusic.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_similarity as B  # noqa: E402


def p10(S: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    S = np.array(S, np.float64)
    np.fill_diagonal(S, -np.inf)
    nn = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return float((labels[nn] == labels[:, None]).mean())


def set_scores(P: list[np.ndarray], how: str, tau: float = 0.1) -> np.ndarray:
    """``(n, n)`` set-to-set scores of tracks given their patch vectors."""
    Pn = [B.l2n(x) for x in P]
    A = np.concatenate(Pn)
    b = np.cumsum([0] + [len(x) for x in Pn])
    C = A @ A.T
    n = len(P)
    if how == "chamfer":
        M = np.stack([C[:, b[j]:b[j + 1]].max(1) for j in range(n)], 1)
        Q = np.stack([M[b[i]:b[i + 1]].mean(0) for i in range(n)])
        return 0.5 * (Q + Q.T)
    K = np.exp((C - 1) / tau)
    T = np.stack([K[:, b[j]:b[j + 1]].mean(1) for j in range(n)], 1)
    Q = np.stack([T[b[i]:b[i + 1]].mean(0) for i in range(n)])
    dg = np.sqrt(np.diag(Q))
    return Q / dg[:, None] / dg[None, :]


def patch_space(P: list[np.ndarray], dim: int = 64) -> list[np.ndarray]:
    """Raw fusion patches z-scored over all patches, block-normalised, PCA ``dim``."""
    A = np.concatenate(P)
    Z = (A - A.mean(0)) / (A.std(0) + 1e-6)
    o, parts = 0, []
    for d in (200, 200, 753, 753):
        parts.append(B.l2n(Z[:, o:o + d]))
        o += d
    Z = np.concatenate(parts, 1) / 2
    Z = Z - Z.mean(0)
    _, _, Vt = np.linalg.svd(Z.astype(np.float64), full_matrices=False)
    Y = (Z @ Vt[:dim].T).astype(np.float32)
    b = np.cumsum([0] + [len(x) for x in P])
    return [Y[b[i]:b[i + 1]] for i in range(len(P))]


def bag_of_sounds(P: list[np.ndarray], k: int, *, soft: float = 10.0, seed: int = 0) -> np.ndarray:
    from sklearn.cluster import KMeans

    Yn = B.l2n(np.concatenate(P))
    own = np.repeat(np.arange(len(P)), [len(x) for x in P])
    km = KMeans(k, n_init=3, random_state=seed).fit(Yn)
    D = Yn @ km.cluster_centers_.T
    W = np.exp(soft * (D - D.max(1, keepdims=True)))
    W /= W.sum(1, keepdims=True)
    H = np.zeros((len(P), k))
    np.add.at(H, own, W)
    H /= H.sum(1, keepdims=True)
    F = B.l2n(np.sqrt(H).astype(np.float32))
    return F @ F.T


def per_patch(tracks, pipe) -> list[np.ndarray]:
    return [pipe.transform([{k: a[j:j + 1] for k, a in t.arrays.items() if a.ndim == 2}
                            for j in range(t.n_patches)]) for t in tracks]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--variant", default="fusion|adapt256n5", help="the track vectors (and adapted patch space)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    tracks = B.load_tracks(args.data, compute=False)
    labels = np.asarray([t.label for t in tracks])
    pipe = B.Pipeline(args.variant, [t.arrays for t in tracks])
    X = B.l2n(pipe.X)
    S0 = X @ X.T
    print(f"{args.data}: {len(tracks)} tracks; {args.variant} P@10 {p10(S0, labels):.3f}")
    adapted = per_patch(tracks, pipe)
    raw = per_patch(tracks, B.Pipeline("fusion", [t.arrays for t in tracks[:2]]))
    spaces = {"adapted": adapted, "adapted s10": [x[B.budget(len(x))] for x in adapted],
              "pz64": patch_space(raw, 64), "pz128": patch_space(raw, 128)}

    def show(name: str, S: np.ndarray) -> None:
        blends = "  ".join(f"+X{w}: {p10(w * S0 + (1 - w) * S, labels):.3f}" for w in (0.25, 0.5, 0.75))
        print(f"  {name:28} alone {p10(S, labels):.3f}  {blends}", flush=True)

    for sname, P in spaces.items():
        print(f"{sname}:")
        show("chamfer", set_scores(P, "chamfer"))
        for tau in (0.05, 0.1, 0.2, 0.5):
            show(f"kme{tau}", set_scores(P, "kme", tau))
    for k in (32, 64, 128, 256, 512):
        show(f"bos{k} (pz64 patches)", bag_of_sounds(spaces["pz64"], k))
    print(f"{time.perf_counter() - t0:.0f} s, load {open('/proc/loadavg').read().split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
