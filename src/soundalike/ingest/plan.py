"""The analysis budget: how much of each track ingest decodes and runs through a model.

A *full* analysis decodes the whole file and runs every patch (every 3 s for musicnn);
a *spread* analysis (``spread:N``) runs at most ``N`` patches spread evenly over the
track; :func:`analyze_track` decodes only those, each by seeking
(:func:`soundalike.audio.io.load_excerpts`): a 4-minute track costs 10 patches instead of 80.
Ingest does the same (:func:`soundalike.ingest.pipeline.seek_pass`); with ``--peaks`` (the
waveform's peaks need every sample) it decodes each file once, whole, and cuts the same
patches from that pass (:func:`soundalike.ingest.pipeline.one_pass`).

The sampled patches are a subset of the full analysis's own patch grid (patch ``k``
covers the same samples in both), so a spread embedding is the mean of ``N`` of the
full analysis's patch vectors: an estimate of the same quantity in the same space, not a
different model.  That is why both share the model id and mix in one index; the
catalog records per analysis which one made it (``analyses.analysis``: ``'full'`` or
``'spread:N'``), and a track whose analysis covers less than the requested one is
re-analyzed (``full`` covers every ``spread:N``; ``spread:M`` covers ``spread:N`` for
``M >= N``).  A track with no more than ``N`` patches gets the full analysis, and it is
recorded as such, because it is one.

Positions are a pure function of the track's length (from the file header), so the
same file always gets the same patches, on any machine and under any worker count.

Examples
--------
>>> plan = AnalysisPlan.parse("spread:10")
>>> str(plan), plan.n_patches
('spread:10', 10)
>>> spread_indices(n_patches_full=80, n=4)
[10, 30, 50, 70]
>>> AnalysisPlan.parse("full").covers("spread:10"), AnalysisPlan.parse("spread:10").covers("full")
(False, True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from soundalike.errors import ConfigError
from soundalike.models.base import Analysis, PatchGrid

if TYPE_CHECKING:
    from soundalike.catalog.store import Catalog

__all__ = ["DEFAULT_ANALYSIS", "AnalysisPlan", "Excerpt", "PatchGrid", "TrackAnalysis", "analyze_excerpts",
           "analyze_track", "default_analysis", "patch_grid", "planned_patches", "spread_indices",
           "store_track_segments", "track_segments", "MAX_SEGMENTS"]

#: The default analysis budget, chosen by measurement (README "Analysis budget"): on the
#: game-soundtrack set, same-soundtrack P@10 of spread:10 is within 0.01 of the full
#: analysis while a 4-minute track runs 8x fewer patches.  An analyzer may say its own
#: (``default_analysis``, see :func:`default_analysis`): musicnn-fusion holds with 6.
DEFAULT_ANALYSIS = "spread:10"

#: Most segment vectors a track keeps for segment-aware search (soundalike.search.segments):
#: the analysis budget's default patch count.
MAX_SEGMENTS = 10

_SPREAD = re.compile(r"^spread:(\d+)(\+opening)?$")

#: Seconds per patch (and between patch starts) for analyzers that do not say.
GENERIC_PATCH_S = 3.0


@dataclass(frozen=True)
class AnalysisPlan:
    """How much of a track to analyze: ``n_patches=None`` is the full analysis.

    Attributes
    ----------
    n_patches : at most this many patches, spread evenly; ``None`` = every patch
    opening : the first of them at the track's opening (``spread:N+opening``,
        :func:`spread_indices`)
    """

    n_patches: int | None = None
    opening: bool = False

    @classmethod
    def parse(cls, text: str | AnalysisPlan | None) -> AnalysisPlan:
        """``"full"``, ``"spread:N"`` or ``"spread:N+opening"`` (N >= 1); ``None`` gives
        :data:`DEFAULT_ANALYSIS`.

        Raises
        ------
        ConfigError
            Anything else.
        """
        if isinstance(text, AnalysisPlan):
            return text
        s = (DEFAULT_ANALYSIS if text is None else str(text)).strip().lower()
        if s == "full":
            return cls(None)
        m = _SPREAD.match(s)
        if m and int(m.group(1)) >= 1:
            return cls(int(m.group(1)), opening=bool(m.group(2)))
        raise ConfigError(f"analysis {text!r}: use 'full', 'spread:N' or 'spread:N+opening' with N >= 1 "
                          f"(e.g. spread:10)")

    @property
    def full(self) -> bool:
        return self.n_patches is None

    def __str__(self) -> str:
        if self.n_patches is None:
            return "full"
        return f"spread:{self.n_patches}" + ("+opening" if self.opening else "")

    def covers(self, other: str | AnalysisPlan) -> bool:
        """Whether an analysis made with this plan is at least as thorough as ``other``
        (as many patches or more; which patch hears the opening does not count)."""
        o = AnalysisPlan.parse(other)
        if self.full:
            return True
        return not o.full and self.n_patches >= o.n_patches


def default_analysis(analyzer) -> str:
    """The analysis budget ingest uses for ``analyzer`` when none is asked for.

    The analyzer's own ``default_analysis`` (measured for it: ``musicnn-fusion`` keeps
    P@10 within 0.01 of its full analysis with 6 spread patches, where MTT_musicnn alone
    needs 10), else :data:`DEFAULT_ANALYSIS`.
    """
    own = getattr(analyzer, "default_analysis", None)
    return str(AnalysisPlan.parse(own)) if own else DEFAULT_ANALYSIS


def patch_grid(analyzer) -> PatchGrid:
    """The analyzer's own patch grid (``analyzer.patch_grid``), else 3-s patches at its rate."""
    grid = getattr(analyzer, "patch_grid", None)
    if isinstance(grid, PatchGrid):
        return grid
    n = int(round(GENERIC_PATCH_S * analyzer.sample_rate))
    return PatchGrid(int(analyzer.sample_rate), n, n)


