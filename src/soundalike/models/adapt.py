"""Catalog adaptation without labels: fit a projection of a frozen embedding to *this*
catalog, from the catalog's own vectors.

A pretrained tagger's layer spends much of its variance on what every track of a
catalog shares and on what changes *within* a track.  Three methods, none uses labels:

``normalize`` (the default of ``soundalike index adapt``)
    Per-dimension z-scoring over the catalog's track vectors, each block of a fused
    embedding re-normalised to unit length (so blocks keep weighing the same), then PCA to
    at most ``dim`` dimensions.  Then (``neighbours`` > 0, the default 5) what the catalog
    already hears as alike is pulled closer: pairs of tracks that are each other's
    ``neighbours`` nearest (*mutual* nearest neighbours) are positives, and a
    locality-preserving projection (the directions along which those pairs differ least
    relative to the catalog's whole spread; closed form) is appended to each vector at half
    weight.  Fitted on the track vectors the catalog already stores, deterministic, seconds
    for 10k tracks.  The one that measured best (``benchmarks/bench_similarity.py``;
    README, "Similarity").
``lda``
    Linear discriminant analysis with each track as its own class: directions that keep
    segments of one track together and tracks apart, whitened by the within-track scatter
    (closed form, deterministic, seconds for 10k tracks).
``contrastive``
    A linear map trained with InfoNCE: two views of a track (means of random patches far
    apart in time, with feature dropout and noise) are positives, other tracks in the
    batch negatives (seeded, a minute or two on a CPU for 10k tracks).

``lda`` and ``contrastive`` are fitted on per-segment vectors (means of a few patches of
one track) and, measured, sharpen *same-track* retrieval but lower *same-label*
precision; they stay available to the library and the benchmark.  Every method maps a
track vector ``(d,)`` (what the catalog stores) to ``(k,)``, so no audio is decoded again.  An :class:`Adaptation` names itself with a model id of its own
(``<base model id>+adapt-<hash>``), so its vectors never mix with the base model's.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> segs = rng.normal(size=(40, 8)).astype(np.float32)
>>> owner = np.repeat(np.arange(10), 4)
>>> a = fit(segs, owner, base_model_id="demo-1", method="lda", dim=4)
>>> a.apply(segs).shape
(40, 4)
>>> fit(segs, base_model_id="demo-1", dim=5).apply(segs[:2]).shape
(2, 5)
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from soundalike.errors import ConfigError

Method = Literal["normalize", "lda", "contrastive"]
METHODS: tuple[str, ...] = ("normalize", "lda", "contrastive")
#: Bumped when fitting changes in a way that moves the vectors (part of the adapted id).
ADAPT_VERSION = "1"


#: What joins a base model id and an adaptation's hash in the adapted model's id.
ID_MARK = "+adapt-"


def base_model_id_of(model_id: str) -> str | None:
    """The base model id an adapted model id (``<base id>+adapt-<hash>``) names; None if
    ``model_id`` is not an adaptation's."""
    base, mark, _ = model_id.rpartition(ID_MARK)
    return base if mark and base else None


