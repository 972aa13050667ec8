"""Live recognition: sliding windows over a stream, smoothed predictions, nearest tracks.

Blocks from any :mod:`soundalike.live.sources` source go through a streaming
resampler (to the analyzer's rate) into a :class:`RingBuffer`.  Every ``hop_s`` the
latest ``window_s`` of audio is analysed; label probabilities and embeddings are
averaged over the last ``smooth`` windows, and the smoothed embedding is compared with
the catalog's embeddings of the same model id (:class:`TrackMatcher`).

Robustness, by design rather than by luck:

* **silence** -- a window with too few 50 ms frames above ``silence_db`` dBFS is
  reported as ``status="silence"`` with no labels, no decision and no nearest tracks,
  and the smoothing history is cleared so the next sound starts fresh; when sound
  starts or stops inside a window, only the sounding span is analysed;
* **clipping** -- samples are limited to [-1, 1] and the clipped fraction is
  reported; a clipped window is still analysed (its spectrum is still the music's);
* **level** -- each window is scaled to ``target_db`` dBFS RMS (gain limited to
  ``max_gain_db``) before the model sees it, so a quiet microphone and a loud line
  input give the same answer; set ``target_db=None`` to analyse the raw level;
* **rate** -- any input rate is resampled to the analyzer's rate (soxr, streaming).
"""

from __future__ import annotations

import collections
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from soundalike.config import _Fingerprinted
from soundalike.errors import ConfigError, ModelMismatchError
from soundalike.models.base import Analyzer

Status = Literal["ok", "silence"]

_DURATION_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(ms|s|sec|secs|seconds?|m|min|mins|minutes?)?\s*$",
                          re.IGNORECASE)
_UNIT_S = {"ms": 1e-3, "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
           "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``"3s"``, ``"500ms"``, ``"0.5"`` (seconds), ``"2min"`` or a number.

    Raises
    ------
    ConfigError
        Unparseable, negative or non-finite text.
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _DURATION_RE.match(str(text))
        if not m:
            raise ConfigError(f"cannot read {text!r} as a duration; write e.g. 3s, 500ms or 0.5")
        value = float(m.group(1)) * _UNIT_S[(m.group(2) or "s").lower()]
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"a duration must be a finite number of seconds >= 0, got {text!r}")
    return value


@dataclass(frozen=True)
class LiveConfig(_Fingerprinted):
    """How live recognition windows, smooths and decides.

    Attributes
    ----------
    window_s : analysis window length in seconds (3 s = one musicnn patch)
    hop_s : time between predictions in seconds
    smooth : number of most recent windows averaged (1 = no smoothing)
    top : labels and nearest tracks reported per hop
    silence_db : frames (50 ms) with RMS below this many dBFS count as silent
    min_active : fraction of non-silent frames a window needs to be analysed
    min_confidence : smoothed probability the top label needs to become the decision
    target_db : RMS level in dBFS each window is scaled to (``None``: no level control)
    max_gain_db : the largest boost the level control may apply
    clip_level : samples with ``|y| >= clip_level`` count as clipped
    """

    window_s: float = 3.0
    hop_s: float = 0.5
    smooth: int = 4
    top: int = 5
    silence_db: float = -50.0
    min_active: float = 0.3
    min_confidence: float = 0.2
    target_db: float | None = -20.0
    max_gain_db: float = 30.0
    clip_level: float = 0.999

    def __post_init__(self) -> None:
        if not 0.1 <= self.window_s <= 60:
            raise ConfigError(f"window must be 0.1..60 s, got {self.window_s}")
        if not 0.01 <= self.hop_s <= self.window_s:
            raise ConfigError(f"hop must be 0.01 s..window ({self.window_s} s), got {self.hop_s}")
        if self.smooth < 1:
            raise ConfigError(f"smooth must be >= 1 window, got {self.smooth}")
        if self.top < 1:
            raise ConfigError(f"top must be >= 1, got {self.top}")
        if not 0 <= self.min_active <= 1 or not 0 <= self.min_confidence <= 1:
            raise ConfigError("min_active and min_confidence must be in [0, 1]")


