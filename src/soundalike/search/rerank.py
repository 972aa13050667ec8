"""Re-rank a search's nearest candidates by diffusion over their own neighbour graph.

A cosine search ranks every candidate by its similarity to the query alone.  Music the
catalog holds in groups (one composer's soundtrack, one instrument's notes) forms
*neighbourhoods*: a track of the query's group that happens to sit a little further from
the query is still close to several of the query's nearest, while a track from elsewhere
that came close by chance is close to the query only.  Diffusion (manifold ranking, as in
Zhou et al. 2004 and Iscen et al. 2017 for image retrieval) scores candidates by how well
they are reached through that graph instead of by the direct edge alone.

What is computed, per query (``pool`` candidates from the ordinary search, default
:data:`POOL`): the cosine matrix of the query and its candidates; each node keeps its
``neighbours`` nearest (default :data:`NEIGHBOURS`) with weight ``max(cos, 0) ** POWER``;
only *mutual* edges are kept (both ends count the other among their nearest: a chance
closeness rarely goes both ways); the graph is normalised symmetrically (``D^-1/2 W D^-1/2``)
and the scores are ``f = (I - alpha W)^-1 e_query`` (``alpha`` = :data:`ALPHA`): the
query's mass spread over the graph with restarts.  Candidates are ordered by ``f``, ties
(and candidates the graph does not reach, ``f = 0``) by cosine.  A query without a
mutual neighbour gets plain cosine order.  The hits keep their cosine as their score
(what :class:`~soundalike.search.similar.Hit` documents and the near-duplicate rule
reads); only the order changes.

Cost per query: one ``(pool + 1)^2`` Gram matrix of the candidates, their neighbour lists,
and a few dozen conjugate-gradient steps on the graph (at most ``neighbours`` edges a node),
plus reading the candidates' vectors back from the index; no catalog-wide state, nothing
stored, nothing fitted, and no call that starts BLAS or LAPACK threads (about 1 ms a query
at pool 100; README, "Similarity").  Measured on real soundtracks and Philharmonia notes: README,
"Similarity" (benchmark ``benchmarks/bench_similarity.py``, the ``rr`` step).

Switch it off with ``similar(..., rerank=False)``, ``soundalike similar --no-rerank`` or
``SOUNDALIKE_RERANK=0`` in the environment.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

#: Candidates of the cosine search that are re-ranked.
POOL = 100
#: Nearest neighbours each node of the candidate graph keeps (before the mutual rule).
NEIGHBOURS = 10
#: Restart weight of the diffusion: 0 gives cosine order, near 1 spreads furthest.
ALPHA = 0.8
#: Edge weight ``max(cos, 0) ** POWER``: near neighbours weigh much more than far ones.
POWER = 3
#: A larger request (a caller asking for many hits) re-ranks only its best this many.
MAX_POOL = 400
#: Environment switch: ``0``/``off``/``no``/``false`` turns the re-rank off by default.
ENV = "SOUNDALIKE_RERANK"


def enabled_by_default() -> bool:
    """False where ``SOUNDALIKE_RERANK`` says ``0``, ``off``, ``no`` or ``false``."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "off", "no", "false")


#: Rows of the Gram matrix per matrix product: OpenBLAS multithreads a product from
#: m*n*k = 262,144 (its SMP threshold); starting threads costs 3-50 ms on a busy machine,
#: while 8 x 101 x 320 stays on the calling thread (measured: 0.2-0.3 ms for a pool of 100
#: against 0.7-0.8 ms for einsum's loop and 0.4-5 ms for one threaded product).
_GRAM_ROWS = 8


def _gram(V: np.ndarray) -> np.ndarray:
    """float32 ``(m, m)`` inner products of the float32 rows of ``V``, block by block."""
    m = len(V)
    out = np.empty((m, m), np.float32)
    Vt = V.T
    for i in range(0, m, _GRAM_ROWS):
        np.matmul(V[i:i + _GRAM_ROWS], Vt, out=out[i:i + _GRAM_ROWS])
    return out


def _top_k_members(T: np.ndarray, k: int) -> np.ndarray:
    """bool ``(m, m)``: each row's ``k`` largest entries, ties at the boundary going to the
    lower column (what a stable sort by descending value picks), without sorting rows."""
    m = T.shape[1]
    thr = np.partition(T, m - k, axis=1)[:, m - k:m - k + 1]  # each row's k-th largest
    at_least = T >= thr
    if int(at_least.sum()) == k * len(T):  # no ties at any row's boundary (the usual case)
        return at_least
    above = T > thr
    tied = T == thr
    need = k - above.sum(axis=1, keepdims=True)
    return above | (tied & (np.cumsum(tied, axis=1) <= need))


