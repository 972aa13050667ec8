"""Tag completion: suggest tags for tracks that lack any tag in a category.

Two sources of evidence, each giving a confidence in [0, 1]:

* **neighbours** -- the ``k`` most similar tracks *that have* a file/user tag in the
  category (found with an in-search filter) vote for their tags, weighted by a kernel
  on their cosine similarity ``w_i = exp((cos_i - 1) / T)``:
  ``conf(tag) = sum(w_i * has_i) / sum(w_i)``;
* **model** -- the analyzer's prediction for a label that is a known value of that
  category (a label ``rock`` counts for ``genre`` when some file/user tag says
  ``genre:rock``, or when the category is the model's own ``label_category``).

A tag's confidence is the larger of the two.  Suggestions are stored with
``source='suggested'`` (and the model id), apart from file, user and model tags, and
are replaced as a whole on the next run; filters use them only on request
(``include_suggested``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from soundalike.catalog.store import Catalog

#: Sources whose tags count as "the track has a tag in this category" and as votes.
KNOWN_SOURCES = ("file", "user")
#: Categories completed only when asked for by name.
NOT_SUGGESTED_BY_DEFAULT = ("artist",)


@dataclass(frozen=True)
class Suggestion:
    """One suggested tag for one track.

    Attributes
    ----------
    track_id : the track
    category : tag category (``genre``, ``mood`` ...)
    tag : suggested value (lower-case)
    confidence : in [0, 1]
    evidence : ``"neighbors"``, ``"model"`` or ``"both"``
    """

    track_id: int
    category: str
    tag: str
    confidence: float
    evidence: Literal["neighbors", "model", "both"]

    def to_dict(self) -> dict:
        return {"track_id": self.track_id, "category": self.category, "tag": self.tag,
                "confidence": round(self.confidence, 4), "evidence": self.evidence}


def suggest_tags(cat: Catalog, *, model: str | None = None, categories: list[str] | None = None,
                 k_neighbors: int = 10, min_confidence: float = 0.3, per_category: int = 3,
                 track_ids: list[int] | None = None, temperature: float = 0.05) -> list[Suggestion]:
    """Suggest tags for tracks lacking a file/user tag in a category.

    Parameters
    ----------
    cat : open catalog
    model : model name or id whose embeddings and predictions to use (default: the
        catalog's most used model)
    categories : categories to complete (default: every category with file/user tags
        except ``artist``)
    k_neighbors : neighbours consulted per track and category
    min_confidence : suggestions below this are dropped
    per_category : at most this many suggestions per track and category
    track_ids : only these tracks (default: every analysed ``ok`` track)
    temperature : neighbour weights are ``exp((cos - 1) / temperature)``: a neighbour
        0.1 less similar than a perfect match counts ``e**-2`` as much

    Returns
    -------
    list[Suggestion]
        ordered by track id, category, confidence (highest first).
    """
    from soundalike.search.sync import cached_index, model_info

    info = model_info(cat, model)
    index = cached_index(cat, info.model_id)
    known = cat.known_tags(sources=KNOWN_SOURCES, categories=categories)
    # By default: the categories people tag by hand.  The model's own label category is
    # already stored as model tags at ingest, and an artist is a fact, not a guess to offer.
    cats = sorted(set(categories) if categories else set(known) - set(NOT_SUGGESTED_BY_DEFAULT))
    candidates = index.track_ids()
    if track_ids is not None:
        candidates = np.intersect1d(candidates, np.asarray(track_ids, np.int64))
    label_set = set(info.labels)
    out: list[Suggestion] = []
    for category in cats:
        have = known.get(category, {})
        lacking = np.array([t for t in candidates if int(t) not in have], np.int64)
        if not len(lacking):
            continue
        # model evidence: labels that are values of this category
        vocab = {tag for tags in have.values() for tag in tags}
        usable = label_set if category == info.label_category else (label_set & vocab)
        model_votes: dict[int, dict[str, float]] = {}
        if usable:
            for tid in lacking:
                a = cat.get_analysis(int(tid), info.model_id)
                if a is not None:
                    model_votes[int(tid)] = {lbl: float(p) for lbl, p in a.predictions.items() if lbl in usable}
        # neighbour evidence: search only among tracks that have a tag in the category
        nb_votes: dict[int, dict[str, float]] = {}
        labelled = np.fromiter(have.keys(), np.int64, len(have))
        if len(labelled):
            mask = index.allowed_mask(labelled)
            if mask.any():
                kk = min(k_neighbors, int(mask.sum()))
                for start in range(0, len(lacking), 1024):
                    chunk = lacking[start : start + 1024]
                    ids, scores = index.search(index.vectors(chunk), kk, allowed=mask)
                    for tid, row_ids, row_s in zip(chunk, ids, scores, strict=True):
                        w = np.exp((np.where(row_ids >= 0, row_s, -np.inf) - 1.0) / temperature)
                        total = float(w.sum())
                        if total <= 0:
                            continue
                        votes: dict[str, float] = defaultdict(float)
                        for nid, wi in zip(row_ids, w, strict=True):
                            if nid >= 0 and wi > 0:
                                for tag in have.get(int(nid), ()):
                                    votes[tag] += float(wi) / total
                        nb_votes[int(tid)] = dict(votes)
        for tid in lacking:
            t = int(tid)
            nb, md = nb_votes.get(t, {}), model_votes.get(t, {})
            merged = []
            for tag in set(nb) | set(md):
                a, b = nb.get(tag, 0.0), md.get(tag, 0.0)
                conf = max(a, b)
                if conf < min_confidence:
                    continue
                evidence = "both" if (a >= min_confidence and b >= min_confidence) else (
                    "neighbors" if a >= b else "model")
                merged.append(Suggestion(t, category, tag, min(conf, 1.0), evidence))
            merged.sort(key=lambda s: (-s.confidence, s.tag))
            out.extend(merged[:per_category])
    out.sort(key=lambda s: (s.track_id, s.category, -s.confidence, s.tag))
    return out


def apply_suggestions(cat: Catalog, suggestions: list[Suggestion], *, model_id: str,
                      track_ids: list[int] | None = None) -> int:
    """Store suggestions as ``source='suggested'`` tags, replacing earlier ones of ``model_id``.

    Tracks in ``track_ids`` (default: those with suggestions) lose their previous
    suggestions from this model even when they get none now.  Returns the number stored.
    """
    from soundalike.catalog.store import Tag

    by_track: dict[int, list[Tag]] = defaultdict(list)
    for s in suggestions:
        by_track[s.track_id].append(Tag(s.tag, s.category, "suggested", s.confidence, model_id))
    targets = set(by_track) | set(track_ids or ())
    with cat.transaction():
        for tid in sorted(targets):
            cat.set_tags(tid, by_track.get(tid, []), source="suggested", model_id=model_id)
    return sum(len(v) for v in by_track.values())