# --------------------------------------------------------------------------- buffers


class RingBuffer:
    """A fixed-capacity float32 buffer keeping the most recent ``capacity`` samples.

    Parameters
    ----------
    capacity : samples kept
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ConfigError(f"ring buffer capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._buf = np.zeros(self.capacity, np.float32)
        self._pos = 0  # next write index
        self.total = 0  # samples ever written

    def __len__(self) -> int:
        return min(self.total, self.capacity)

    def write(self, y: np.ndarray) -> None:
        """Append float32 ``(n,)`` samples, overwriting the oldest when full."""
        y = np.asarray(y, np.float32).reshape(-1)
        n = len(y)
        if n == 0:
            return
        if n >= self.capacity:
            self._buf[:] = y[-self.capacity :]
            self._pos = 0
        else:
            end = self._pos + n
            if end <= self.capacity:
                self._buf[self._pos : end] = y
            else:
                k = self.capacity - self._pos
                self._buf[self._pos :] = y[:k]
                self._buf[: n - k] = y[k:]
            self._pos = end % self.capacity
        self.total += n

    def latest(self, n: int | None = None) -> np.ndarray:
        """A copy of the most recent ``n`` samples (all held when ``None``), oldest first."""
        held = len(self)
        n = held if n is None else min(int(n), held)
        if n <= 0:
            return np.zeros(0, np.float32)
        start = (self._pos - n) % self.capacity
        if start + n <= self.capacity:
            return self._buf[start : start + n].copy()
        return np.concatenate([self._buf[start:], self._buf[: n - (self.capacity - start)]])


class StreamResampler:
    """Block-wise resampling from ``sr_in`` to ``sr_out`` (identity when equal)."""

    def __init__(self, sr_in: int, sr_out: int):
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self._stream = None
        if self.sr_in != self.sr_out:
            import soxr

            # "HQ" keeps the delay around a few ms at these rates; VHQ buys nothing audible here.
            self._stream = soxr.ResampleStream(self.sr_in, self.sr_out, 1, dtype="float32", quality="HQ")

    def __call__(self, y: np.ndarray, *, last: bool = False) -> np.ndarray:
        y = np.ascontiguousarray(y, np.float32)
        if self._stream is None:
            return y
        return self._stream.resample_chunk(y, last=last)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class NearestTrack:
    """A catalog track near the live audio (``score``: cosine similarity in [-1, 1])."""

    track_id: int
    score: float
    name: str
    path: str
    title: str | None = None
    artist: str | None = None


@dataclass(frozen=True)
class HopResult:
    """What live recognition says at one hop.

    Attributes
    ----------
    index : hop number (0 = first full window)
    t_s : stream time at the end of the window, seconds since the first sample
    status : ``"ok"`` or ``"silence"``
    labels : the ``top`` smoothed (label, probability) pairs, highest first
    decision : the top label if confident enough, else ``None`` (always ``None`` in silence)
    nearest : the nearest catalog tracks of the smoothed embedding, best first
    level_db : window RMS in dBFS before level control
    peak : window peak ``|y|`` before limiting
    clipped : fraction of samples at or above the clip level
    latency_ms : processing time of this hop (analysis + search), milliseconds
    n_smoothed : windows averaged into this result
    skipped : hops skipped before this one because processing fell behind
    """

    index: int
    t_s: float
    status: Status
    labels: list[tuple[str, float]] = field(default_factory=list)
    decision: str | None = None
    nearest: list[NearestTrack] = field(default_factory=list)
    level_db: float = -math.inf
    peak: float = 0.0
    clipped: float = 0.0
    latency_ms: float = 0.0
    n_smoothed: int = 0
    skipped: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one line of ``soundalike listen --json``)."""
        return {
            "index": self.index,
            "t_s": round(self.t_s, 3),
            "status": self.status,
            "decision": self.decision,
            "labels": [{"label": lab, "p": round(float(p), 4)} for lab, p in self.labels],
            "nearest": [{**asdict(n), "score": round(float(n.score), 4)} for n in self.nearest],
            "level_db": None if not math.isfinite(self.level_db) else round(self.level_db, 1),
            "peak": round(float(self.peak), 4),
            "clipped": round(float(self.clipped), 4),
            "latency_ms": round(self.latency_ms, 1),
            "n_smoothed": self.n_smoothed,
            "skipped": self.skipped,
        }