def diffusion_scores(*, query: np.ndarray, candidates: np.ndarray, neighbours: int = NEIGHBOURS,
                     alpha: float = ALPHA, power: int = POWER) -> np.ndarray:
    """Diffusion scores of ``candidates`` seen from ``query`` (see the module docstring).

    Parameters
    ----------
    query : float ``(dim,)``
    candidates : float ``(n, dim)``
    neighbours : nearest neighbours each node keeps before the mutual rule (at most ``n``)
    alpha : restart weight in ``[0, 1)``
    power : edge weight exponent on the (clipped) cosine

    Returns
    -------
    float64 ``(n,)``: higher is closer; 0 for a candidate the graph does not reach from the query.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    if len(candidates) == 0:
        return np.zeros(0, np.float64)
    C = np.asarray(candidates, np.float32).reshape(len(candidates), -1)
    V = np.empty((len(C) + 1, C.shape[1]), np.float32)  # the query, then the candidates
    V[0] = np.asarray(query, np.float32).reshape(-1)
    V[1:] = C
    V /= np.maximum(np.linalg.norm(V, axis=-1, keepdims=True), np.float32(1e-12))
    m = len(V)
    S32 = _gram(V)
    k = max(1, min(int(neighbours), m - 1))
    # neighbour lists from the float32 products (float64 keeps their order and ties exactly)
    T = S32.copy()
    np.fill_diagonal(T, -np.inf)  # a node is never its own neighbour
    is_nn = _top_k_members(T, k)
    S = S32.astype(np.float64)
    rows, cols = np.nonzero(is_nn & is_nn.T)  # mutual edges only, both directions
    w = np.maximum(S[rows, cols], 0.0) ** power
    deg = np.bincount(rows, weights=w, minlength=m)
    inv = np.zeros(m)
    np.divide(1.0, np.sqrt(deg), out=inv, where=deg > 0)
    A = np.eye(m)  # I - alpha Wn, built once: one product a step
    A[rows, cols] = -(alpha * w * inv[rows] * inv[cols])
    # f = (I - alpha Wn)^-1 e_query by conjugate gradients (the matrix is symmetric positive
    # definite, its condition number at most (1 + alpha) / (1 - alpha): a few dozen steps).
    # A dense matrix-vector product a step (m is ~100) is a few microseconds; a direct solve
    # would call LAPACK, whose threads cost tens of milliseconds on a busy machine.
    e = np.zeros(m)
    e[0] = 1.0
    f = np.zeros(m)
    r = e.copy()
    p = r.copy()
    rr = float(r @ r)
    for _ in range(4 * m + 50):
        if rr < 1e-26:
            break
        Ap = A @ p
        step = rr / float(p @ Ap)
        f += step * p
        r -= step * Ap
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return f[1:]


def rerank_order(*, query: np.ndarray, candidates: np.ndarray, cosines: np.ndarray,
                 neighbours: int = NEIGHBOURS, alpha: float = ALPHA, power: int = POWER) -> np.ndarray:
    """int64 ``(n,)``: the order of ``candidates`` by diffusion score, ties by ``cosines``
    (then by position), best first."""
    f = diffusion_scores(query=query, candidates=candidates, neighbours=neighbours, alpha=alpha, power=power)
    cos = np.asarray(cosines, np.float64).reshape(-1)
    # diffusion scores are rounded so float noise never outranks the cosine tie-break
    key = np.round(f, 12)
    return np.lexsort((np.arange(len(f)), -cos, -key)).astype(np.int64)


class RerankIndex:
    """Stands in for a :class:`~soundalike.search.index.VectorIndex` in a search: the
    inner index's best ``max(k, pool)`` candidates, re-ranked by :func:`rerank_order`.

    Filters, exclusions and everything else are the inner index's (``__getattr__``);
    scores stay cosine similarities, so a hit list is no longer sorted by its scores.
    """

    def __init__(self, index, *, pool: int = POOL, neighbours: int = NEIGHBOURS, alpha: float = ALPHA,
                 power: int = POWER) -> None:
        self.index = index
        self.pool = int(pool)
        self.neighbours = int(neighbours)
        self.alpha = float(alpha)
        self.power = int(power)

    def __len__(self) -> int:
        return len(self.index)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.index, name)

    def search(self, queries: np.ndarray, k: int, *, allowed=None, exclude_ids=()) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` for one query: int64 and float32 ``(1, k)`` (unfilled: id ``-1``, score ``-inf``)."""
        q = np.asarray(queries, np.float32).reshape(-1)
        ids, scores = self.index.search(q, max(int(k), self.pool), allowed=allowed, exclude_ids=exclude_ids)
        ids, scores = ids[0], scores[0]
        live = ids >= 0
        ids, scores = ids[live], scores[live]
        m = min(len(ids), MAX_POOL)
        if m >= 2:
            order = rerank_order(query=q, candidates=self.index.vectors(ids[:m]), cosines=scores[:m],
                                 neighbours=self.neighbours, alpha=self.alpha, power=self.power)
            ids = np.concatenate([ids[:m][order], ids[m:]])
            scores = np.concatenate([scores[:m][order], scores[m:]])
        out_ids = np.full((1, k), -1, np.int64)
        out_scores = np.full((1, k), -np.inf, np.float32)
        n = min(int(k), len(ids))
        out_ids[0, :n], out_scores[0, :n] = ids[:n], scores[:n]
        return out_ids, out_scores


def wrap(index, *, enabled: bool | None = None):
    """``index`` in a :class:`RerankIndex` unless the re-rank is off (``enabled`` False, or
    None and :func:`enabled_by_default` False)."""
    on = enabled_by_default() if enabled is None else bool(enabled)
    return RerankIndex(index) if on else index


__all__ = ["ALPHA", "ENV", "MAX_POOL", "NEIGHBOURS", "POOL", "POWER", "RerankIndex", "diffusion_scores",
           "enabled_by_default", "rerank_order", "wrap"]
