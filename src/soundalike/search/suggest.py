"""Tag completion: suggest tags for tracks that lack any tag in a category.

The evidence, pooled into one confidence in [0, 1):

* **neighbours** -- the ``k`` most similar tracks *that have* a file/user tag in the
  category (found with an in-search filter) vote for their tags, each with a closeness
  weight ``w_i = exp((cos_i - 1) / T)`` (1 for an identical track, ``e**-2`` for one 0.1
  less similar);
* **model** -- the analyzer's probability ``p`` for a label that is a known value of the
  category (a label ``rock`` counts for ``genre`` when some file/user tag says
  ``genre:rock``, or when the category is the model's own ``label_category``), counted
  as ``MODEL_WEIGHT`` neighbours' worth of votes.

``conf(tag) = (sum(w_i * has_i) + MODEL_WEIGHT * p) / (sum(w_i) + MODEL_WEIGHT + PRIOR)``:
the ``PRIOR`` is doubt worth half an identical neighbour, so confidence grows with how
many neighbours agree and how close they are -- one distant neighbour gives a few per
cent, one identical neighbour 0.67, ten close agreeing ones about 0.95 -- and never
reaches 1.  In a *single-valued* category (no track has two values, as genre or mood
usually are) the votes of a track's values share one total, so two values can never
both be confident: their confidences add up to less than 1.  Suggestions are stored with
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
#: Doubt added to every vote total, in units of an identical neighbour's weight.
PRIOR = 0.5
#: What the model's own probability counts for, in identical neighbours.
MODEL_WEIGHT = 1.0


@dataclass(frozen=True)
class Suggestion:
    """One suggested tag for one track.

    Attributes
    ----------
    track_id : the track
    category : tag category (``genre``, ``mood`` ...)
    tag : suggested value (lower-case)
    confidence : in [0, 1)
    evidence : ``"neighbors"``, ``"model"`` or ``"both"``
    n_neighbors : how many of the consulted neighbours carry this tag
    n_consulted : how many neighbours were consulted
    """

    track_id: int
    category: str
    tag: str
    confidence: float
    evidence: Literal["neighbors", "model", "both"]
    n_neighbors: int = 0
    n_consulted: int = 0

    @property
    def why(self) -> str:
        """``from 3 of 10 neighbours + model`` and the like."""
        nb = f"from {self.n_neighbors} of {self.n_consulted} neighbours" if self.n_neighbors else ""
        if self.evidence == "model":
            return "from the model" + (f" ({nb[5:]})" if nb else "")
        return nb + (" + model" if self.evidence == "both" else "")

    def to_dict(self) -> dict:
        return {"track_id": self.track_id, "category": self.category, "tag": self.tag,
                "confidence": round(self.confidence, 4), "evidence": self.evidence,
                "neighbors": self.n_neighbors, "consulted": self.n_consulted, "why": self.why}


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
        single_valued = all(len(tags) <= 1 for tags in have.values())
        # model evidence: labels that are values of this category
        vocab = {tag for tags in have.values() for tag in tags}
        usable = label_set if category == info.label_category else (label_set & vocab)
        model_votes: dict[int, dict[str, float]] = {}
        if usable:
            for tid in lacking:
                a = cat.get_analysis(int(tid), info.model_id)
                if a is not None:
                    p = {lbl: float(v) for lbl, v in a.predictions.items() if lbl in usable}
                    total = sum(p.values())
                    if single_valued and total > 1.0:  # independent sigmoids: one share for all values
                        p = {lbl: v / total for lbl, v in p.items()}
                    model_votes[int(tid)] = p
        # neighbour evidence: search only among tracks that have a tag in the category
        nb_votes: dict[int, tuple[float, int, dict[str, float], dict[str, int]]] = {}
        labelled = np.fromiter(have.keys(), np.int64, len(have))
        if len(labelled):
            mask = index.allowed_mask(labelled)
            if mask.any():
                kk = min(k_neighbors, int(mask.sum()))
                for start in range(0, len(lacking), 1024):
                    chunk = lacking[start : start + 1024]
                    ids, scores = index.search(index.vectors(chunk), kk, allowed=mask)
                    for tid, row_ids, row_s in zip(chunk, ids, scores, strict=True):
                        found = row_ids >= 0
                        w = np.exp((np.minimum(row_s[found], 1.0) - 1.0) / temperature)
                        votes: dict[str, float] = defaultdict(float)
                        counts: dict[str, int] = defaultdict(int)
                        for nid, wi in zip(row_ids[found], w, strict=True):
                            tags = have.get(int(nid), ())
                            for tag in tags:
                                # a neighbour with two values of a category gives each half a vote
                                votes[tag] += float(wi) / max(len(tags), 1)
                                counts[tag] += 1
                        nb_votes[int(tid)] = (float(w.sum()), int(found.sum()), dict(votes), dict(counts))
        for tid in lacking:
            t = int(tid)
            weight, consulted, nb, counts = nb_votes.get(t, (0.0, 0, {}, {}))
            md = model_votes.get(t, {})
            denom = weight + (MODEL_WEIGHT if md else 0.0) + PRIOR
            merged = []
            for tag in set(nb) | set(md):
                a, b = nb.get(tag, 0.0), MODEL_WEIGHT * md.get(tag, 0.0)
                conf = (a + b) / denom
                if conf < min_confidence:
                    continue
                evidence = ("both" if min(a, b) >= 0.25 * (a + b) else "neighbors" if a >= b else "model")
                merged.append(Suggestion(t, category, tag, float(conf), evidence, counts.get(tag, 0), consulted))
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
