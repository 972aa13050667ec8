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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from soundalike.errors import CatalogError, ModelMismatchError, QueryError, TrackNotFoundError
from soundalike.search import stages

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
    attributes: dict | None = None
    query_attributes: dict | None = None
    #: the hit's tags from the "why" sources, suggested last, most confident first
    #: (:meth:`Catalog.tag_lists` order); None where they were not read
    tags: tuple | None = None

    @property
    def facts(self) -> str:
        """BPM, key and length of the hit next to the query's, e.g.
        ``"122 BPM (query 120), 9A (query 8A), 3:05 (query 2:58)"``; a tempo measured with
        too little confidence (``audio.attributes.TEMPO_MIN_CONFIDENCE``) reads ``? BPM``."""
        return _facts(self.attributes, self.query_attributes, self.track.duration_s)

    @property
    def why(self) -> str:
        """Shared tags, then :attr:`facts`."""
        return "; ".join(p for p in (", ".join(str(t) for t in self.shared_tags), self.facts) if p)

    def to_dict(self) -> dict[str, Any]:
        t = self.track
        a = self.attributes or {}
        return {"rank": self.rank, "score": round(float(self.score), 6), "id": t.id, "path": t.path,
                "title": t.title, "artist": t.artist, "album": t.album, "name": t.display_name,
                "duration_s": a.get("duration_s") or t.duration_s,
                "bpm": a.get("bpm"), "bpm_confidence": a.get("bpm_confidence"),
                "camelot": a.get("camelot"), "key": _key_name(a),
                "loudness_lufs": a.get("loudness_lufs"), "vocals": a.get("vocals"),
                "energy": a.get("energy"), "why": self.why,
                "shared_tags": [{"category": s.category, "tag": s.tag} for s in self.shared_tags]}


def _key_name(a: dict | None) -> str | None:
    if not a or a.get("key_tonic") is None or not a.get("key_mode"):
        return None
    from soundalike.audio.attributes import PITCH_CLASSES

    return f"{PITCH_CLASSES[int(a['key_tonic'])]} {a['key_mode']}"


