"""The pretrained taggers' labels sorted into catalog categories: one table, one source.

The MagnaTagATune (``MTT_*``) and Million Song Dataset (``MSD_*``) models predict 50 labels
each; in the catalog a model tag goes into the category this table gives it (``genre``,
``instrument``, ``mood``, ``vocals``, ``tempo-feel``, ``era``, ``texture``), so filters and
facets say ``instrument:piano`` or ``mood:calm`` for model tags as for tags users write
(the tag's source, ``model``, stays visible).  A trained run's labels keep the run's own
category; labels not in the table (none today) fall back to ``tag``.

Some labels also carry a *role* for the attributes derived from them
(:func:`vocals_probability` and :func:`energy_evidence`, which feeds
``audio.attributes.energy_score``): ``+1`` speaks for singing/high energy, ``-1`` against.

Synonyms are kept as the models emit them (``vocal``, ``vocals``, ``voice`` ...): merging
them would change what a tag's probability means.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple


class Term(NamedTuple):
    """One label: its category and its votes for vocals and energy (0 = no say)."""

    category: str
    vocals: int = 0
    energy: int = 0


#: Every category a pretrained label can go into.
CATEGORIES = ("genre", "instrument", "mood", "vocals", "tempo-feel", "era", "texture")

G, I, M, V, T, E, X = CATEGORIES

#: MagnaTagATune labels -> term.
MTT_VOCABULARY: dict[str, Term] = {
    "guitar": Term(I), "classical": Term(G, energy=-1), "slow": Term(T, energy=-1),
    "techno": Term(G, energy=+1), "strings": Term(I), "drums": Term(I, energy=+1),
    "electronic": Term(G), "rock": Term(G, energy=+1), "fast": Term(T, energy=+1),
    "piano": Term(I), "ambient": Term(G, energy=-1), "beat": Term(T, energy=+1),
    "violin": Term(I), "vocal": Term(V, vocals=+1), "synth": Term(I), "female": Term(V, vocals=+1),
    "indian": Term(G), "opera": Term(G, vocals=+1), "male": Term(V, vocals=+1),
    "singing": Term(V, vocals=+1), "vocals": Term(V, vocals=+1), "no vocals": Term(V, vocals=-1),
    "harpsichord": Term(I), "loud": Term(M, energy=+1), "quiet": Term(M, energy=-1),
    "flute": Term(I), "woman": Term(V, vocals=+1), "male vocal": Term(V, vocals=+1),
    "no vocal": Term(V, vocals=-1), "pop": Term(G), "soft": Term(M, energy=-1),
    "sitar": Term(I), "solo": Term(X), "man": Term(V, vocals=+1), "classic": Term(G),
    "choir": Term(V, vocals=+1), "voice": Term(V, vocals=+1), "new age": Term(G, energy=-1),
    "dance": Term(G, energy=+1), "male voice": Term(V, vocals=+1),
    "female vocal": Term(V, vocals=+1), "beats": Term(T, energy=+1), "harp": Term(I),
    "cello": Term(I), "no voice": Term(V, vocals=-1), "weird": Term(M), "country": Term(G),
    "metal": Term(G, energy=+1), "female voice": Term(V, vocals=+1),
    "choral": Term(V, vocals=+1),
}

#: Million Song Dataset (last.fm) labels -> term.
MSD_VOCABULARY: dict[str, Term] = {
    "rock": Term(G, energy=+1), "pop": Term(G), "alternative": Term(G), "indie": Term(G),
    "electronic": Term(G), "female vocalists": Term(V, vocals=+1), "dance": Term(G, energy=+1),
    "00s": Term(E), "alternative rock": Term(G), "jazz": Term(G), "beautiful": Term(M),
    "metal": Term(G, energy=+1), "chillout": Term(M, energy=-1),
    "male vocalists": Term(V, vocals=+1), "classic rock": Term(G), "soul": Term(G),
    "indie rock": Term(G), "mellow": Term(M, energy=-1), "electronica": Term(G), "80s": Term(E),
    "folk": Term(G), "90s": Term(E), "chill": Term(M, energy=-1),
    "instrumental": Term(V, vocals=-1), "punk": Term(G, energy=+1), "oldies": Term(E),
    "blues": Term(G), "hard rock": Term(G, energy=+1), "ambient": Term(G, energy=-1),
    "acoustic": Term(X), "experimental": Term(G), "female vocalist": Term(V, vocals=+1),
    "guitar": Term(I), "hip-hop": Term(G), "70s": Term(E), "party": Term(M, energy=+1),
    "country": Term(G), "easy listening": Term(G, energy=-1), "sexy": Term(M),
    "catchy": Term(M), "funk": Term(G), "electro": Term(G), "heavy metal": Term(G, energy=+1),
    "progressive rock": Term(G), "60s": Term(E), "rnb": Term(G), "indie pop": Term(G),
    "sad": Term(M), "house": Term(G, energy=+1), "happy": Term(M),
}

#: Dataset name (``ModelSpec.dataset``) -> its table.
VOCABULARIES: dict[str, dict[str, Term]] = {"MTT": MTT_VOCABULARY, "MSD": MSD_VOCABULARY}

#: Slope and offset of the logistic that turns :func:`vocals_evidence` into a vocals
#: probability, per tagger vocabulary (:func:`vocals_vocabulary`: ``MTT_musicnn``,
#: ``MSD_musicnn``, and ``musicnn-fusion``, which has both label sets).  Fitted by
#: ``benchmarks/bench_vocals.py`` on the development half of a labelled set built here:
#: instrumental 30-s clips (fluidsynth renders of Debian MIDI files and generated pieces,
#: Debian game soundtracks) against the same clips with a sung line on top (Festival's
#: singing mode, two male diphone voices, in the clip's key and tempo, -6 to +6 dB against
#: the music).  Held out (README, "Vocals"): AUC 0.85, Brier 0.16, ECE 0.10-0.15 for
#: MTT and fusion; MSD's four voice labels carry less (AUC 0.71).  The set is balanced, so
#: the offsets assume half the tracks have a voice.  Real speech over music reads as
#: vocals too (it is voice; the fit did not see it).
VOCALS_CALIBRATION: dict[str, tuple[float, float]] = {
    "MTT": (1.162, 1.189),
    "MSD": (1.800, 3.440),
    "MTT+MSD": (1.338, 1.680),
}
#: Probability of a "no voice" label when a vocabulary has none.
_NO_VOICE_DEFAULT = 0.05

#: Category for labels the table does not know.
FALLBACK_CATEGORY = "tag"


def category_of(label: str, *, dataset: str | None = None) -> str:
    """The catalog category of pretrained ``label`` (``dataset`` ``"MTT"``/``"MSD"`` or
    ``None`` = either; MTT first where both have it)."""
    tables = [VOCABULARIES[dataset]] if dataset else list(VOCABULARIES.values())
    for table in tables:
        if label in table:
            return table[label].category
    return FALLBACK_CATEGORY


@functools.lru_cache(maxsize=8)
def role_labels(role: str, sign: int) -> frozenset[str]:
    """Labels of either vocabulary whose ``role`` (``"vocals"`` or ``"energy"``) is ``sign``."""
    return frozenset(label for table in VOCABULARIES.values() for label, term in table.items()
                     if getattr(term, role) == sign)


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def vocals_vocabulary(predictions: dict[str, float]) -> str | None:
    """Which vocabularies' voice labels ``predictions`` carry: ``"MTT"``, ``"MSD"``,
    ``"MTT+MSD"`` (the fusion analyzer) or ``None`` (no voice label at all)."""
    has = [name for name, table in VOCABULARIES.items()
           if any(term.vocals and label in predictions for label, term in table.items())]
    return "+".join(has) or None


def vocals_evidence(predictions: dict[str, float]) -> float | None:
    """The tagger's evidence for voice, in logits: the mean logit of its voice labels
    (``vocal``, ``female``, ``choir``, ``male vocalists`` ...) minus the mean logit of its
    no-voice labels (``no vocals``, ``instrumental`` ...; 5 % when it has none).  ``None``
    when the labels say nothing about voice (an MFCC baseline, most trained runs).

    Means rather than the strongest label of each side: on the benchmark's development half
    they separate sung from instrumental clips better (AUC 0.87 against 0.84 for both
    musicnn analyzers), and a female and a male voice weigh the same."""
    pos = [_logit(p) for lab, p in predictions.items() if lab in role_labels("vocals", +1)]
    neg = [_logit(p) for lab, p in predictions.items() if lab in role_labels("vocals", -1)]
    if not pos:
        return None
    return sum(pos) / len(pos) - (sum(neg) / len(neg) if neg else _logit(_NO_VOICE_DEFAULT))


def vocals_probability(predictions: dict[str, float], *,
                       calibration: tuple[float, float] | None = None) -> float | None:
    """Probability that a track has singing or voice, from a tagger's label probabilities:
    ``sigmoid(slope * vocals_evidence + offset)`` with ``calibration`` (slope, offset), by
    default the vocabulary's entry in :data:`VOCALS_CALIBRATION` (slope 1, offset 0 for a
    label set it has none for); ``None`` when the labels say nothing about voice."""
    d = vocals_evidence(predictions)
    if d is None:
        return None
    slope, offset = calibration or VOCALS_CALIBRATION.get(vocals_vocabulary(predictions) or "", (1.0, 0.0))
    return round(1.0 / (1.0 + math.exp(-(slope * d + offset))), 3)


def energy_evidence(predictions: dict[str, float]) -> float | None:
    """0..1: the mean of a tagger's high-energy labels (``loud``, ``fast``, ``drums``,
    ``metal`` ...) against the mean of its low-energy ones (``quiet``, ``soft``, ``slow``,
    ``ambient`` ...), as a logistic of the difference of their logits; ``None`` when the
    labels have no say (see ``audio.attributes.energy_score`` for the full score)."""
    pos = [p for lab, p in predictions.items() if lab in role_labels("energy", +1)]
    neg = [p for lab, p in predictions.items() if lab in role_labels("energy", -1)]
    if not pos or not neg:
        return None
    d = _logit(sum(pos) / len(pos)) - _logit(sum(neg) / len(neg))
    return round(1.0 / (1.0 + math.exp(-d)), 3)


__all__ = ["CATEGORIES", "energy_evidence", "vocals_evidence", "vocals_probability", "vocals_vocabulary", "FALLBACK_CATEGORY", "MSD_VOCABULARY", "MTT_VOCABULARY", "Term",
           "VOCABULARIES", "VOCALS_CALIBRATION", "category_of", "role_labels"]