# --------------------------------------------------------------------------- catalog matching


class TrackMatcher:
    """Nearest catalog tracks to an embedding, for one model id.

    Uses :func:`soundalike.search.similar.nearest_to_vector` (the faiss index) when it
    is available, else a cosine brute force over ``Catalog.embeddings(model_id)``, which
    is exact and fast for catalogs up to tens of thousands of tracks.

    Parameters
    ----------
    catalog : an open :class:`~soundalike.catalog.store.Catalog`
    model_id : the analyzer's model id; only embeddings it made are compared

    Raises
    ------
    ModelMismatchError
        The catalog holds no embeddings made by ``model_id``.
    """

    def __init__(self, catalog, *, model_id: str, use_index: bool = True):
        self.catalog = catalog
        self.model_id = model_id
        ids, X = catalog.embeddings(model_id)
        if len(ids) == 0:
            known = ", ".join(f"{m.name} ({m.n_tracks} tracks)" for m in catalog.models() if m.n_tracks) or "none"
            raise ModelMismatchError(
                f"catalog {catalog.path} has no embeddings from model {model_id}; models in it: {known}. "
                f"Listen with one of those (--model NAME) or run `soundalike ingest DIR --model <this model>`"
            )
        self.ids = ids
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        self.X = (X / np.maximum(norms, np.float32(1e-12))).astype(np.float32)
        self._tracks: dict[int, Any] = {}
        self._search = None
        if use_index:
            try:
                from soundalike.search.similar import nearest_to_vector
            except ImportError:
                nearest_to_vector = None
            self._search = nearest_to_vector

    def _track(self, track_id: int):
        t = self._tracks.get(track_id)
        if t is None:
            t = self._tracks[track_id] = self.catalog.get_track(track_id)
        return t

    def _hit(self, track_id: int, score: float) -> NearestTrack:
        t = self._track(track_id)
        if t is None:
            return NearestTrack(track_id=track_id, score=score, name=f"track {track_id}", path="")
        return NearestTrack(track_id=track_id, score=score, name=t.display_name, path=t.path,
                            title=t.title, artist=t.artist)

    def nearest(self, vector: np.ndarray, *, k: int = 5) -> list[NearestTrack]:
        """The ``k`` nearest tracks to float32 ``(dim,)`` ``vector``, most similar first."""
        v = np.asarray(vector, np.float32).reshape(-1)
        if v.shape[0] != self.X.shape[1]:
            raise ModelMismatchError(
                f"embedding has {v.shape[0]} dimensions, the catalog's {self.model_id} has {self.X.shape[1]}")
        if self._search is not None:
            hits = self._search(self.catalog, model_id=self.model_id, vector=v, k=k)
            out = []
            for h in hits:
                t = h.track
                self._tracks.setdefault(int(t.id), t)
                out.append(self._hit(int(t.id), float(h.score)))
            return out
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        scores = self.X @ v
        k = min(k, len(scores))
        order = np.argsort(-scores, kind="stable")[:k]
        return [self._hit(int(self.ids[i]), float(scores[i])) for i in order]


# --------------------------------------------------------------------------- recognizer


def _db(x: float) -> float:
    return 20.0 * math.log10(x) if x > 0 else -math.inf


