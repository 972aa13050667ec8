"""Similar to a set of tracks: "more like my favourites" (or a playlist) as one query.

The set is summarised by the mean of its members' unit-length embeddings (their
centroid on the sphere, renormalised by the index): a listener's taste as one point,
searched like any other vector.  The members themselves are never returned.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from soundalike.errors import QueryError


def taste_vector(embeddings: np.ndarray) -> np.ndarray:
    """Mean direction of ``embeddings`` float ``(n, dim)``: float32 ``(dim,)``, unit length.

    Raises
    ------
    QueryError
        no embeddings, or they cancel out (a zero mean).
    """
    X = np.asarray(embeddings, dtype=np.float32)
    if X.ndim != 2 or len(X) == 0:
        raise QueryError("no tracks to summarise: add favourites (or tracks) first")
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    m = (X / np.maximum(norms, np.float32(1e-12))).mean(axis=0)
    n = float(np.linalg.norm(m))
    if n < 1e-6:
        raise QueryError("the tracks' embeddings cancel out: no common direction to search from")
    return (m / np.float32(n)).astype(np.float32)


def similar_to_set(catalog, *, track_ids: Sequence[int], model_id: str, k: int = 10,
                   where: str | None = None, include_suggested: bool = False) -> list:
    """Tracks that sound like the set ``track_ids`` as a whole, best first.

    Parameters
    ----------
    catalog : open :class:`~soundalike.catalog.store.Catalog`
    track_ids : the set (e.g. the favourites); tracks without an embedding of ``model_id``
        are skipped
    model_id : model whose embeddings to compare
    k : number of hits
    where : filter expression the hits must match
    include_suggested : let the filter match suggested tags

    Returns
    -------
    list[Hit]
        empty when no member has an embedding; never a member of the set.
    """
    from soundalike.search.similar import nearest_to_vector

    ids = [int(i) for i in track_ids]
    vecs = []
    for i in ids:
        a = catalog.get_analysis(i, model_id)
        if a is not None:
            vecs.append(a.embedding)
    if not vecs:
        return []
    return nearest_to_vector(catalog, model_id=model_id, vector=taste_vector(np.stack(vecs)), k=k,
                             where=where, exclude_ids=ids, include_suggested=include_suggested)
