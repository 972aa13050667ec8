""""What sounds like this?": nearest tracks in the catalog, optionally within a filter.

>>> hits = similar("42", k=5, where="instrument:violin -mood:sad")       # doctest: +SKIP
>>> [(h.track.display_name, round(h.score, 3), h.why) for h in hits]     # doctest: +SKIP

The query is a catalog track (id, path or title/artist match) or any audio file outside
the catalog, analyzed on the fly by the same model that made the catalog's embeddings.
Scores are cosine similarities in [-1, 1]; each hit also lists the tags it shares with
the query (its "why").
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from soundalike.errors import CatalogError, ModelMismatchError, QueryError, TrackNotFoundError

if TYPE_CHECKING:
    from soundalike.catalog.store import Catalog, Track

#: Tag sources a hit's "why" is drawn from unless suggested tags are included.
_WHY_SOURCES = ("file", "user", "model")


@dataclass(frozen=True)
class SharedTag:
    """A tag that both the query and a hit carry."""

    category: str
    tag: str

    def __str__(self) -> str:
        return f"{self.category}:{self.tag}"


@dataclass(frozen=True)
class Hit:
    """One similar track.

    Attributes
    ----------
    track : the catalog track
    score : cosine similarity to the query in [-1, 1] (higher is closer)
    rank : 1-based position in the result list
    shared_tags : tags the hit shares with the query (its "why")
    """

    track: Track
    score: float
    rank: int
    shared_tags: tuple[SharedTag, ...] = ()

    @property
    def why(self) -> str:
        return ", ".join(str(t) for t in self.shared_tags)

    def to_dict(self) -> dict[str, Any]:
        t = self.track
        return {"rank": self.rank, "score": round(float(self.score), 6), "id": t.id, "path": t.path,
                "title": t.title, "artist": t.artist, "name": t.display_name, "duration_s": t.duration_s,
                "shared_tags": [{"category": s.category, "tag": s.tag} for s in self.shared_tags]}


@dataclass(frozen=True)
class ResolvedQuery:
    """What a query turned into: a vector, the catalog track it is (if any), its tags."""

    vector: np.ndarray
    model_id: str
    track: Track | None = None
    path: str | None = None
    tags: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    predictions: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.track.display_name if self.track else str(self.path)

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "track": self.track.to_dict() if self.track else None,
                "path": self.path, "tags": [{"category": c, "tag": t} for c, t in sorted(self.tags)]}


@contextmanager
def open_catalog(catalog: Catalog | str | os.PathLike | None):
    """Yield an open :class:`Catalog` (opened and closed here unless one was given)."""
    from soundalike.catalog.store import Catalog

    if isinstance(catalog, Catalog):
        yield catalog
        return
    if catalog is None:
        from soundalike.paths import default_catalog_path

        catalog = default_catalog_path()
    cat = Catalog.open(catalog, create=False)
    try:
        yield cat
    finally:
        cat.close()


def _analyze_file(path: Path, model_name: str, model_id: str):
    from soundalike.audio.io import load
    from soundalike.models.zoo import load_analyzer

    analyzer = load_analyzer(model_name)
    if analyzer.model_id != model_id:
        raise ModelMismatchError(
            f"model {model_name!r} now has id {analyzer.model_id}, but the catalog's embeddings were "
            f"made by {model_id}; re-ingest with `soundalike ingest DIR --model {model_name}`")
    y, sr = load(path, sr=analyzer.sample_rate)
    return analyzer, analyzer.analyze(y, sr)


def resolve_query(cat: Catalog, query: int | str | os.PathLike, *, model_id: str,
                  include_suggested: bool = False) -> ResolvedQuery:
    """Turn a query into a vector of ``model_id``.

    ``query`` is a track id (int or digits), a path (a catalog track's, or any audio file,
    analyzed on the fly), or a title/artist substring (the first match, by id).

    Raises
    ------
    TrackNotFoundError
        Nothing in the catalog matches and it is not an audio file.
    AudioDecodeError
        An outside file cannot be decoded.
    """
    from soundalike.search.sync import lookup_model

    info = lookup_model(cat, model_id)
    if info is None:
        raise CatalogError(f"{cat.path}: no model {model_id!r}")
    sources = (*_WHY_SOURCES, "suggested") if include_suggested else _WHY_SOURCES
    track = None
    if isinstance(query, (int, np.integer)):
        track = cat.get_track(int(query))
        if track is None:
            raise TrackNotFoundError(f"no track with id {int(query)} in {cat.path}")
    else:
        ref = str(query)
        p = Path(ref).expanduser()
        if p.is_file():
            track = cat.track_by_path(str(p.resolve())) or cat.track_by_path(str(p))
            if track is None:
                analyzer, analysis = _analyze_file(p, info.name, model_id)
                top = [(analyzer.label_category, lbl) for lbl, prob in analysis.top(5) if prob >= 0.1]
                return ResolvedQuery(np.asarray(analysis.embedding, np.float32), model_id, None, str(p),
                                     frozenset(top), dict(analysis.predictions))
        else:
            found = cat.find_tracks(ref)
            if not found:
                raise TrackNotFoundError(f"{ref!r}: no catalog track has this id, path, title or artist, "
                                         f"and it is not an audio file")
            track = found[0]
    stored = cat.get_analysis(track.id, model_id)
    if stored is not None:
        vec, preds = stored.embedding, stored.predictions
    else:
        _, analysis = _analyze_file(Path(track.path), info.name, model_id)
        vec, preds = np.asarray(analysis.embedding, np.float32), dict(analysis.predictions)
    tags = cat.tag_pairs([track.id], sources=sources)[track.id]
    return ResolvedQuery(vec, model_id, track, track.path, frozenset(tags), preds)


def _filter_mask(cat: Catalog, index, where: str | None, include_suggested: bool,
                 exclude: Iterable[int] = ()):
    """The index's cached :class:`~soundalike.search.index.Selection` for ``where`` (None: no filter)."""
    from soundalike.catalog.query import parse

    q = parse(where)
    if not q:
        return None
    return index.cached_selection(("where", q.text, include_suggested),
                                  lambda: cat.match(q, include_suggested=include_suggested))


