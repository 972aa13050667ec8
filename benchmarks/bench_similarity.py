"""Does `similar` sound similar?  Every embedding variant side by side on labelled music.

For a labelled folder (a folder per label, or a CSV with ``path,label`` columns such as
``gamemusic.csv``) and, beside it, ``../shared/data/philharmonia`` (16 instruments), it
prints per embedding variant:

- ``P@10``: same-label precision of the 10 nearest tracks, asked through
  ``soundalike.similar`` on a real catalog holding that variant's vectors (ceiling and
  chance printed beside it); ``P@10 s10``: the same with track vectors computed from
  only ~10 patches spread evenly over each track (the ingest analysis budget);
- ``seg P@1``: over 30-s segments (10 patches) of tracks with at least two, the share
  whose nearest other segment is from the same track;
- ``LR acc``: 5-fold track-level logistic-regression accuracy on the track vectors;
- ``phil P@10``: same-instrument precision of the 10 nearest notes on Philharmonia.

No labels are used to build any vector: catalog-level steps (z-scoring, PCA whitening,
neighbour averaging, the contrastive adaptation) are fitted on the searched set's own
audio only.  Per-patch features come from ``benchmarks/simcache.py`` (computed once,
heavy: run it first under ``flock /tmp/heavy.lock``).

Variant grammar: ``BLOCKS:POOL[|POST...]`` where BLOCKS are ``+``-joined feature blocks
(``MTT.pen``, ``MTT.max``, ``MTT.avg``, ``MTT.tag``, ``MSD.*`` likewise, ``mel`` = log-mel
band means and standard deviations; ``MTTv.*`` / ``MSDv.*`` = the VGG models: ``pen`` the
256-d last pool, ``b3m``/``b4m``/``b5m`` and ``b3x``/``b4x``/``b5x`` blocks 3-5 averaged /
maximised over the patch, ``b4t`` block 4 averaged over time per band, 768-d; cached by
``simcache.py --extra``), POOL is ``mean``, ``meanstd``, ``max`` or ``spow{A}`` (the mean, then a
signed power ``sign(m) |m|^A`` per dimension: power normalisation), and POST
steps are ``z`` (per-dimension z-score over the catalog), ``pcaw`` (PCA whitening), ``l2``,
``center``.  Each block is pooled, z-scored over the catalog when the variant asks for
``bz``, L2-normalised and then concatenated, so blocks weigh the same.  A last step
``rr[POOL][kK][aALPHA]`` is not a map of the vectors but the search's diffusion re-rank
(:mod:`soundalike.search.rerank`; plain ``rr``: similar's defaults), applied to every
ranking the row measures (P@10 through ``similar`` with it on, the numpy P@10s, segment
P@1, the folds and halves).

    flock /tmp/heavy.lock .venv/bin/python benchmarks/simcache.py ~/.cache/soundalike-bench/gamemusic ../shared/data/philharmonia
    .venv/bin/python benchmarks/bench_similarity.py ~/.cache/soundalike-bench/gamemusic/gamemusic.csv
    .venv/bin/python benchmarks/bench_similarity.py ~/.cache/soundalike-bench/gamemusic/gamemusic.csv --cost

(``--cost``: ms per patch of each network, musicnn and VGG, side by side in one run;
``--per-label``: each label's P@10 beside its own ceiling and chance; ``--name-groups
Olivier_Militon,-jt,-ks``: the same for groups of tracks named alike, e.g. one composer's.)

Targets (issue 12): gamemusic same-soundtrack P@10 >= 0.70 (baseline 0.562, mean MTT
penultimate) and same-track segment P@1 >= 0.90, Philharmonia same-instrument P@10 not
lower than the baseline's.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import simcache  # noqa: E402

PHILHARMONIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "philharmonia"
SEGMENT_PATCHES = 10  # 30 s of 3-s patches
BUDGET_PATCHES = 10

DEFAULT_VARIANTS = (
    "MTT.pen:mean",
    "MTT.max:mean",
    "MTT.pen:meanstd",
    "MTT.pen:mean|z",
    "MTT.pen:mean|pcaw",
    "MTT.pen+MSD.pen:mean",
    "MTT.max+MSD.max:mean",
    "mel:mean",
    "MTT.pen+MSD.pen+mel:mean",
    "MTT.pen+MSD.pen+mel:mean|bz",
    "MTT.max+MSD.max+mel:mean|bz",
    "MTT.pen+MSD.pen+mel:meanstd|bz",
)

_LAYER = {"pen": "penultimate", "max": "max_pool", "avg": "mean_pool", "tag": "probs",
          # the vgg models (MTTv, MSDv) only: blocks 3-5 of the port averaged (m) or maximised (x)
          # over the patch's time and frequency, block 4 averaged over time per band (t)
          "b3m": "block3_mean", "b3x": "block3_max", "b4m": "block4_mean", "b4x": "block4_max",
          "b5m": "block5_mean", "b5x": "block5_max", "b4t": "block4_time_mean"}
_MODEL = {"MTT": "MTT_musicnn", "MSD": "MSD_musicnn", "MTTv": "MTT_vgg", "MSDv": "MSD_vgg"}


# --------------------------------------------------------------------------- data


@dataclass
class Track:
    path: Path
    label: str
    arrays: dict[str, np.ndarray]

    @property
    def n_patches(self) -> int:
        return int(self.arrays["mel/mean"].shape[0])


def read_labelled(spec: Path) -> tuple[Path, list[tuple[Path, str]]]:
    """(root, [(path, label)]) from a CSV (``path,label``) or a folder per label."""
    spec = Path(spec).expanduser()
    if spec.is_file():
        root = spec.parent
        with open(spec, newline="") as f:
            rows = [(root / r["path"], r["label"]) for r in csv.DictReader(f)]
        return root, rows
    rows = [(p, p.relative_to(spec).parts[0]) for p in simcache.audio_files(spec)
            if len(p.relative_to(spec).parts) > 1]
    return spec, rows


def load_tracks(spec: Path, *, compute: bool) -> list[Track]:
    root, rows = read_labelled(spec)
    if compute:
        simcache.ensure(root, [p for p, _ in rows])
    out, missing = [], 0
    for p, label in rows:
        a = simcache.load_cached(root, p)
        if a is None:
            missing += 1
            continue
        out.append(Track(p, label, a))
    if missing:
        print(f"{spec}: {missing} files not cached (run simcache.py under flock first)", file=sys.stderr)
    return out


# --------------------------------------------------------------------------- variants


N_CEP = 20


def _dct(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II rows ``(n_out, n_in)``."""
    k = np.arange(n_out)[:, None]
    m = np.arange(n_in)[None, :]
    D = np.cos(np.pi * k * (2 * m + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    D[0] /= np.sqrt(2.0)
    return D.astype(np.float32)


def block_patches(arrays: dict[str, np.ndarray], block: str) -> np.ndarray:
    """float32 ``(n_patches, d)`` of one feature block.

    ``cep``/``cepcov``: the cepstrum of each patch's log-mel band means (DCT coefficients
    1-19; coefficient 0, the level, left out): the spectral envelope a mix's instrumentation,
    EQ and mastering give it, as MFCCs summarise timbre.  ``cepcov`` pools them as their
    covariance over the track's patches (how the envelope moves), see :func:`_pooled`.
    """
    block = block.split("@")[0]
    if block == "mel":
        return np.concatenate([arrays["mel/mean"], arrays["mel/std"]], axis=1)
    if block in ("cep", "cepcov"):
        M = arrays["mel/mean"]
        return (M @ _dct(N_CEP, M.shape[1]).T)[:, 1:].astype(np.float32)
    m, layer = block.split(".")
    return arrays[f"{_MODEL[m]}/{_LAYER[layer]}"]


def pool(P: np.ndarray, how: str) -> np.ndarray:
    if how == "mean":
        return P.mean(axis=0)
    if how == "max":
        return P.max(axis=0)
    if how == "meanstd":
        return np.concatenate([P.mean(axis=0), P.std(axis=0)])
    if how.startswith("spow"):  # spow{A}: the mean, then a signed power |m|^A sign(m) per dimension
        m = P.mean(axis=0)
        return np.sign(m) * np.abs(m) ** float(how[4:] or 0.5)
    raise ValueError(f"unknown pooling {how!r}")


def l2n(X: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(X, axis=-1, keepdims=True)
    return (X / np.maximum(n, 1e-12)).astype(np.float32)


#: ``fusion`` = what the ``musicnn-fusion`` analyzer stores (soundalike.models.fusion).
ALIASES = {"fusion": "MTT.pen+MSD.pen+MTT.avg+MSD.avg:mean"}


def parse_variant(v: str) -> tuple[list[str], str, list[str]]:
    head, *post = v.split("|")
    blocks, how = head.split(":") if ":" in head else (head, "mean")
    out: list[str] = []
    for b in blocks.split("+"):  # an alias may stand among other blocks: fusion+cep@0.5
        out += ALIASES[b].split(":")[0].split("+") if b in ALIASES else [b]
    return out, how, post


def _cov(P: np.ndarray) -> np.ndarray:
    """Upper triangle (with the diagonal) of the covariance of ``P``'s rows; zeros for one row."""
    iu = np.triu_indices(P.shape[1])
    if len(P) < 2:
        return np.zeros(len(iu[0]), np.float32)
    return np.cov(P.astype(np.float64), rowvar=False)[iu].astype(np.float32)


def block_weight(block: str) -> float:
    """``name@w``: the block's share of the fused vector's length (default 1, as every block)."""
    return float(block.split("@")[1]) if "@" in block else 1.0


def _pooled(patch_sets: list[dict[str, np.ndarray]], block: str, how: str, select=None) -> np.ndarray:
    rows = []
    for a in patch_sets:
        P = block_patches(a, block)
        if select is not None:
            P = P[select(len(P))]
        rows.append(_cov(P) if block.split("@")[0] == "cepcov" else pool(P, how))
    return np.stack(rows).astype(np.float32)


def fit_segments(patch_sets: list[dict[str, np.ndarray]], *, select=None, size: int = 2
                 ) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """What an adaptation is fitted on: each track's (budget) patches in groups of ``size``."""
    segs, owner = [], []
    for i, a in enumerate(patch_sets):
        n = int(a["mel/mean"].shape[0])
        ix = select(n) if select is not None else np.arange(n)
        for s in range(0, len(ix) - size + 1, size):
            segs.append({k: v[ix[s : s + size]] for k, v in a.items() if v.ndim == 2})
            owner.append(i)
    return segs, np.asarray(owner)


class Pipeline:
    """A variant fitted on one catalog's tracks (no labels), applicable to other items.

    ``X`` are the catalog's track vectors; :meth:`transform` maps other items (segments)
    with every catalog-level statistic fitted on the tracks.
    """

    def __init__(self, v: str, patch_sets: list[dict[str, np.ndarray]], *, select=None, seed: int = 0):
        self.blocks, self.how, self.post = parse_variant(v)
        self.bz: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.steps: list = []
        X = self._blocks(patch_sets, select, fit=True)
        fit_sets, fit_owner = None, None
        for step in self.post:
            if step == "bz":
                continue
            if step in ("z", "center", "l2") or step.startswith("pca"):
                f = _fit_simple(step, X)
            elif step.startswith(("lda", "con")):
                if fit_sets is None:
                    seg_sets, fit_owner = fit_segments(patch_sets, select=budget)
                    fit_sets = self._blocks(seg_sets, None, fit=False)
                    for g in self.steps:
                        fit_sets = g(fit_sets)
                from soundalike.models import adapt

                method = "lda" if step.startswith("lda") else "contrastive"
                dim = int(step[3:] or 128)
                a = adapt.fit(fit_sets, fit_owner, base_model_id="bench", method=method, dim=dim, seed=seed)
                f = a.apply
            elif step.startswith("adapt"):
                # the product's `soundalike index adapt` (models.adapt, method normalize)
                from soundalike.models import adapt

                dims = tuple(_pooled(patch_sets[:1], b, self.how).shape[1] for b in self.blocks)
                # adapt[DIM][n K][p A]: K > 0 adds the mutual-neighbour step (`index adapt`'s default
                # K = 5); A < 1 takes the signed power A of the mean-pool blocks (`.avg`) first, of
                # the stored (block-normalised) vectors, as `index adapt --power A` does
                rest, _, p_ = step[5:].partition("p")
                d_, _, k_ = rest.partition("n")
                pw = tuple(float(p_) if b.split("@")[0].endswith(".avg") else 1.0 for b in self.blocks) if p_ else None
                a = adapt.fit(X, base_model_id="bench", method="normalize", blocks=dims,
                              dim=int(d_ or 256), neighbours=int(k_ or 0), power=pw)
                f = a.apply
            elif step.startswith("dba"):
                f = _dba(int(step[3:] or 3))
            elif step.startswith("plda"):
                f = _pseudo_label_lda(X, int(step[4:] or 20), seed=seed)
            elif step.startswith("mnn"):  # mnn{k}[w{weight}]
                k, _, w = step[3:].partition("w")
                f = _mutual_nn_lpp(X, X, np.arange(len(X)), int(k or 10), weight=float(w or 0.5))
            elif step.startswith("smnn"):
                seg_sets, seg_owner = fit_segments(patch_sets, select=budget)
                if len(seg_sets) < 2:
                    from soundalike.errors import ConfigError

                    raise ConfigError("too few multi-patch segments to pair")
                Z = self._blocks(seg_sets, None, fit=False)
                for g in self.steps:
                    Z = g(Z)
                f = _mutual_nn_lpp(X, Z, seg_owner, int(step[4:] or 5))
            else:
                raise ValueError(f"unknown post step {step!r}")
            X = f(X)
            if fit_sets is not None and not step.startswith(("lda", "con")):
                fit_sets = f(fit_sets)
            self.steps.append(f)
        self.X = X.astype(np.float32)

    def _blocks(self, patch_sets, select, *, fit: bool) -> np.ndarray:
        parts = []
        for b in self.blocks:
            B = _pooled(patch_sets, b, self.how, select)
            if "bz" in self.post or b.split("@")[0] == "cepcov":  # a covariance needs scaling per entry
                if fit:
                    self.bz[b] = (B.mean(0), B.std(0) + 1e-6)
                mu, sd = self.bz[b]
                B = (B - mu) / sd
            parts.append(block_weight(b) * l2n(B))
        total = np.sqrt(sum(block_weight(b) ** 2 for b in self.blocks))
        return (np.concatenate(parts, axis=1) / total).astype(np.float32)

    def transform(self, patch_sets: list[dict[str, np.ndarray]]) -> np.ndarray:
        X = self._blocks(patch_sets, None, fit=False)
        for f in self.steps:
            if getattr(f, "catalog_only", False):
                continue
            X = f(X)
        return X.astype(np.float32)


def _fit_simple(step: str, X: np.ndarray):
    if step == "z":
        mu, sd = X.mean(0), X.std(0) + 1e-6
        return lambda Y: ((Y - mu) / sd).astype(np.float32)
    if step == "center":
        mu = X.mean(0)
        return lambda Y: (Y - mu).astype(np.float32)
    if step == "l2":
        return l2n
    if step.startswith("pca") and not step.startswith("pcaw"):
        k = int(step[3:])
        mu = X.mean(0)
        _, _, Vt = np.linalg.svd((X - mu).astype(np.float64), full_matrices=False)
        P = Vt[:k].T.astype(np.float32)
        return lambda Y: ((Y - mu) @ P).astype(np.float32)
    if step.startswith("pcaw"):
        keep = float(step[4:]) / 100 if len(step) > 4 else 0.99
        mu = X.mean(0)
        _, S, Vt = np.linalg.svd((X - mu).astype(np.float64), full_matrices=False)
        var = S**2 / len(X)
        k = int(np.searchsorted(np.cumsum(var) / var.sum(), keep) + 1)
        P = (Vt[:k].T / np.sqrt(var[:k] + 1e-3 * var[0])).astype(np.float32)
        return lambda Y: ((Y - mu) @ P).astype(np.float32)
    raise ValueError(step)


def _dba(k: int):
    """Database-side augmentation: each catalog vector becomes the similarity-weighted mean
    of itself and its ``k`` nearest catalog neighbours (catalog only; queries from outside
    keep their own vector)."""
    def f(X: np.ndarray) -> np.ndarray:
        Xn = l2n(X)
        S = Xn @ Xn.T
        nn = np.argsort(-S, axis=1)[:, : k + 1]
        w = np.take_along_axis(S, nn, 1).clip(0)
        return l2n((w[:, :, None] * Xn[nn]).sum(1))
    f.catalog_only = True
    return f


def _pseudo_label_lda(X: np.ndarray, k: int, *, seed: int = 0, weight: float = 0.5):
    """Label-free "soundtrack discovery": k-means clusters of the catalog's own track vectors
    taken as classes, a shrunk LDA fitted on them, and its (unit-length) directions appended to
    each vector at ``weight`` (tracks of one cluster move together, nothing else moves)."""
    from sklearn.cluster import KMeans
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    Xn = l2n(X)
    clusters = KMeans(k, n_init=10, random_state=seed).fit_predict(Xn)
    lda = LinearDiscriminantAnalysis(n_components=min(k - 1, Xn.shape[1]), solver="eigen",
                                     shrinkage=0.5).fit(Xn, clusters)

    def f(Y: np.ndarray) -> np.ndarray:
        Yn = l2n(Y)
        return np.hstack([Yn, weight * l2n(lda.transform(Yn).astype(np.float32))]).astype(np.float32)
    return f


def _mutual_nn_lpp(X: np.ndarray, Z: np.ndarray, owner: np.ndarray, k: int, *, weight: float = 0.5,
                   shrink: float = 0.1):
    """Label-free "what the catalog already hears as alike": positives are *mutual* k-nearest
    neighbours among ``Z`` (the catalog's track vectors, or its segments) from *different*
    tracks (``owner``), and a locality-preserving projection keeps them together: the
    directions along which positive pairs differ least relative to the catalog's total
    spread (generalised eigenproblem, shrunk; closed form, deterministic).  Those directions
    (unit length) are appended to each vector at ``weight``, as ``plda`` does, so pairs the
    catalog agrees on move closer and nothing else is lost."""
    Zn = l2n(Z).astype(np.float64)
    S = Zn @ Zn.T
    S[owner[:, None] == owner[None, :]] = -np.inf  # never a pair within one track
    nn = np.argsort(-S, axis=1)[:, :k]
    is_nn = np.zeros(S.shape, bool)
    np.put_along_axis(is_nn, nn, True, axis=1)
    a, b = np.nonzero(np.triu(is_nn & is_nn.T, 1))
    if len(a) < 2:
        return l2n
    D = Zn[a] - Zn[b]
    Sp = D.T @ D / len(a)
    C = np.cov(Zn, rowvar=False)
    d = C.shape[0]
    C = (1 - shrink) * C + shrink * np.trace(C) / d * np.eye(d)
    Sp = (1 - shrink) * Sp + shrink * np.trace(Sp) / d * np.eye(d)
    # max w'Cw / w'Sp w: with Sp = R R', w = R^-T u and u the top eigenvectors of R^-1 C R^-T
    Rinv = np.linalg.solve(np.linalg.cholesky(Sp), np.eye(d))
    _, V = np.linalg.eigh(Rinv @ C @ Rinv.T)
    m = max(8, min(64, d // 2))
    W = (Rinv.T @ V[:, ::-1][:, :m]).astype(np.float32)
    mu = Zn.mean(0).astype(np.float32)

    def f(Y: np.ndarray) -> np.ndarray:
        Yn = l2n(Y)
        return np.hstack([Yn, weight * l2n((Yn - mu) @ W)]).astype(np.float32)
    f.pairs = len(a)
    return f


def variant_vectors(v: str, patch_sets: list[dict[str, np.ndarray]], select=None) -> np.ndarray:
    """Track vectors ``(n, d)`` of variant ``v`` (catalog steps fitted on these tracks)."""
    return Pipeline(v, patch_sets, select=select).X


def budget(n: int) -> np.ndarray:
    """~BUDGET_PATCHES patch indices spread evenly over a track of ``n`` patches."""
    return np.unique(np.round(np.linspace(0, n - 1, min(n, BUDGET_PATCHES))).astype(int))


# --------------------------------------------------------------------------- metrics


def split_rerank(v: str) -> tuple[str, dict | None]:
    """``(variant without its search-time step, re-rank settings or None)``.

    ``rr[POOL][kNEIGHBOURS][aALPHA]`` (last step of a variant, e.g. ``fusion|adapt256n5|rr50k10a0.9``;
    plain ``rr`` = the product's defaults): the search re-ranks each query's ``POOL`` nearest by
    diffusion over their mutual-neighbour graph (:mod:`soundalike.search.rerank`); the vectors
    are unchanged.
    """
    import re

    from soundalike.search import rerank

    head, _, last = v.rpartition("|")
    m = re.fullmatch(r"rr(\d+)?(?:k(\d+))?(?:a([\d.]+))?", last) if head else None
    if m is None:
        return v, None
    return head, {"pool": int(m.group(1) or rerank.POOL), "neighbours": int(m.group(2) or rerank.NEIGHBOURS),
                  "alpha": float(m.group(3) or rerank.ALPHA)}


def ranked_neighbours(X: np.ndarray, k: int, rr: dict | None = None) -> np.ndarray:
    """int ``(n, k)``: each item's k nearest others by cosine, re-ranked as the search would
    with ``rr`` (:func:`split_rerank`)."""
    Xn = l2n(X)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    if rr is None:
        return np.argsort(-S, axis=1, kind="stable")[:, :k]
    from soundalike.search.rerank import rerank_order

    pool = min(max(k, rr["pool"]), len(S) - 1)  # never the item itself (its own score is -inf)
    out = np.zeros((len(S), k), np.int64)
    for i in range(len(S)):
        cand = np.argsort(-S[i], kind="stable")[:pool]
        order = rerank_order(query=Xn[i], candidates=Xn[cand], cosines=S[i, cand],
                             neighbours=rr["neighbours"], alpha=rr["alpha"])
        out[i] = cand[order][:k]
    return out


def precision_at_k(X: np.ndarray, labels: np.ndarray, k: int = 10, rr: dict | None = None) -> float:
    """Mean share of same-label items among each item's k nearest others (cosine, or
    re-ranked as the search does with ``rr``)."""
    nn = ranked_neighbours(X, k, rr)
    return float((labels[nn] == labels[:, None]).mean())


def group_precision(nn: np.ndarray, groups: np.ndarray, k: int = 10) -> dict[str, dict[str, float]]:
    """Per group (a label, or any other partition of the items; ``""`` is no group): the mean
    share of its items' ``k`` nearest ``nn`` that are in the group, its ceiling (all the
    group's other items, at most ``k``) and chance (a random ``k`` of the others)."""
    out = {}
    for g in sorted(set(groups.tolist()) - {""}):
        idx = np.flatnonzero(groups == g)
        out[g] = {"n": int(len(idx)), "p10": float((groups[nn[idx]] == g).mean()),
                  "ceiling": min(len(idx) - 1, k) / k, "chance": (len(idx) - 1) / (len(groups) - 1)}
    return out


def print_groups(title: str, stats: dict[str, dict[str, float]]) -> None:
    print(f"    {title}: " + ", ".join(f"{g} ({s['n']}) {s['p10']:.2f} of {s['ceiling']:.2f} "
                                      f"[chance {s['chance']:.2f}]" for g, s in stats.items()), flush=True)


def ceiling_chance(labels: np.ndarray, k: int = 10) -> tuple[float, float]:
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    same = counts[inv] - 1
    return float(np.mean(np.minimum(same, k) / k)), float(np.mean(same / (len(labels) - 1)))


def p10_through_similar(X: np.ndarray, tracks: list[Track], *, k: int = 10, name: str = "bench",
                        rerank: bool = False) -> float:
    """Same-label P@k asking ``soundalike.similar`` of a real catalog holding ``X`` (its
    diffusion re-rank on or off: ``rerank``)."""
    import soundalike
    from soundalike.catalog.store import Catalog
    from soundalike.search.sync import forget_cached

    with tempfile.TemporaryDirectory() as d:
        cat = Catalog.open(Path(d) / "bench.sqlite")
        try:
            mid = f"{name}-vectors"
            cat.register_model(model_id=mid, name=name, dim=X.shape[1])
            label_of = {}
            with cat.transaction():
                for t, x in zip(tracks, X, strict=True):
                    tid = cat.upsert_track(path=str(t.path), content_hash=str(t.path), size=0, mtime=0.0)
                    cat.put_analysis(tid, mid, x)
                    label_of[tid] = t.label
            hits = 0
            for tid, lab in label_of.items():
                res = soundalike.similar(tid, k=k, model=mid, catalog=cat, rerank=rerank)
                hits += sum(label_of[h.track.id] == lab for h in res)
            return hits / (k * len(label_of))
        finally:
            cat.close()
            forget_cached(Path(d) / "bench.sqlite")


def segment_p1(tracks: list[Track], pipe: Pipeline, rr: dict | None = None) -> float:
    """Share of 30-s segments whose nearest other segment is from the same track (the
    nearest after the re-rank ``rr`` where given)."""
    segs, owner = [], []
    for i, t in enumerate(tracks):
        n = t.n_patches // SEGMENT_PATCHES
        if n < 2:
            continue
        for s in range(n):
            sl = slice(s * SEGMENT_PATCHES, (s + 1) * SEGMENT_PATCHES)
            segs.append({k: a[sl] for k, a in t.arrays.items() if a.ndim == 2})
            owner.append(i)
    owner = np.asarray(owner)
    nn = ranked_neighbours(pipe.transform(segs), 1, rr)[:, 0]
    return float((owner[nn] == owner).mean())


def lr_accuracy(X: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0) -> float:
    """5-fold track-level logistic regression on the L2-normalised vectors (as cosine sees
    them; no per-dimension scaling, which would blow up a PCA's near-empty directions)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    X = l2n(X)
    _, counts = np.unique(labels, return_counts=True)
    folds = min(folds, int(counts.min()))
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    correct = 0
    for tr, te in skf.split(X, labels):
        clf = LogisticRegression(max_iter=3000, C=10.0)
        clf.fit(X[tr], labels[tr])
        correct += int((clf.predict(X[te]) == labels[te]).sum())
    return correct / len(labels)


# --------------------------------------------------------------------------- cost


COST_MODELS = ("MTT_musicnn", "MSD_musicnn", "MTT_vgg", "MSD_vgg")


def network_cost(files: list[Path], *, models=COST_MODELS, rounds: int = 5, per_call: int = 6
                 ) -> dict[str, dict[str, float]]:
    """ms per 3-s patch of each network, measured side by side in one run.

    The log-mel patches of ``files`` are computed once; each round runs every network on
    all of them in calls of ``per_call`` patches (ingest's analysis budget is 6 spread
    patches a track) and of 32 (a whole-file analysis), the networks interleaved so that
    all see the same machine load.  Returns ``{model: {"ms_per_patch_6": median over
    rounds, "ms_per_patch_32": ...}}``.
    """
    from soundalike.audio.io import load
    from soundalike.models.pretrained import load as load_model

    nets = {m: load_model(m) for m in models}
    first = nets[models[0]]
    P = np.concatenate([first.patches(load(f, sr=first.sample_rate).y, first.sample_rate) for f in files])
    P = P[: 96].astype(np.float32)
    times: dict[str, dict[int, list[float]]] = {m: {per_call: [], 32: []} for m in models}
    for m in nets.values():  # warm-up: thread pools, oneDNN kernels
        m.run_patches(P[:per_call], batch_size=per_call)
    for _ in range(rounds):
        for name, m in nets.items():
            for n in (per_call, 32):
                calls = range(0, len(P) - min(n, len(P)) + 1, n)  # at least one call
                t0 = time.perf_counter()
                for s in calls:
                    m.run_patches(P[s : s + n], batch_size=n)
                done = sum(len(P[s : s + n]) for s in calls)
                times[name][n].append((time.perf_counter() - t0) * 1e3 / done)
    return {name: {f"ms_per_patch_{n}": float(np.median(v)) for n, v in t.items()} for name, t in times.items()}


# --------------------------------------------------------------------------- main


def evaluate(v_full: str, tracks: list[Track], phil: list[Track], *, through_similar: bool,
             groups: dict[str, np.ndarray] | None = None) -> dict:
    """One variant's row; ``groups``: row key -> a partition of ``tracks`` (one name per track,
    ``""`` for none) whose :func:`group_precision` the row also gets."""
    v, rr = split_rerank(v_full)
    labels = np.asarray([t.label for t in tracks])
    sets = [t.arrays for t in tracks]
    pipe = Pipeline(v, sets)
    X = pipe.X
    Xb = variant_vectors(v, sets, select=budget)
    row = {"variant": v_full, "dim": int(X.shape[1])}
    row["p10"] = (p10_through_similar(X, tracks, rerank=rr is not None) if through_similar
                  else precision_at_k(X, labels, rr=rr))
    row["p10_s10"] = precision_at_k(Xb, labels, rr=rr)
    row["seg_p1"] = segment_p1(tracks, pipe, rr)
    row["lr_acc"] = lr_accuracy(X, labels)
    if groups:
        nn = ranked_neighbours(X, 10, rr)
        for key, names in groups.items():
            row[key] = group_precision(nn, names)
    if phil:
        from soundalike.errors import ConfigError

        pl = np.asarray([t.label for t in phil])
        psets = [t.arrays for t in phil]
        try:
            PX = variant_vectors(v, psets)
            row["phil_fit"] = "own"
        except ConfigError:  # notes too short to fit an adaptation on: the main catalog's
            PX = pipe.transform(psets)
            row["phil_fit"] = "main"
        row["phil_p10"] = precision_at_k(PX, pl, rr=rr)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path, help="a folder per label, or a CSV with path,label columns")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated variant specs")
    ap.add_argument("--philharmonia", type=Path, default=PHILHARMONIA, help="'' to skip")
    ap.add_argument("--compute", action="store_true", help="compute missing per-patch features (heavy)")
    ap.add_argument("--fast", action="store_true", help="P@10 in numpy instead of through soundalike.similar")
    ap.add_argument("--loso", action="store_true",
                    help="also leave each label out in turn: P@10 on the others, the variant fitted on them")
    ap.add_argument("--loso-philharmonia", action="store_true",
                    help="also leave each instrument out in turn: P@10 on the other notes, the variant fitted on them")
    ap.add_argument("--halves", type=int, default=0, metavar="N",
                    help="also N random halves of the set (seeded): P@10 on each, the variant fitted on it "
                         "(a sparser catalog: about half as many tracks of each label)")
    ap.add_argument("--per-label", action="store_true",
                    help="also each label's P@10 (numpy) beside its ceiling and chance")
    ap.add_argument("--name-groups", default="", metavar="SUB[,SUB...]",
                    help="also, for each substring, the tracks whose file name holds it as a group "
                         "(e.g. one composer's tracks): the share of their 10 nearest in the group; "
                         "a list that starts with '-' is given as --name-groups=-jt,-ks")
    ap.add_argument("--cost", action="store_true",
                    help="only measure ms per patch of each network (musicnn and vgg, side by side) "
                         "on the first tracks of DATA, then stop")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.cost:
        _, rows = read_labelled(args.data)
        cost = network_cost([p for p, _ in rows[:3]])
        base = cost[COST_MODELS[0]]
        print(f"{'network':12} {'ms/patch (6 a call)':>20} {'ms/patch (32 a call)':>21} {'x MTT_musicnn':>14}")
        for name, c in cost.items():
            print(f"{name:12} {c['ms_per_patch_6']:20.1f} {c['ms_per_patch_32']:21.1f} "
                  f"{c['ms_per_patch_6'] / base['ms_per_patch_6']:14.2f}")
        print(f"load {open('/proc/loadavg').read().split()[0]}, {os.cpu_count()} CPUs")
        if args.json:
            args.json.write_text(json.dumps(cost, indent=2))
        return 0

    t0 = time.perf_counter()
    tracks = load_tracks(args.data, compute=args.compute)
    phil = load_tracks(args.philharmonia, compute=args.compute) if str(args.philharmonia) not in ("", ".") else []
    labels = np.asarray([t.label for t in tracks])
    ceil, chance = ceiling_chance(labels)
    print(f"{args.data}: {len(tracks)} tracks, {len(set(labels))} labels, "
          f"{sum(t.n_patches for t in tracks)} patches; P@10 ceiling {ceil:.3f}, chance {chance:.3f}")
    if phil:
        pc, pch = ceiling_chance(np.asarray([t.label for t in phil]))
        print(f"philharmonia: {len(phil)} notes; P@10 ceiling {pc:.3f}, chance {pch:.3f}")
    groups: dict[str, np.ndarray] = {}
    if args.per_label:
        groups["per_label"] = labels
    if args.name_groups:
        subs = [x.strip() for x in args.name_groups.split(",") if x.strip()]
        names = np.asarray([next((x for x in subs if x in t.path.name), "") for t in tracks])
        for x in subs:
            n = int((names == x).sum())
            if n < 2:
                held = sum(x in t.path.name for t in tracks)
                print(f"--name-groups {x!r}: {held} file name(s) hold it"
                      + (f", {held - n} of them taken by a substring before it" if held > n else "")
                      + "; a group needs two tracks: left out", file=sys.stderr)
                names[names == x] = ""
        if (names != "").any():
            groups["name_groups"] = names
    print(f"{'variant':46} {'dim':>5} {'P@10':>6} {'P@10 s10':>8} {'seg P@1':>7} {'LR acc':>6} {'phil P@10':>9}")
    rows = []
    for v in [s.strip() for s in args.variants.split(",") if s.strip()]:
        r = evaluate(v, tracks, phil, through_similar=not args.fast, groups=groups)
        rows.append(r)
        print(f"{v:46} {r['dim']:5d} {r['p10']:6.3f} {r['p10_s10']:8.3f} {r['seg_p1']:7.3f} "
              f"{r['lr_acc']:6.3f} {r.get('phil_p10', float('nan')):9.3f}"
              f"{'*' if r.get('phil_fit') == 'main' else ''}", flush=True)
        if "per_label" in r:
            print_groups("per label, P@10 of its ceiling", r["per_label"])
        if "name_groups" in r:
            print_groups("file-name groups, share of the 10 nearest in the group", r["name_groups"])
        if args.loso:
            r["loso"] = {}
            base, rr = split_rerank(v)
            for lab in sorted(set(labels)):
                keep = [t for t in tracks if t.label != lab]
                kl = np.asarray([t.label for t in keep])
                r["loso"][lab] = precision_at_k(variant_vectors(base, [t.arrays for t in keep]), kl, rr=rr)
            print("    leave one out: " + ", ".join(f"{k} {x:.3f}" for k, x in r["loso"].items()), flush=True)
        if args.loso_philharmonia and phil:
            base, rr = split_rerank(v)
            plabels = np.asarray([t.label for t in phil])
            r["loso_philharmonia"] = {}
            for lab in sorted(set(plabels)):
                keep = [t for t in phil if t.label != lab]
                kl = np.asarray([t.label for t in keep])
                r["loso_philharmonia"][lab] = precision_at_k(variant_vectors(base, [t.arrays for t in keep]), kl,
                                                             rr=rr)
            print("    Philharmonia, leave one out: "
                  + ", ".join(f"{k} {x:.3f}" for k, x in r["loso_philharmonia"].items()), flush=True)
        if args.halves:
            base, rr = split_rerank(v)
            rng = np.random.default_rng(0)  # the same halves for every variant
            r["halves"] = []
            for _ in range(args.halves):
                ix = rng.choice(len(tracks), len(tracks) // 2, replace=False)
                keep = [tracks[i] for i in ix]
                kl = np.asarray([t.label for t in keep])
                r["halves"].append(precision_at_k(variant_vectors(base, [t.arrays for t in keep]), kl, rr=rr))
            print(f"    {args.halves} random halves: mean {np.mean(r['halves']):.3f}, "
                  + " ".join(f"{x:.3f}" for x in r["halves"]), flush=True)
    if any(r.get("phil_fit") == "main" for r in rows):
        print("* Philharmonia notes are too short to fit an adaptation on: the one fitted on the main set is applied")
    print(f"targets: P@10 >= 0.70, seg P@1 >= 0.90, phil P@10 >= baseline; "
          f"{time.perf_counter() - t0:.0f} s, load {open('/proc/loadavg').read().split()[0]}")
    if args.json:
        args.json.write_text(json.dumps({"ceiling": ceil, "chance": chance, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