@dataclass(frozen=True)
class Adaptation:
    """A fitted projection of one base model's track vectors.

    Attributes
    ----------
    base_model_id : the model whose vectors it maps
    method : one of :data:`METHODS`
    mean : float32 ``(d,)`` subtracted first
    scale : float32 ``(d,)`` per-dimension scale applied after centring (z-score)
    W : float32 ``(d, k)`` projection
    blocks : lengths of the blocks re-normalised to unit length after z-scoring (empty: none)
    center : float32 ``(d,)`` subtracted after the block step, before ``W``
    params : how it was fitted (method settings, seed, numbers of tracks/segments)
    power : float32 ``(d,)``: the signed power ``sign(x) |x|^p`` taken of each base dimension
        first (power normalisation; None: none, as every adaptation fitted before the step existed)
    """

    base_model_id: str
    method: str
    mean: np.ndarray
    scale: np.ndarray
    W: np.ndarray
    params: dict = field(default_factory=dict)
    blocks: tuple[int, ...] = ()
    center: np.ndarray | None = None
    #: the neighbour step (``normalize`` with ``neighbours``): ``lpp_W`` float32 ``(k, m)``
    #: applied to the unit-length PCA vector minus ``lpp_mean`` ``(k,)``, its unit-length
    #: result appended at ``lpp_weight``; None: no such step
    lpp_mean: np.ndarray | None = None
    lpp_W: np.ndarray | None = None
    lpp_weight: float = 0.5
    power: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.W.shape[1]) + (0 if self.lpp_W is None else int(self.lpp_W.shape[1]))

    @property
    def in_dim(self) -> int:
        return int(self.W.shape[0])

    @functools.cached_property
    def digest(self) -> str:
        """A hash of the fitted projection (computed once: ingest asks it for every track)."""
        h = hashlib.sha256()
        h.update(f"{ADAPT_VERSION};{self.base_model_id};{self.method};{self.blocks}".encode())
        for a in (self.mean, self.scale, self.W, *([] if self.center is None else [self.center])):
            h.update(np.ascontiguousarray(a, np.float32).tobytes())
        if self.lpp_W is not None:  # absent: the id of an adaptation fitted before the step existed
            h.update(f"lpp;{self.lpp_weight!r}".encode())
            for a in (self.lpp_mean, self.lpp_W):
                h.update(np.ascontiguousarray(a, np.float32).tobytes())
        if self.power is not None:  # likewise: none keeps the ids of the adaptations made before
            h.update(b"power;" + np.ascontiguousarray(self.power, np.float32).tobytes())
        return h.hexdigest()[:10]

    @property
    def model_id(self) -> str:
        """``<base model id>+adapt-<hash of the fitted projection>``."""
        return f"{self.base_model_id}{ID_MARK}{self.digest}"

    def apply(self, X: np.ndarray) -> np.ndarray:
        """Map base vectors float32 ``(n, d)`` (or ``(d,)``) to adapted ``(n, k)`` (or ``(k,)``)."""
        X = np.asarray(X, np.float32)
        if X.shape[-1] != self.in_dim:
            raise ConfigError(f"adaptation of {self.base_model_id} takes {self.in_dim}-d vectors, "
                              f"got {X.shape[-1]}-d")
        Z = (signed_power(X, self.power) - self.mean) * self.scale
        if self.blocks:
            Z = _block_normalize(Z, self.blocks)
        if self.center is not None:
            Z = Z - self.center
        Y = (Z @ self.W).astype(np.float32)
        if self.lpp_W is None:
            return Y
        Yn = _unit(Y)
        return np.concatenate([Yn, self.lpp_weight * _unit((Yn - self.lpp_mean) @ self.lpp_W)],
                              axis=-1).astype(np.float32)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        center = self.center if self.center is not None else np.zeros(0, np.float32)
        extra = {} if self.lpp_W is None else {"lpp_mean": self.lpp_mean, "lpp_W": self.lpp_W}
        if self.power is not None:
            extra["power"] = self.power
        np.savez(buf, mean=self.mean, scale=self.scale, W=self.W, center=center, **extra,
                 meta=np.asarray(json.dumps({"base_model_id": self.base_model_id, "method": self.method,
                                             "params": self.params, "blocks": list(self.blocks),
                                             "lpp_weight": self.lpp_weight, "version": ADAPT_VERSION})))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Adaptation:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            center = z["center"].astype(np.float32) if "center" in z.files and z["center"].size else None
            lpp = "lpp_W" in z.files
            return cls(meta["base_model_id"], meta["method"], z["mean"].astype(np.float32),
                       z["scale"].astype(np.float32), z["W"].astype(np.float32), meta.get("params", {}),
                       tuple(int(b) for b in meta.get("blocks", ())), center,
                       z["lpp_mean"].astype(np.float32) if lpp else None,
                       z["lpp_W"].astype(np.float32) if lpp else None,
                       float(meta.get("lpp_weight", 0.5)),
                       z["power"].astype(np.float32) if "power" in z.files else None)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> Adaptation:
        return cls.from_bytes(Path(path).read_bytes())