#: ``spread:N+opening``: the patch that hears a track's first part -- the second of the full
#: analysis's grid (3-6 s), past a silent or fading first few seconds.
OPENING_PATCH = 1


def spread_indices(*, n_patches_full: int, n: int, opening: bool = False) -> list[int] | None:
    """Indices of ``n`` patches spread evenly over ``n_patches_full``; ``None`` = take them all.

    Patch ``i`` is the middle patch of the ``i``-th of ``n`` equal parts of the track,
    so the beginning, the middle and the end are all heard and none twice.
    ``opening`` (``spread:N+opening``, N >= 2): the first part is heard at its start
    instead (:data:`OPENING_PATCH`, 3-6 s), so a clip of a track's opening, which the
    middles skip, has a segment vector of its own.  Measured on 117 game soundtracks at
    6 patches (README, "Clips"): 10-s openings find their own track 0.778 -> 0.983 of the
    time, random 10-s clips 0.957 -> 0.966, but same-soundtrack P@10 through ``similar``
    0.611 -> 0.601 (an opening says less about a track than its first part's middle):
    opt-in.
    """
    if n_patches_full <= n:
        return None
    picks = [int((i + 0.5) * n_patches_full / n) for i in range(n)]
    if opening and n >= 2:
        picks[0] = min(OPENING_PATCH, picks[1] - 1)
    return picks