def _mmss(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def _facts(a: dict | None, q: dict | None, fallback_duration: float | None = None) -> str:
    from soundalike.audio.attributes import shown_bpm, tempo_unsure

    a, q = a or {}, q or {}
    parts = []
    # A tempo too unsure to show (no steady beat) reads "? BPM" rather than a number.
    bpm_of = lambda d: shown_bpm(d) if not tempo_unsure(d) else "?"  # noqa: E731
    for value, ref, fmt in (
            (bpm_of(a), bpm_of(q), lambda v: f"{v} BPM" if v == "?" else f"{v:.0f} BPM"),
            (a.get("camelot"), q.get("camelot"), str),
            (a.get("duration_s") or fallback_duration, q.get("duration_s"), _mmss)):
        if value is None:
            continue
        text = fmt(value)
        if ref is not None:
            text += f" (query {fmt(ref)})"
        parts.append(text)
    return ", ".join(parts)


@dataclass(frozen=True)
class ResolvedQuery:
    """What a query turned into: a vector, the catalog track it is (if any), its tags."""

    vector: np.ndarray
    model_id: str
    track: Track | None = None
    path: str | None = None
    tags: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    predictions: dict[str, float] = field(default_factory=dict)
    attributes: dict | None = None
    #: The catalog's change token the search answered at (None: not read), for what the
    #: caller reads next from the same state (e.g. :meth:`Catalog.filter_notes`).
    token: int | None = None

    @property
    def label(self) -> str:
        return self.track.display_name if self.track else str(self.path)

    def to_dict(self) -> dict[str, Any]:
        a = self.attributes or {}
        return {"model_id": self.model_id, "track": self.track.to_dict() if self.track else None,
                "path": self.path, "tags": [{"category": c, "tag": t} for c, t in sorted(self.tags)],
                "bpm": a.get("bpm"), "camelot": a.get("camelot"), "key": _key_name(a),
                "duration_s": a.get("duration_s")}


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


#: Longest outside clip a query decodes, in seconds (decoding stops there: AudioTooLongError).
MAX_CLIP_S = 1800.0


def _analyze_file(cat: Catalog, path: Path, model_id: str, *, max_clip_s: float | None = None):
    """Analyze an outside file with the catalog's model; also its attributes, as a track's."""
    from soundalike.audio.io import load
    from soundalike.search.sync import analyzer_for

    analyzer = analyzer_for(cat, model_id)
    y, sr = load(path, sr=analyzer.sample_rate, max_duration_s=max_clip_s)
    analysis = analyzer.analyze(y, sr)
    return analyzer, analysis, _clip_attributes(y, sr, analysis.predictions)


def _clip_attributes(y: np.ndarray, sr: int, predictions: dict[str, float]) -> dict:
    """An outside clip's attributes, as the catalog stores a track's (for "why" and filters)."""
    from soundalike.audio.attributes import compute_attributes
    from soundalike.models.vocabulary import energy_evidence, vocals_probability

    return compute_attributes(y=y, sr=sr, vocals=vocals_probability(predictions),
                              energy_evidence=energy_evidence(predictions)).to_dict()


def resolve_query(cat: Catalog, query: int | str | os.PathLike, *, model_id: str,
                  include_suggested: bool = False, max_clip_s: float | None = MAX_CLIP_S,
                  prefetched: tuple | None = None) -> ResolvedQuery:
    """Turn a query into a vector of ``model_id``.

    ``query`` is a track id (int or digits), a path (a catalog track's, or any audio file,
    analyzed on the fly), or a title/artist substring (the first match, by id).
    An outside file longer than ``max_clip_s`` seconds is refused (``None``: no limit).
    ``prefetched``: what :meth:`Catalog.query_track_data` returned for an int ``query``
    (read by the caller with ``model_id``; not read again).

    Raises
    ------
    TrackNotFoundError
        Nothing in the catalog matches and it is not an audio file.
    AudioDecodeError
        An outside file cannot be decoded (:class:`AudioTooLongError`: too long).
    """
    from soundalike.search.sync import lookup_model

    info = lookup_model(cat, model_id)
    if info is None:
        raise CatalogError(f"{cat.path}: no model {model_id!r}")
    sources = (*_WHY_SOURCES, "suggested") if include_suggested else _WHY_SOURCES
    track = None
    if isinstance(query, (int, np.integer)):
        # the track, its analysis, tags and attributes in one round trip
        track, stored, tags, attrs = prefetched if prefetched is not None else \
            cat.query_track_data(int(query), model_id=model_id, sources=sources)
        if track is None:
            raise TrackNotFoundError(f"no track with id {int(query)} in {cat.path}")
        return _resolved(cat, track, stored, tags, attrs, model_id=model_id, info=info)
    else:
        ref = str(query)
        p = Path(ref).expanduser()
        if p.is_file():
            track = cat.track_by_path(str(p.resolve())) or cat.track_by_path(str(p))
            if track is None:
                analyzer, analysis, attrs = _analyze_file(cat, p, info.model_id, max_clip_s=max_clip_s)
                cats = getattr(analyzer, "label_categories", None) or {}
                top = [(cats.get(lbl, analyzer.label_category), lbl) for lbl, prob in analysis.top(5)
                       if prob >= 0.1]
                return ResolvedQuery(np.asarray(analysis.embedding, np.float32), model_id, None, str(p),
                                     frozenset(top), dict(analysis.predictions), attrs)
        else:
            found = cat.find_tracks(ref)
            if not found:
                raise TrackNotFoundError(f"{ref!r}: no catalog track has this id, path, title or artist, "
                                         f"and it is not an audio file")
            track = found[0]
    _, stored, tags, attrs = cat.query_track_data(track.id, model_id=model_id, sources=sources)
    return _resolved(cat, track, stored, tags, attrs, model_id=model_id, info=info)


def _resolved(cat: Catalog, track: Track, stored, tags: set[tuple[str, str]], attrs: dict | None, *,
              model_id: str, info) -> ResolvedQuery:
    """A catalog track as a query: its stored vector, or one made now if it has none."""
    if stored is not None:
        vec, preds = stored.embedding, stored.predictions
    else:
        _, analysis, _ = _analyze_file(cat, Path(track.path), info.model_id)
        vec, preds = np.asarray(analysis.embedding, np.float32), dict(analysis.predictions)
    return ResolvedQuery(vec, model_id, track, track.path, frozenset(tags), preds, attrs)


def _filter_mask(cat: Catalog, index, where: str | None, include_suggested: bool,
                 exclude: Iterable[int] = (), reference: dict | None = None):
    """The index's cached :class:`~soundalike.search.index.Selection` for ``where`` (None: no filter).

    ``reference``: the query's attributes, for terms relative to it (``key:compatible``);
    it joins the cache key only when the filter uses it.
    """
    from soundalike.catalog.query import parse

    q = parse(where)
    if not q:
        return None
    ref = reference if q.needs_reference() else None
    if q.needs_reference() and reference is None:
        ref = {}  # compile_sql says what is missing
    key = ("where", q.text, include_suggested, (ref or {}).get("camelot") if ref is not None else None)
    return index.cached_selection(key, lambda: cat.match(q, include_suggested=include_suggested,
                                                         reference=ref))


def bpm_filter(bpm: float, tolerance: float) -> str:
    """A ``bpm:`` filter term for tempi within ``tolerance`` (a fraction) of ``bpm``, or of
    half or double it (a 64-BPM track mixes with a 128-BPM one)."""
    if not 0 < tolerance < 1:
        raise QueryError(f"bpm tolerance must be between 0 and 100 %, got {tolerance:.0%}")
    parts = [f"{f * bpm * (1 - tolerance):.3f}..{f * bpm * (1 + tolerance):.3f}" for f in (0.5, 1.0, 2.0)]
    return "bpm:" + "|".join(parts)


def parse_tolerance(text: str | float | None) -> float | None:
    """``"6%"``, ``"6"`` (percent) or ``0.06`` -> 0.06; ``None`` stays ``None``."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        v = float(text)
        return v / 100 if v >= 1 else v
    t = str(text).strip().rstrip("%").strip()
    try:
        v = float(t)
    except ValueError:
        raise QueryError(f"bpm tolerance must be a percentage like 6%, got {text!r}") from None
    return v / 100 if (str(text).strip().endswith("%") or v >= 1) else v


def _hits(cat: Catalog, ids: np.ndarray, scores: np.ndarray, query_tags: frozenset[tuple[str, str]],
          sources: Sequence[str], query_attributes: dict | None = None,
          known: tuple[dict, dict, dict] | None = None) -> list[Hit]:
    """Hits for ``ids``; ``known``: the ``(tracks, attributes, tag lists)`` the search already
    read (then only the tags of hits whose list was not read are read here)."""
    keep = [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0]
    hit_ids = [i for i, _ in keep]
    tracks, attrs, lists = known if known is not None else (*cat.tracks_and_attributes(hit_ids), {})
    # the hits' tags, read once: their shared tags here, their tag lists for a caller (the web rows)
    lists = {i: lists[i] for i in hit_ids if i in lists}
    unread = [i for i in hit_ids if i not in lists]
    if sources and unread:
        lists.update(cat.tag_lists(unread, sources=sources))
    tag_sets = {i: {(g.category, g.tag) for g in lst} for i, lst in lists.items()}
    hits = []
    for i, s in keep:
        if i not in tracks:
            continue
        shared = sorted(query_tags & tag_sets.get(i, set()))
        hits.append(Hit(tracks[i], s, len(hits) + 1, tuple(SharedTag(c, t) for c, t in shared),
                        attrs.get(i), query_attributes, tuple(lists[i]) if i in lists else None))
    return hits


def _candidate(track, score: float, attrs: dict | None):
    from soundalike.search.diversity import Candidate, album_key

    a = attrs or {}
    return Candidate(track.id, score, track.artist, album_key(track.album, track.path), track.content_hash,
                     a.get("duration_s") or track.duration_s, track.title,
                     a.get("bpm"), a.get("camelot"), a.get("loudness_lufs"))


def _diverse_search(cat: Catalog, index, rq: ResolvedQuery, k: int, *, mask, exclude: list[int],
                    max_per_artist: int | None, max_per_album: int | None, include_duplicates: bool,
                    sources: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray, tuple[dict, dict, dict]]:
    """The first ``k`` hits that pass the caps and the near-duplicate rule, fetching more
    candidates (x4 each round) until enough pass or the index runs out; also the
    candidates' ``(tracks, attributes)`` as read (the hits are among them) and the tag
    lists (from ``sources``) of the best ``2 k`` candidates, read by the same statement:
    the hits are nearly always among those, and :func:`_hits` reads any that are not."""
    from soundalike.catalog.store import CHUNK_WITH_SOURCES

    from soundalike.search.diversity import diversify

    seed = _candidate(rq.track, 1.0, rq.attributes) if rq.track else None
    if seed is None and rq.attributes:
        from soundalike.search.diversity import Candidate

        seed = Candidate(-1, 1.0, duration_s=rq.attributes.get("duration_s"))
    n = k if (include_duplicates and not max_per_artist and not max_per_album) else 4 * k + 8
    total = len(index)
    while True:
        ids, scores = index.search(rq.vector, n, allowed=mask, exclude_ids=np.asarray(exclude, np.int64))
        stages.mark("search")
        ids, scores = ids[0], scores[0]
        ok = ids >= 0
        ids, scores = ids[ok], scores[ok]
        # the rows of the best 2 k candidates first: diversify takes the first k that pass,
        # in order, so when k pass among them the rest cannot change the hits, and are
        # read only when fewer pass (the same hits as reading all n at once; 20 rows
        # instead of 48 for k = 10 nearly always)
        if sources and len(ids) <= CHUNK_WITH_SOURCES:  # one round trip
            read = min(len(ids), 2 * k)
            tracks, attrs, lists = cat.candidates_and_tags(ids[:read].tolist(), tag_ids=ids[:2 * k].tolist(),
                                                           sources=sources)
        else:
            read = len(ids)
            (tracks, attrs), lists = cat.tracks_and_attributes(ids.tolist()), {}
        stages.mark("candidates_read")
        cands = [_candidate(tracks[int(i)], float(s), attrs.get(int(i)))
                 for i, s in zip(ids[:read], scores[:read], strict=True) if int(i) in tracks]
        chosen = list(diversify(cands, k=k, seed=seed, max_per_artist=max_per_artist,
                                max_per_album=max_per_album, include_duplicates=include_duplicates))
        if len(chosen) < k and read < len(ids):  # the rest of this round's candidates
            more, more_attrs = cat.tracks_and_attributes(ids[read:].tolist())
            tracks.update(more)
            attrs.update(more_attrs)
            cands += [_candidate(more[int(i)], float(s), more_attrs.get(int(i)))
                      for i, s in zip(ids[read:], scores[read:], strict=True) if int(i) in more]
            chosen = list(diversify(cands, k=k, seed=seed, max_per_artist=max_per_artist,
                                    max_per_album=max_per_album, include_duplicates=include_duplicates))
            stages.mark("candidates_rest")
        if len(chosen) >= k or len(ids) < n or n >= total:
            return (np.asarray([c.id for c in chosen], np.int64)[None, :],
                    np.asarray([c.score for c in chosen], np.float32)[None, :], (tracks, attrs, lists))
        n = min(total, n * 4)


def nearest_to_vector(catalog: Catalog | str | os.PathLike | None, *, model_id: str, vector: np.ndarray,
                      k: int = 10, where: str | None = None, exclude_ids: Iterable[int] = (),
                      include_suggested: bool = False, segments: bool = True) -> list[Hit]:
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
    segments : also score each track by its best-matching segment vector (the vector is a
        clip's, e.g. a live window; :mod:`soundalike.search.segments`)

    Returns
    -------
    list[Hit]
        best first; ``shared_tags`` is empty (a bare vector has no tags).
    """
    from soundalike.search.sync import cached_index

    with open_catalog(catalog) as cat:
        index = cached_index(cat, model_id)
        mask = _filter_mask(cat, index, where, include_suggested)
        if segments:
            from soundalike.search.segments import clip_index

            index = clip_index(cat, index, model_id)
        ids, scores = index.search(np.asarray(vector, np.float32), k, allowed=mask,
                                   exclude_ids=np.fromiter((int(i) for i in exclude_ids), np.int64))
        return _hits(cat, ids[0], scores[0], frozenset(), ())


def similar(query: int | str | os.PathLike, *, k: int = 10, where: str | None = None, model: str | None = None,
            exclude_same_artist: bool = False, include_suggested: bool = False,
            max_per_artist: int | None = None, max_per_album: int | None = None,
            include_duplicates: bool = False, bpm_tolerance: float | str | None = None,
            catalog: Catalog | str | os.PathLike | None = None, rerank: bool | None = None) -> list[Hit]:
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
    max_per_artist, max_per_album : at most this many hits per artist / per album
    include_duplicates : keep the query's near-duplicates (same file content, the same
        audio, or a version of nearly the same length; :mod:`.diversity`), left out by default
    bpm_tolerance : only tracks whose tempo is within this of the query's, or of half or
        double it: a fraction (0.06) or a percentage (``"6%"``)
    catalog : open catalog, catalog path, or ``None`` for the default catalog
    rerank : re-rank a catalog track's nearest candidates by diffusion over their own
        neighbour graph (:mod:`soundalike.search.rerank`; ``None``: on unless
        ``SOUNDALIKE_RERANK=0``); scores stay cosine similarities

    Returns
    -------
    list[Hit]
        at most ``k``; the query track itself is never among them.  Each hit's ``why``
        lists the tags it shares with the query, then its BPM, key and length next to the
        query's.

    Raises
    ------
    QueryError, TrackNotFoundError, CatalogError, ModelMismatchError, AudioDecodeError
    """
    return similar_with_query(query, k=k, where=where, model=model, exclude_same_artist=exclude_same_artist,
                              include_suggested=include_suggested, max_per_artist=max_per_artist,
                              max_per_album=max_per_album, include_duplicates=include_duplicates,
                              bpm_tolerance=bpm_tolerance, catalog=catalog, rerank=rerank)[1]


def _model_and_query(cat: Catalog, model: str | None, query, sources: Sequence[str]):
    """The model to compare, the catalog's change token (None: not read) and, for a track id
    query, its :meth:`~Catalog.query_track_data` (None: not read), in as few statements as
    may be: one for a track id (the token comes with the track's row, and the default model
    is the one this open catalog found at that token), else one for the default model and
    the token (none when a model id is named)."""
    from soundalike.search.sync import lookup_model, model_info_and_token

    qid = int(query) if isinstance(query, (int, np.integer)) else None
    if model is None:
        seen = cat.remembered_default_model()
        if qid is not None and seen is not None:
            *data, token = cat.query_track_and_token(qid, model_id=seen[0], sources=sources)
            if token == seen[1]:  # nothing committed since the default was found: it still is
                info = lookup_model(cat, seen[0])
                if info is not None:
                    return info, token, tuple(data)
        # the default model and the change token in one statement
        info, token = model_info_and_token(cat, None)
        if qid is None:
            return info, token, None
        return info, token, cat.query_track_data(qid, model_id=info.model_id, sources=sources)
    info, _ = model_info_and_token(cat, model)  # a model id is remembered: no statement
    if qid is None:
        return info, None, None
    *data, token = cat.query_track_and_token(qid, model_id=info.model_id, sources=sources)
    return info, token, tuple(data)


def similar_with_query(query: int | str | os.PathLike, *, k: int = 10, where: str | None = None,
                       model: str | None = None, exclude_same_artist: bool = False,
                       include_suggested: bool = False, max_per_artist: int | None = None,
                       max_per_album: int | None = None, include_duplicates: bool = False,
                       bpm_tolerance: float | str | None = None,
                       catalog: Catalog | str | os.PathLike | None = None,
                       max_clip_s: float | None = MAX_CLIP_S,
                       rerank: bool | None = None) -> tuple[ResolvedQuery, list[Hit]]:
    """:func:`similar`, also returning what the query resolved to (for display); an outside
    clip longer than ``max_clip_s`` seconds raises :class:`AudioTooLongError`."""
    from soundalike.catalog.query import parse
    from soundalike.search.sync import cached_index

    if k < 1:
        raise QueryError(f"k must be at least 1, got {k}")
    for name, cap in (("max_per_artist", max_per_artist), ("max_per_album", max_per_album)):
        if cap is not None and cap < 1:
            raise QueryError(f"{name} must be at least 1, got {cap}")
    tol = parse_tolerance(bpm_tolerance)
    parse(where)  # fail on a bad filter before any decoding
    sources = (*_WHY_SOURCES, "suggested") if include_suggested else _WHY_SOURCES
    with open_catalog(catalog) as cat:
        info, token, prefetched = _model_and_query(cat, model, query, sources)
        stages.mark("query_read")
        rq = resolve_query(cat, query, model_id=info.model_id, include_suggested=include_suggested,
                           max_clip_s=max_clip_s, prefetched=prefetched)
        if tol is not None:
            bpm = (rq.attributes or {}).get("bpm")
            if not bpm:
                raise QueryError(f"{rq.label}: no tempo known, so --bpm-tolerance cannot apply "
                                 f"(run `soundalike ingest DIR --refresh attributes`)")
            where = f"{where or ''} {bpm_filter(float(bpm), tol)}".strip()
        index = cached_index(cat, info.model_id, token=token)
        stages.mark("resolve_index")
        mask = _filter_mask(cat, index, where, include_suggested, reference=rq.attributes)
        stages.mark("filter")
        if rq.track is None:  # an outside clip: also scored by each track's best segment
            from soundalike.search.segments import clip_index

            index = clip_index(cat, index, info.model_id)
        else:  # a catalog track: its nearest re-ranked by their own neighbour graph
            from soundalike.search.rerank import wrap

            index = wrap(index, enabled=rerank)
        exclude = [rq.track.id] if rq.track else []
        if exclude_same_artist and rq.track and rq.track.artist:
            exclude += cat.ids_by_artist(rq.track.artist)
        ids, scores, known = _diverse_search(cat, index, rq, k, mask=mask, exclude=exclude,
                                             max_per_artist=max_per_artist, max_per_album=max_per_album,
                                             include_duplicates=include_duplicates, sources=sources)
        hits = _hits(cat, ids[0], scores[0], rq.tags, sources, rq.attributes, known=known)
        stages.mark("hits")
        return (replace(rq, token=token) if token is not None else rq), hits