def signed_power(X: np.ndarray, power: np.ndarray | None) -> np.ndarray:
    """``sign(x) |x|^p`` with ``p = power[j]`` for the last axis' dimension ``j``, float32
    (``power`` None: ``X`` itself).

    Power normalisation: it shrinks the few large values of a pooled activation vector
    towards the many small ones, so that no handful of dimensions decides a cosine.
    """
    X = np.asarray(X, np.float32)
    if power is None:
        return X
    return (np.sign(X) * np.power(np.abs(X), power)).astype(np.float32)


def power_vector(power: float | tuple[float, ...] | None, d: int, blocks: tuple[int, ...] = ()
                 ) -> np.ndarray | None:
    """The per-dimension exponents of ``power`` for ``d``-d vectors: one for all, or one per
    block of ``blocks``; None where every exponent is 1 (no step)."""
    if power is None:
        return None
    if isinstance(power, (int, float)):
        p = np.full(d, float(power), np.float32)
    else:
        if len(power) != len(blocks) or sum(blocks) != d:
            raise ConfigError(f"{len(power)} block powers for blocks {blocks} of {d}-d vectors")
        p = np.concatenate([np.full(b, float(a), np.float32) for a, b in zip(power, blocks)])
    if not ((p > 0) & (p <= 1)).all():
        raise ConfigError(f"powers must be in (0, 1], got {sorted(set(p.tolist()))}")
    return None if (p == 1).all() else p