def planned_patches(analyzer, plan: str | AnalysisPlan | None, *, frames: int,
                    source_sr: int) -> list[int] | None:
    """Which of the full analysis's patches ``plan`` runs on a file; ``None`` = all of them.

    Parameters
    ----------
    analyzer : the analyzer (its :func:`patch_grid`)
    plan : the analysis plan
    frames, source_sr : the file's length in samples and its rate (from the header)
    """
    plan = AnalysisPlan.parse(plan)
    if plan.full or not source_sr or frames <= 0:
        return None
    grid = patch_grid(analyzer)
    return spread_indices(n_patches_full=grid.n_patches(int(frames * grid.sr // source_sr)),
                          n=plan.n_patches, opening=plan.opening)


@dataclass(frozen=True)
class Excerpt:
    """Decoded audio an analysis looked at: ``y`` float32 ``(n,)`` at ``sr`` from ``start_s``."""

    start_s: float
    y: np.ndarray
    sr: int

    @property
    def duration_s(self) -> float:
        return len(self.y) / self.sr


@dataclass(frozen=True)
class TrackAnalysis:
    """One track's analysis and what was decoded for it.

    Attributes
    ----------
    analysis : the analyzer's output (embedding, predictions, per-patch rows)
    setting : what made it: ``"full"`` or ``"spread:N"`` (stored with the analysis)
    decoded_s : seconds of audio decoded (excerpts only, for a spread analysis)
    excerpts : the decoded audio, in time order, at the analyzer's rate, for later
        stages that want the same samples (tempo, key, loudness) without decoding again
    """

    analysis: Analysis
    setting: str
    decoded_s: float
    excerpts: list[Excerpt] = field(default_factory=list)


def analyze_excerpts(analyzer, excerpts: list[np.ndarray], sr: int) -> Analysis:
    """Analyze patch-sized excerpts as the full analysis would analyze those patches.

    An analyzer with ``analyze_excerpts`` (the pretrained taggers: one batched pass, one
    patch per excerpt) does it itself; any other is run on each excerpt alone and its
    embeddings and predictions are averaged with equal weights, as
    :func:`~soundalike.ingest.pipeline.analyze_in_blocks` averages blocks.
    """
    if not excerpts:
        raise ValueError("no excerpts to analyze")
    own = getattr(analyzer, "analyze_excerpts", None)
    if own is not None:
        return own(excerpts, sr)
    parts = [analyzer.analyze(y, sr) for y in excerpts]
    each = np.stack([p.embedding.astype(np.float32) for p in parts])
    emb = each.astype(np.float64).mean(axis=0).astype(np.float32)
    preds = {k: float(np.mean([p.predictions[k] for p in parts])) for k in parts[0].predictions}
    # one row per excerpt: what segment-aware search stores (soundalike.search.segments)
    return Analysis(embedding=emb, predictions=preds, patch_embeddings=each)


def analyze_track(path: str | Path, *, analyzer, plan: str | AnalysisPlan | None = None,
                  frames: int | None = None, source_sr: int | None = None) -> TrackAnalysis:
    """Analyze one file under ``plan``: spread patches read by seeking, or the whole file.

    Parameters
    ----------
    path : audio file
    analyzer : an :class:`~soundalike.models.base.Analyzer`
    plan : ``"full"``, ``"spread:N"`` or an :class:`AnalysisPlan` (default :data:`DEFAULT_ANALYSIS`)
    frames, source_sr : the file's length in samples and its rate, from its header
        (read here when not given)

    Returns
    -------
    TrackAnalysis

    Raises
    ------
    AudioDecodeError
        The file cannot be read.
    """
    from soundalike.audio.io import MIN_DURATION_S, info, load, load_excerpts
    from soundalike.errors import AudioDecodeError

    plan = AnalysisPlan.parse(plan)
    if frames is None or source_sr is None:
        meta = info(path)
        frames, source_sr = meta.frames, meta.sr
    grid = patch_grid(analyzer)
    picks = planned_patches(analyzer, plan, frames=frames, source_sr=source_sr)
    if picks is not None:
        ys = load_excerpts(path, sr=grid.sr, starts=[grid.start(k) for k in picks], length=grid.length)
        kept = [(k, y) for k, y in zip(picks, ys) if len(y) >= MIN_DURATION_S * grid.sr]
        if not kept:
            raise AudioDecodeError(path, "no audio where the header says the track has it")
        excerpts = [Excerpt(grid.start(k) / grid.sr, y, grid.sr) for k, y in kept]
        a = analyze_excerpts(analyzer, [e.y for e in excerpts], grid.sr)
        return TrackAnalysis(a, str(plan), float(sum(e.duration_s for e in excerpts)), excerpts)
    wav = load(path, sr=grid.sr)
    a = analyzer.analyze(wav.y, wav.sr)
    return TrackAnalysis(a, "full", wav.duration_s, [Excerpt(0.0, wav.y, wav.sr)])


def store_track_segments(cat: Catalog, track_id: int, *, model_id: str,
                         segments: tuple[np.ndarray, np.ndarray] | None, adaptations: list | None = None) -> None:
    """Store a just-analysed track's segment vectors in the spaces search compares.

    Parameters
    ----------
    segments : ``(starts (n,) s, base vectors (n, dim))`` from
        :func:`soundalike.ingest.plan.track_segments`, or None (the analysis kept none:
        the track's old segments are dropped, so none go stale)
    adaptations : the catalog's :class:`~soundalike.models.adapt.Adaptation` objects of
        ``model_id`` (ingest has them loaded already)
    """
    from soundalike.models.adapt import segment_spaces

    with cat.transaction():
        for mid, seg in segment_spaces(model_id=model_id, segments=segments, adaptations=adaptations).items():
            if seg is None:
                cat.delete_segments(mid, [track_id])
            else:
                cat.put_segments(track_id, mid, *seg)


def track_segments(ta: TrackAnalysis, analyzer, *, most: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """The segment vectors a track keeps (:mod:`soundalike.search.segments`), from its analysis.

    One per analysed patch, at most ``most`` (default
    :data:`MAX_SEGMENTS`) spread over the track: a spread
    analysis gives its excerpts' patch vectors as they are, a full one the patches at the
    spread positions.  Nothing is computed again.

    Returns
    -------
    ``(starts float32 (n,) seconds, vectors float32 (n, dim))``, or None when the analyzer
    gives no per-patch vectors in the space of its track vectors.
    """
    P = ta.analysis.patch_embeddings
    emb = np.asarray(ta.analysis.embedding)
    if P is None or len(P) == 0 or P.ndim != 2 or P.shape[1] != emb.shape[-1]:
        return None
    most = MAX_SEGMENTS if most is None else int(most)
    if ta.setting != "full" and len(ta.excerpts) == len(P):  # one patch per excerpt
        starts = np.asarray([e.start_s for e in ta.excerpts], np.float32)
    else:
        grid = patch_grid(analyzer)
        starts = np.asarray([max(0, grid.start(k)) / grid.sr for k in range(len(P))], np.float32)
    pick = spread_indices(n_patches_full=len(P), n=most)
    ix = np.arange(len(P)) if pick is None else np.asarray(pick)
    return starts[ix], np.asarray(P, np.float32)[ix]