def _hits(cat: Catalog, ids: np.ndarray, scores: np.ndarray, query_tags: frozenset[tuple[str, str]],
          sources: Sequence[str]) -> list[Hit]:
    keep = [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0]
    tracks = cat.get_tracks([i for i, _ in keep])
    tag_sets = cat.tag_pairs([i for i, _ in keep], sources=sources) if query_tags else {}
    hits = []
    for i, s in keep:
        if i not in tracks:
            continue
        shared = sorted(query_tags & tag_sets.get(i, set()))
        hits.append(Hit(tracks[i], s, len(hits) + 1, tuple(SharedTag(c, t) for c, t in shared)))
    return hits


def nearest_to_vector(catalog: Catalog | str | os.PathLike | None, *, model_id: str, vector: np.ndarray,
                      k: int = 10, where: str | None = None, exclude_ids: Iterable[int] = (),
                      include_suggested: bool = False) -> list[Hit]:
    """The ``k`` catalog tracks closest to an embedding (cheap enough to call twice a second).

    Parameters
    ----------
    catalog : open catalog (recommended for repeated calls), path, or ``None`` for the default
    model_id : model that made ``vector``
    vector : float32 ``(dim,)`` embedding (normalised here)
    k : number of hits
    where : filter expression (see :mod:`soundalike.catalog.query`)
    exclude_ids : track ids never returned
    include_suggested : let filters match suggested tags

    Returns
    -------
    list[Hit]
        best first; ``shared_tags`` is empty (a bare vector has no tags).
    """
    from soundalike.search.sync import cached_index

    with open_catalog(catalog) as cat:
        index = cached_index(cat, model_id)
        mask = _filter_mask(cat, index, where, include_suggested)
        ids, scores = index.search(np.asarray(vector, np.float32), k, allowed=mask,
                                   exclude_ids=np.fromiter((int(i) for i in exclude_ids), np.int64))
        return _hits(cat, ids[0], scores[0], frozenset(), ())


def similar(query: int | str | os.PathLike, *, k: int = 10, where: str | None = None, model: str | None = None,
            exclude_same_artist: bool = False, include_suggested: bool = False,
            catalog: Catalog | str | os.PathLike | None = None) -> list[Hit]:
    """Tracks that sound like ``query``, best first.

    Parameters
    ----------
    query : track id, catalog path, title/artist substring, or an audio file outside
        the catalog (analyzed on the fly)
    k : number of hits (at least 1)
    where : filter expression, e.g. ``'genre:rock|pop -mood:sad year:1990..'``
    model : model name or id whose embeddings to compare (default: the catalog's most
        used model)
    exclude_same_artist : leave out tracks by the query's artist (and the query itself)
    include_suggested : let filters and the "why" use suggested tags
    catalog : open catalog, catalog path, or ``None`` for the default catalog

    Returns
    -------
    list[Hit]
        at most ``k``; the query track itself is never among them.

    Raises
    ------
    QueryError, TrackNotFoundError, CatalogError, ModelMismatchError, AudioDecodeError
    """
    return similar_with_query(query, k=k, where=where, model=model, exclude_same_artist=exclude_same_artist,
                              include_suggested=include_suggested, catalog=catalog)[1]


def similar_with_query(query: int | str | os.PathLike, *, k: int = 10, where: str | None = None,
                       model: str | None = None, exclude_same_artist: bool = False,
                       include_suggested: bool = False,
                       catalog: Catalog | str | os.PathLike | None = None) -> tuple[ResolvedQuery, list[Hit]]:
    """:func:`similar`, also returning what the query resolved to (for display)."""
    from soundalike.catalog.query import parse
    from soundalike.search.sync import cached_index, model_info

    if k < 1:
        raise QueryError(f"k must be at least 1, got {k}")
    parse(where)  # fail on a bad filter before any decoding
    with open_catalog(catalog) as cat:
        info = model_info(cat, model)
        rq = resolve_query(cat, query, model_id=info.model_id, include_suggested=include_suggested)
        index = cached_index(cat, info.model_id)
        mask = _filter_mask(cat, index, where, include_suggested)
        exclude = [rq.track.id] if rq.track else []
        if exclude_same_artist and rq.track and rq.track.artist:
            exclude += cat.ids_by_artist(rq.track.artist)
        ids, scores = index.search(rq.vector, k, allowed=mask, exclude_ids=np.asarray(exclude, np.int64))
        sources = (*_WHY_SOURCES, "suggested") if include_suggested else _WHY_SOURCES
        return rq, _hits(cat, ids[0], scores[0], rq.tags, sources)
