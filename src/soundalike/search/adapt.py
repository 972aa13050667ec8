"""Catalog adaptation without labels: learn which directions of a frozen embedding tell
*this catalog's* tracks apart, from the catalog's own audio.

A pretrained tagger's layer spends much of its variance on what changes *within* a track
(a section gets louder, a drum fill, a break) and on what every track of a catalog shares.
Adaptation fits a small projection on per-segment vectors of a sample of the catalog's
tracks, using only which track each segment came from (no labels):

``lda``
    Linear discriminant analysis with each track as its own class: directions that keep
    segments of one track together and tracks apart, whitened by the within-track scatter
    (closed form, deterministic, seconds for 10k tracks).
``contrastive``
    A linear map trained with InfoNCE: two views of a track (means of random patches far
    apart in time, with feature dropout and noise) are positives, other tracks in the
    batch negatives (seeded, a minute or two on a CPU for 10k tracks).

Either maps a track vector ``(d,)`` (the mean of its patch vectors, exactly what the
catalog stores) to ``(k,)``: the projection is applied to stored track vectors, so no
audio is decoded again.  An :class:`Adaptation` names itself with a model id of its own
(``<base model id>+adapt-<hash>``), so its vectors never mix with the base model's.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> segs = rng.normal(size=(40, 8)).astype(np.float32)
>>> owner = np.repeat(np.arange(10), 4)
>>> a = fit(segs, owner, base_model_id="demo-1", method="lda", dim=4)
>>> a.apply(segs).shape
(40, 4)
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from soundalike.errors import ConfigError

Method = Literal["lda", "contrastive"]
METHODS: tuple[str, ...] = ("lda", "contrastive")
#: Bumped when fitting changes in a way that moves the vectors (part of the adapted id).
ADAPT_VERSION = "1"


@dataclass(frozen=True)
class Adaptation:
    """A fitted projection of one base model's track vectors.

    Attributes
    ----------
    base_model_id : the model whose vectors it maps
    method : ``"lda"`` or ``"contrastive"``
    mean : float32 ``(d,)`` subtracted first
    scale : float32 ``(d,)`` per-dimension scale applied after centring (z-score)
    W : float32 ``(d, k)`` projection
    params : how it was fitted (method settings, seed, numbers of tracks/segments)
    """

    base_model_id: str
    method: str
    mean: np.ndarray
    scale: np.ndarray
    W: np.ndarray
    params: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.W.shape[1])

    @property
    def in_dim(self) -> int:
        return int(self.W.shape[0])

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(f"{ADAPT_VERSION};{self.base_model_id};{self.method}".encode())
        for a in (self.mean, self.scale, self.W):
            h.update(np.ascontiguousarray(a, np.float32).tobytes())
        return h.hexdigest()[:10]

    @property
    def model_id(self) -> str:
        """``<base model id>+adapt-<hash of the fitted projection>``."""
        return f"{self.base_model_id}+adapt-{self.digest}"

    def apply(self, X: np.ndarray) -> np.ndarray:
        """Map base vectors float32 ``(n, d)`` (or ``(d,)``) to adapted ``(n, k)`` (or ``(k,)``)."""
        X = np.asarray(X, np.float32)
        if X.shape[-1] != self.in_dim:
            raise ConfigError(f"adaptation of {self.base_model_id} takes {self.in_dim}-d vectors, "
                              f"got {X.shape[-1]}-d")
        return (((X - self.mean) * self.scale) @ self.W).astype(np.float32)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, scale=self.scale, W=self.W,
                 meta=np.asarray(json.dumps({"base_model_id": self.base_model_id, "method": self.method,
                                             "params": self.params, "version": ADAPT_VERSION})))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Adaptation:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(meta["base_model_id"], meta["method"], z["mean"].astype(np.float32),
                       z["scale"].astype(np.float32), z["W"].astype(np.float32), meta.get("params", {}))

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> Adaptation:
        return cls.from_bytes(Path(path).read_bytes())


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


def fit(segments: np.ndarray, owner: np.ndarray, *, base_model_id: str, method: Method = "lda",
        dim: int = 128, seed: int = 0, **kwargs) -> Adaptation:
    """Fit an :class:`Adaptation` of ``base_model_id`` on per-segment vectors.

    Parameters
    ----------
    segments : float32 ``(m, d)`` segment vectors (each the mean of some patch vectors
        of one track, the same kind of vector as the catalog's track vectors)
    owner : ``(m,)`` which track each segment is from (any hashable ids)
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
    if method == "lda":
        mean, scale, W, params = fit_lda(segments, owner, dim=dim, **kwargs)
    elif method == "contrastive":
        mean, scale, W, params = fit_contrastive(segments, owner, dim=dim, seed=seed, **kwargs)
    else:
        raise ConfigError(f"unknown adaptation method {method!r}: choose one of {', '.join(METHODS)}")
    o = np.asarray(owner).reshape(-1)
    params = {**params, "segments": int(len(o)), "tracks": int(len(np.unique(o)))}
    return Adaptation(base_model_id, method, mean, scale, W, params)