class Recognizer:
    """Sliding-window live recognition with one analyzer (and optionally a catalog).

    Feed it blocks with :meth:`push`; it returns a :class:`HopResult` for every hop
    completed.  Nothing here touches a device, so tests feed arrays directly.

    Parameters
    ----------
    analyzer : any :class:`~soundalike.models.base.Analyzer`
    config : windowing, smoothing and decision parameters
    matcher : nearest-track lookup for ``analyzer.model_id`` (``None``: no catalog)
    """

    def __init__(self, analyzer: Analyzer, *, config: LiveConfig = LiveConfig(),
                 matcher: TrackMatcher | None = None):
        if matcher is not None and matcher.model_id != analyzer.model_id:
            raise ModelMismatchError(
                f"the catalog matcher is for model {matcher.model_id}, the analyzer is {analyzer.model_id}")
        self.analyzer = analyzer
        self.config = config
        self.matcher = matcher
        self.sr = int(analyzer.sample_rate)
        self.window_n = max(1, int(round(config.window_s * self.sr)))
        self.hop_n = max(1, int(round(config.hop_s * self.sr)))
        self.frame_n = max(1, int(round(0.05 * self.sr)))
        self.labels = list(analyzer.labels)
        self.buffer = RingBuffer(self.window_n)
        self._resampler: StreamResampler | None = None
        self._next_end = self.window_n
        self._hops = 0
        self._pred_hist: collections.deque[np.ndarray] = collections.deque(maxlen=config.smooth)
        self._emb_hist: collections.deque[np.ndarray] = collections.deque(maxlen=config.smooth)

    # ---------------------------------------------------------------- state

    def reset(self) -> None:
        """Forget all audio and history (a new stream starts)."""
        self.buffer = RingBuffer(self.window_n)
        self._resampler = None
        self._next_end = self.window_n
        self._hops = 0
        self._pred_hist.clear()
        self._emb_hist.clear()

    def warmup(self) -> None:
        """Run the model and the nearest-track search once on noise, so the first real
        hop is not slowed by lazy initialisation (weights, kernels, the search index)."""
        rng = np.random.default_rng(0)
        x = (0.05 * rng.standard_normal(self.window_n)).astype(np.float32)
        emb = np.asarray(self.analyzer.analyze(x, self.sr).embedding, np.float32)
        if self.matcher is not None:
            self.matcher.nearest(emb, k=self.config.top)

    @property
    def t_s(self) -> float:
        """Seconds of audio received so far (at the analyzer's rate)."""
        return self.buffer.total / self.sr

    # ---------------------------------------------------------------- feeding

    def push(self, y: np.ndarray, sr: int, *, latest_only: bool = False,
             last: bool = False) -> list[HopResult]:
        """Add float ``(n,)`` samples at ``sr`` Hz; analyse every hop they complete.

        Parameters
        ----------
        y : mono samples (any float dtype; non-finite values count as 0)
        sr : their rate in Hz (resampled to the analyzer's rate)
        latest_only : when the block completes several hops, analyse only the last
            one (live sources that fell behind catch up instead of lagging further)
        last : the stream ends with this block (flushes the resampler's delay line)

        Returns
        -------
        list of HopResult, in time order (empty until the first window is full)
        """
        if self._resampler is None or self._resampler.sr_in != int(sr):
            self._resampler = StreamResampler(int(sr), self.sr)
        y = np.nan_to_num(np.asarray(y, np.float32).reshape(-1), nan=0.0, posinf=1.0, neginf=-1.0)
        y = self._resampler(y, last=last)
        if last:
            self._resampler = None  # a finished soxr stream cannot take more input
        due: list[tuple[int, np.ndarray]] = []
        while len(y):
            take = min(len(y), self._next_end - self.buffer.total)
            self.buffer.write(y[:take])
            y = y[take:]
            if self.buffer.total >= self._next_end:
                due.append((self.buffer.total, self.buffer.latest(self.window_n)))
                self._next_end += self.hop_n
        if last and not due and self._hops == 0 and self.buffer.total > 0:
            # A stream shorter than one window (a single note played from a file) still
            # gets one decision, on what there is; the analyzer pads it.
            due.append((self.buffer.total, self.buffer.latest(self.buffer.total)))
        if latest_only and len(due) > 1:
            skipped = len(due) - 1
            due = due[-1:]
        else:
            skipped = 0
        out = []
        for end, window in due:
            out.append(self.analyze_window(window, t_s=end / self.sr, skipped=skipped))
            skipped = 0
        return out

    def analyze_window(self, window: np.ndarray, *, t_s: float = 0.0, skipped: int = 0) -> HopResult:
        """Analyse one window (float32 at the analyzer's rate) and update the smoothing."""
        t0 = time.perf_counter()
        cfg = self.config
        index = self._hops
        self._hops += 1
        x = np.asarray(window, np.float32)
        peak = float(np.abs(x).max()) if x.size else 0.0
        clipped = float(np.mean(np.abs(x) >= cfg.clip_level)) if x.size else 0.0
        x = np.clip(x, -1.0, 1.0)
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
        level_db = _db(rms)
        active = self._active_frames(x)
        if active.size == 0 or active.mean() < cfg.min_active:
            self._pred_hist.clear()
            self._emb_hist.clear()
            return HopResult(index=index, t_s=t_s, status="silence", level_db=level_db, peak=peak,
                             clipped=clipped, latency_ms=(time.perf_counter() - t0) * 1e3,
                             skipped=skipped)
        # Music that starts (or stops) inside the window: analyse only the sounding
        # span, since silent frames would drag summary statistics towards "silence".
        on = np.flatnonzero(active)
        x = x[on[0] * self.frame_n : (on[-1] + 1) * self.frame_n if on[-1] + 1 < len(active) else len(x)]
        if cfg.target_db is not None:
            span_rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
            gain_db = min(cfg.target_db - _db(span_rms), cfg.max_gain_db)
            x = (x * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)
        analysis = self.analyzer.analyze(x, self.sr)
        emb = np.asarray(analysis.embedding, np.float32).reshape(-1)
        emb = emb / np.float32(max(float(np.linalg.norm(emb)), 1e-12))
        self._emb_hist.append(emb)
        labels: list[tuple[str, float]] = []
        decision = None
        if self.labels:
            p = np.array([analysis.predictions.get(lab, 0.0) for lab in self.labels], np.float32)
            self._pred_hist.append(p)
            mean = np.mean(np.stack(self._pred_hist), axis=0)
            order = np.argsort(-mean, kind="stable")[: cfg.top]
            labels = [(self.labels[i], float(mean[i])) for i in order]
            if labels and labels[0][1] >= cfg.min_confidence:
                decision = labels[0][0]
        nearest: list[NearestTrack] = []
        if self.matcher is not None:
            smoothed = np.mean(np.stack(self._emb_hist), axis=0)
            nearest = self.matcher.nearest(smoothed, k=cfg.top)
        return HopResult(index=index, t_s=t_s, status="ok", labels=labels, decision=decision,
                         nearest=nearest, level_db=level_db, peak=peak, clipped=clipped,
                         latency_ms=(time.perf_counter() - t0) * 1e3,
                         n_smoothed=len(self._emb_hist), skipped=skipped)

    def _active_frames(self, x: np.ndarray) -> np.ndarray:
        """Boolean ``(n_frames,)``: which 50 ms frames are above the silence threshold."""
        n = len(x) // self.frame_n
        if n == 0:
            return np.zeros(0, bool)
        frames = x[: n * self.frame_n].reshape(n, self.frame_n)
        rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
        return rms > 10.0 ** (self.config.silence_db / 20.0)