def _unit(Z: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(Z, axis=-1, keepdims=True)
    return (Z / np.maximum(n, 1e-12)).astype(np.float32)


def mutual_neighbours(Y: np.ndarray, k: int, *, chunk: int = 2048) -> np.ndarray:
    """Pairs ``(p, 2)`` int64 ``i < j`` of rows of ``Y`` ``(n, d)`` that are each other's ``k``
    nearest by cosine (self excluded); chunked, so 10k rows never hold an n x n matrix."""
    Yn = _unit(np.asarray(Y, np.float32))
    n = len(Yn)
    k = int(min(k, n - 1))
    nn = np.empty((n, k), np.int64)
    for a in range(0, n, chunk):
        S = Yn[a : a + chunk] @ Yn.T
        S[np.arange(len(S)), np.arange(a, a + len(S))] = -np.inf
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        nn[a : a + chunk] = top
    i = np.repeat(np.arange(n), k)
    j = nn.reshape(-1)
    mutual = (nn[j] == i[:, None]).any(axis=1) & (i < j)
    return np.stack([i[mutual], j[mutual]], axis=1)


def fit_neighbour_lpp(Y: np.ndarray, *, neighbours: int = 5, shrink: float = 0.1, max_dim: int = 64
                      ) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """The neighbour step: ``(lpp_mean (k,), lpp_W (k, m), params)``, or None without pairs.

    ``Y`` float32 ``(n, k)`` are the catalog's PCA vectors.  With mutual-neighbour pair
    differences scattering as ``Sp`` and all vectors as ``C`` (both shrunk towards their
    diagonal average), the ``m = min(max_dim, k // 2)`` directions ``w`` with the largest
    ``w'Cw / w'Sp w`` (``Sp = R R'``, ``w = R^-T u``, ``u`` the top eigenvectors of
    ``R^-1 C R^-T``): along them the catalog spreads but its agreed neighbours stay close.
    """
    Yn = _unit(np.asarray(Y, np.float32)).astype(np.float64)
    n, d = Yn.shape
    if n < 4 or d < 2:
        return None
    pairs = mutual_neighbours(Yn.astype(np.float32), neighbours)
    if len(pairs) < 2:
        return None
    D = Yn[pairs[:, 0]] - Yn[pairs[:, 1]]
    Sp = D.T @ D / len(D)
    C = np.cov(Yn, rowvar=False)
    eye = np.eye(d)
    C = (1 - shrink) * C + shrink * np.trace(C) / d * eye
    Sp = (1 - shrink) * Sp + shrink * max(np.trace(Sp) / d, 1e-12) * eye
    Rinv = np.linalg.solve(np.linalg.cholesky(Sp), eye)
    _, V = np.linalg.eigh(Rinv @ C @ Rinv.T)
    m = int(max(1, min(max_dim, d // 2)))
    W = Rinv.T @ V[:, ::-1][:, :m]
    # a fixed sign per direction (eigh's signs are arbitrary): the id must not depend on them
    W *= np.where(W[np.abs(W).argmax(0), np.arange(m)] < 0, -1.0, 1.0)
    return (Yn.mean(0).astype(np.float32), W.astype(np.float32),
            {"neighbours": int(neighbours), "pairs": int(len(pairs)), "lpp_dim": m, "shrink": shrink})


def _block_normalize(Z: np.ndarray, blocks: tuple[int, ...]) -> np.ndarray:
    """Each block of the last axis L2-normalised, the whole scaled by ``1/sqrt(n_blocks)``."""
    if sum(blocks) != Z.shape[-1]:
        raise ConfigError(f"blocks {blocks} do not add up to the vector length {Z.shape[-1]}")
    parts, start = [], 0
    for b in blocks:
        p = Z[..., start : start + b]
        n = np.linalg.norm(p, axis=-1, keepdims=True)
        parts.append(p / np.maximum(n, 1e-12))
        start += b
    return (np.concatenate(parts, axis=-1) / np.sqrt(len(blocks))).astype(np.float32)


def fit_normalize(X: np.ndarray, *, dim: int = 256, blocks: tuple[int, ...] = ()
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Catalog z-scoring, block re-normalisation and PCA: ``(mean, scale, center, W, params)``.

    ``X`` float32 ``(n, d)`` are the catalog's track vectors; ``W`` is ``(d, k)`` with
    ``k = min(dim, n - 1, d)`` principal directions (no whitening: measured, whitening
    blew up noise directions and lost same-label precision).
    """
    X = np.asarray(X, np.float32)
    if X.ndim != 2 or len(X) < 3:
        raise ConfigError(f"adaptation needs at least 3 track vectors, got {X.shape[0] if X.ndim == 2 else 0}")
    mean, scale = _standardise(X)
    Z = (X - mean) * scale
    if blocks:
        Z = _block_normalize(Z, blocks)
    center = Z.mean(0).astype(np.float32)
    k = int(min(dim, len(X) - 1, X.shape[1]))
    W = _top_directions((Z - center).astype(np.float64), k)
    return mean, scale, center, W, {"dim": k}


def _top_directions(Z: np.ndarray, k: int, *, oversample: int = 32, power: int = 3) -> np.ndarray:
    """float32 ``(d, k)``: the ``k`` leading right singular vectors of ``Z`` ``(n, d)``.

    Small problems take the exact SVD; large ones a seeded randomized range finder
    (Halko, Martinsson & Tropp 2011) with ``power`` subspace iterations: ``O(n d k)``
    instead of ``O(n d^2)`` (10k x 1906 -> 256 in seconds rather than minutes), and the
    same input always gives the same directions.
    """
    n, d = Z.shape
    if min(n, d) <= 2 * (k + oversample):
        _, _, Vt = np.linalg.svd(Z, full_matrices=False)
        return Vt[:k].T.astype(np.float32)
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(Z.T @ rng.standard_normal((n, k + oversample)))[0]  # (d, k+p): row space
    for _ in range(power):
        Q = np.linalg.qr(Z.T @ (Z @ Q))[0]
    _, _, Vt = np.linalg.svd(Z @ Q, full_matrices=False)  # (n, k+p): small
    V = Q @ Vt.T
    # a fixed sign per direction, so the projection does not depend on the SVD's whims
    V *= np.where(V[np.abs(V).argmax(0), np.arange(V.shape[1])] < 0, -1.0, 1.0)
    return V[:, :k].astype(np.float32)


def _check(segments: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    S = np.asarray(segments, np.float32)
    o = np.asarray(owner).reshape(-1)
    if S.ndim != 2 or S.shape[0] != o.shape[0]:
        raise ConfigError(f"segments must be (m, d) with one owner each, got {S.shape} and {o.shape}")
    _, o = np.unique(o, return_inverse=True)
    counts = np.bincount(o)
    if (counts >= 2).sum() < 3:
        raise ConfigError("adaptation needs at least 3 tracks with 2 or more segments each")
    return S, o


def _standardise(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = S.mean(0)
    std = S.std(0)
    scale = (1.0 / np.maximum(std, 1e-3 * max(float(std.max()), 1e-12))).astype(np.float32)
    return mean.astype(np.float32), scale


def fit_lda(segments: np.ndarray, owner: np.ndarray, *, dim: int = 128, shrink: float = 0.1
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Track-as-class LDA: ``(mean, scale, W (d, k), params)``.

    ``shrink`` blends the within-track scatter with its diagonal average
    (``(1 - shrink) * Sw + shrink * tr(Sw)/d * I``) so rare directions are not blown up.
    """
    S, o = _check(segments, owner)
    mean, scale = _standardise(S)
    Z = ((S - mean) * scale).astype(np.float64)
    n_tracks = int(o.max()) + 1
    counts = np.bincount(o, minlength=n_tracks).astype(np.float64)
    centroids = np.zeros((n_tracks, Z.shape[1]))
    np.add.at(centroids, o, Z)
    centroids /= counts[:, None]
    multi = counts[o] >= 2  # a single segment says nothing about within-track spread
    D = Z[multi] - centroids[o[multi]]
    d = Z.shape[1]
    Sw = D.T @ D / max(len(D), 1)
    Sw = (1 - shrink) * Sw + shrink * (np.trace(Sw) / d) * np.eye(d)
    Sb = (centroids * counts[:, None]).T @ centroids / counts.sum()
    # generalised eigenproblem Sb v = l Sw v through a whitening of Sw
    ew, ev = np.linalg.eigh(Sw)
    ew = np.maximum(ew, 1e-9 * ew.max())
    Wh = ev / np.sqrt(ew)
    lb, vb = np.linalg.eigh(Wh.T @ Sb @ Wh)
    k = int(min(dim, d, n_tracks - 1))
    order = np.argsort(-lb)[:k]
    W = (Wh @ vb[:, order]).astype(np.float32)
    return mean, scale, W, {"dim": k, "shrink": shrink}


def fit_contrastive(segments: np.ndarray, owner: np.ndarray, *, dim: int = 128, epochs: int = 30,
                    batch: int = 256, temperature: float = 0.1, lr: float = 2e-3, dropout: float = 0.2,
                    noise: float = 0.1, weight_decay: float = 1e-4, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """A linear InfoNCE projection: ``(mean, scale, W (d, k), params)``.

    Each step takes ``batch`` tracks; a track's two views are two of its segments (drawn
    without replacement, so from different times), each with feature dropout and
    Gaussian noise; the other tracks' views are the negatives (symmetric cross-entropy
    over cosine similarities / ``temperature``).  Seeded: the same input and seed give
    the same projection.
    """
    import torch

    S, o = _check(segments, owner)
    mean, scale = _standardise(S)
    Z = torch.from_numpy(((S - mean) * scale).astype(np.float32))
    # a small linear map: torch's OpenMP threads only spin-wait on a shared machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_contrastive(Z, o, mean, scale, dim=dim, epochs=epochs, batch=batch,
                                  temperature=temperature, lr=lr, dropout=dropout, noise=noise,
                                  weight_decay=weight_decay, seed=seed)
    finally:
        torch.set_num_threads(threads)


def _train_contrastive(Z, o, mean, scale, *, dim, epochs, batch, temperature, lr, dropout, noise,
                       weight_decay, seed):
    import torch

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    by_track = [np.flatnonzero(o == t) for t in range(int(o.max()) + 1)]
    usable = np.asarray([t for t, ix in enumerate(by_track) if len(ix) >= 2])
    d = Z.shape[1]
    k = int(min(dim, d))
    lin = torch.nn.Linear(d, k, bias=False)
    opt = torch.optim.AdamW(lin.parameters(), lr=lr, weight_decay=weight_decay)
    batch = int(min(batch, len(usable)))
    gen = torch.Generator().manual_seed(seed)

    def view(ix: np.ndarray) -> torch.Tensor:
        x = Z[torch.from_numpy(ix)]
        keep = (torch.rand(x.shape, generator=gen) >= dropout).float() / (1 - dropout)
        return x * keep + noise * torch.randn(x.shape, generator=gen)

    steps = 0
    for _ in range(epochs):
        perm = rng.permutation(usable)
        for s in range(0, len(perm) - batch + 1, batch):
            tracks = perm[s : s + batch]
            pairs = np.stack([rng.choice(by_track[t], 2, replace=False) for t in tracks])
            a = torch.nn.functional.normalize(lin(view(pairs[:, 0])), dim=1)
            b = torch.nn.functional.normalize(lin(view(pairs[:, 1])), dim=1)
            logits = a @ b.T / temperature
            target = torch.arange(len(tracks))
            loss = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                          + torch.nn.functional.cross_entropy(logits.T, target))
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    W = lin.weight.detach().numpy().T.astype(np.float32).copy()
    return mean, scale, W, {"dim": k, "epochs": epochs, "batch": batch, "temperature": temperature,
                            "lr": lr, "dropout": dropout, "noise": noise, "seed": seed, "steps": steps,
                            "final_loss": round(float(loss.detach()), 4) if steps else None}


def fit(segments: np.ndarray, owner: np.ndarray | None = None, *, base_model_id: str,
        method: Method = "normalize", dim: int = 256, seed: int = 0, blocks: tuple[int, ...] = (),
        neighbours: int = 0, power: float | tuple[float, ...] | None = None, **kwargs) -> Adaptation:
    """Fit an :class:`Adaptation` of ``base_model_id`` on the catalog's own vectors.

    Parameters
    ----------
    segments : float32 ``(m, d)``: for ``normalize`` the catalog's track vectors; for
        ``lda``/``contrastive`` segment vectors (each the mean of some patch vectors of
        one track, the same kind of vector as the catalog's track vectors)
    owner : ``(m,)`` which track each segment is from (``lda``/``contrastive`` only)
    blocks : block lengths of a fused embedding (``normalize``; empty: one block)
    neighbours : ``normalize`` only: the mutual-nearest-neighbour step with this ``k``
        (:func:`fit_neighbour_lpp`; 0: off, the vectors are the PCA's alone)
    power : ``normalize`` only: the signed power taken of the base vectors first, one exponent
        for all dimensions or one per block (:func:`signed_power`; None or 1: none)
    base_model_id : the model that made the vectors
    method : ``"lda"`` or ``"contrastive"``
    dim : output dimension (at most ``d``; LDA also at most ``n_tracks - 1``)
    seed : random seed (contrastive)
    **kwargs : method settings (see :func:`fit_lda`, :func:`fit_contrastive`)

    Raises
    ------
    ConfigError
        Unknown method, fewer than 3 tracks with two segments, or mismatched shapes.
    """
    if method == "normalize":
        segments = np.asarray(segments, np.float32)
        pw = power_vector(power, segments.shape[-1], tuple(blocks)) if segments.ndim == 2 else None
        mean, scale, center, W, params = fit_normalize(signed_power(segments, pw), dim=dim,
                                                       blocks=tuple(blocks))
        params = {**params, "tracks": int(len(segments)),
                  **({"power": list(power) if isinstance(power, tuple) else power} if pw is not None else {})}
        a = Adaptation(base_model_id, method, mean, scale, W, params, tuple(blocks), center, power=pw)
        step = fit_neighbour_lpp(a.apply(segments), neighbours=neighbours) if neighbours > 0 else None
        if step is None:
            return a
        lpp_mean, lpp_W, lpp_params = step
        return Adaptation(base_model_id, method, mean, scale, W, {**params, **lpp_params}, tuple(blocks),
                          center, lpp_mean, lpp_W, power=pw)
    if owner is None:
        raise ConfigError(f"adaptation method {method!r} needs segment owners")
    if method == "lda":
        mean, scale, W, params = fit_lda(segments, owner, dim=dim, **kwargs)
    elif method == "contrastive":
        mean, scale, W, params = fit_contrastive(segments, owner, dim=dim, seed=seed, **kwargs)
    else:
        raise ConfigError(f"unknown adaptation method {method!r}: choose one of {', '.join(METHODS)}")
    o = np.asarray(owner).reshape(-1)
    params = {**params, "segments": int(len(o)), "tracks": int(len(np.unique(o)))}
    return Adaptation(base_model_id, method, mean, scale, W, params)


class AdaptedAnalyzer:
    """A base analyzer whose embeddings go through an :class:`Adaptation`.

    What similar (outside clips), listen and ingest run for an adapted model: the base
    model's analysis, its embedding mapped to the adapted space; predictions unchanged.

    Attributes
    ----------
    name : ``<base name>+adapt``
    model_id : :attr:`Adaptation.model_id`
    embedding_dim : :attr:`Adaptation.dim`
    """

    def __init__(self, base, adaptation: Adaptation):
        if base.model_id != adaptation.base_model_id:
            from soundalike.errors import ModelMismatchError

            raise ModelMismatchError(
                f"adaptation {adaptation.model_id} maps vectors of {adaptation.base_model_id}, but "
                f"{base.name} here is {base.model_id}; re-ingest and run `soundalike index adapt`")
        self.base = base
        self.adaptation = adaptation
        self.name = f"{base.name}+adapt"
        self.model_id = adaptation.model_id
        self.sample_rate = base.sample_rate
        self.labels = list(base.labels)
        self.label_category = base.label_category
        self.multi_label = base.multi_label
        self.embedding_dim = adaptation.dim
        self.min_duration_s = getattr(base, "min_duration_s", 0.0)

    def analyze(self, y: np.ndarray, sr: int):
        from soundalike.models.base import Analysis

        a = self.base.analyze(y, sr)
        return Analysis(embedding=self.adaptation.apply(a.embedding), predictions=a.predictions,
                        patch_embeddings=None, patch_predictions=a.patch_predictions)


def segment_spaces(*, model_id: str, segments: tuple[np.ndarray, np.ndarray] | None,
                   adaptations: list | None = None) -> dict[str, tuple[np.ndarray, np.ndarray] | None]:
    """A just-analysed track's segment vectors in the spaces search compares, by model id.

    What :meth:`~soundalike.catalog.store.Catalog.put_ingested` stores with the track:
    the adaptations' spaces when the catalog has adaptations of ``model_id`` (search
    compares there, and the base segments would only take room), else the base model's.
    None for a space means the analysis kept no segments: the track's old ones are dropped.
    """
    adaptations = list(adaptations or ())
    if segments is None or len(segments[0]) == 0:
        return {mid: None for mid in (model_id, *(a.model_id for a in adaptations))}
    starts, V = segments
    if adaptations:
        return {a.model_id: (starts, a.apply(np.asarray(V, np.float32))) for a in adaptations}
    return {model_id: (starts, V)}