def listen(source, recognizer: Recognizer, *, duration_s: float | None = None,
           latest_only: bool | None = None) -> Iterator[HopResult]:
    """Run ``recognizer`` over ``source`` and yield a result per hop.

    Parameters
    ----------
    source : an :class:`~soundalike.live.sources.AudioSource`
    recognizer : the recognizer to feed
    duration_s : stop after this many seconds of audio (``None``: until the source ends)
    latest_only : skip stale hops when a block completes several (default: ``True``
        for sources that run in real time, ``False`` for fast file/array sources)
    """
    if latest_only is None:
        latest_only = bool(getattr(source, "realtime", True))
    limit = None if duration_s is None else int(round(duration_s * source.sr))
    seen = 0
    for block in source.blocks():
        if limit is not None:
            block = block[: max(0, limit - seen)]
        seen += len(block)
        yield from recognizer.push(block, source.sr, latest_only=latest_only)
        if limit is not None and seen >= limit:
            break
    yield from recognizer.push(np.zeros(0, np.float32), source.sr, latest_only=latest_only, last=True)


def set_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads for live use (``None``: leave torch's default).

    One thread is the right default while listening: a hop is a small batch, and on a
    2-core machine a second spinning worker thread mostly competes with the audio
    callback and other processes (measured: p50 per musicnn hop 55 ms with 1 thread vs
    314 ms with 2 on a busy 2-core machine).
    """
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(int(threads))


def open_recognizer(*, model: str | None = None, catalog_path=None, require_catalog: bool = False,
                    config: LiveConfig = LiveConfig(), threads: int | None = 1,
                    on_warning: Callable[[str], None] | None = None) -> tuple[Recognizer, Any]:
    """Choose the analyzer, open the catalog and build a :class:`Recognizer`.

    Parameters
    ----------
    model : model name or trained run folder; ``None`` picks the catalog's default
        model (the one with most analyses) or else ``zoo.DEFAULT_ANALYZER``
    catalog_path : catalog file; ``None``, a missing file, or one without embeddings of
        the model means no nearest tracks (labels only)
    require_catalog : a missing ``catalog_path`` is an error (the user named it); a named
        catalog without embeddings of the model is a warning, not an error: live labels
        still work (a trained run's catalog is often ingested with another model)
    config : live parameters
    threads : torch intra-op threads (see :func:`set_threads`)
    on_warning : called with a one-line warning when the catalog cannot be used

    Returns
    -------
    (recognizer, catalog) : ``catalog`` is the open Catalog or ``None``; close it when done.

    Raises
    ------
    CatalogError
        ``require_catalog`` and the file is missing or unreadable.
    ModelError, ModelMismatchError
        Unknown model, or the catalog's default model no longer has its id.
    """
    from pathlib import Path

    from soundalike.models.zoo import DEFAULT_ANALYZER, load_analyzer

    set_threads(threads)
    catalog = None
    from soundalike.paths import is_catalog_url

    if catalog_path is not None and (require_catalog or is_catalog_url(catalog_path)
                                     or Path(catalog_path).expanduser().exists()):
        from soundalike.catalog.store import Catalog

        catalog = Catalog.open(catalog_path, create=False)
        if not require_catalog and catalog.default_model_id() is None:
            catalog.close()  # an implicit, empty default catalog: nothing to match against
            catalog = None
    try:
        if model is None:
            from soundalike.search.sync import analyzer_for, default_model_id

            model_id = default_model_id(catalog) if catalog is not None else None
            if model_id is not None:
                try:
                    analyzer = analyzer_for(catalog, model_id)
                except ModelMismatchError as exc:
                    raise ModelMismatchError(f"the catalog's default model: {exc}; give --model explicitly") from exc
            else:
                analyzer = load_analyzer(DEFAULT_ANALYZER)
        else:
            adapted = catalog.find_model(model) if catalog is not None else None
            if adapted is not None and catalog.get_adaptation(adapted.model_id) is not None:
                from soundalike.search.sync import analyzer_for

                analyzer = analyzer_for(catalog, adapted.model_id)  # an adapted model is the catalog's
            else:
                analyzer = load_analyzer(model)
        matcher = None
        if catalog is not None:
            try:
                matcher = TrackMatcher(catalog, model_id=analyzer.model_id)
            except ModelMismatchError:
                if require_catalog and on_warning is not None:
                    on_warning(f"catalog {catalog.path} has no embeddings from {analyzer.name} "
                               f"({analyzer.model_id}): listening with labels only, no nearest tracks "
                               f"(`soundalike ingest DIR --model {model or analyzer.name}` adds them)")
                catalog.close()  # the catalog knows nothing of this model
                catalog = None
    except BaseException:
        if catalog is not None:
            catalog.close()
        raise
    return Recognizer(analyzer, config=config, matcher=matcher), catalog
