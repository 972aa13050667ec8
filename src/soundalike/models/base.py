"""The analyzer protocol: what ingest, similarity search and live recognition run.

An *analyzer* turns mono float32 samples into an :class:`Analysis`: a track-level
embedding (for similarity) and label probabilities (for tags).  Pretrained models,
trained runs and the MFCC-statistics baseline all implement it, so every stage
downstream is indifferent to which one made the numbers.  ``model_id`` names the
exact weights and preprocessing; embeddings made by different model ids are never
compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Analysis:
    """What one analyzer says about one track (or one window of audio).

    Attributes
    ----------
    embedding : float32 ``(dim,)`` track-level embedding (not necessarily normalised)
    predictions : label -> probability in [0, 1] (empty for analyzers without labels)
    patch_embeddings : optional float32 ``(n_patches, dim)``
    patch_predictions : optional float32 ``(n_patches, n_labels)``, columns in ``labels`` order
    """

    embedding: np.ndarray
    predictions: dict[str, float] = field(default_factory=dict)
    patch_embeddings: np.ndarray | None = None
    patch_predictions: np.ndarray | None = None

    def top(self, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` most probable labels, highest first."""
        return sorted(self.predictions.items(), key=lambda kv: kv[1], reverse=True)[:n]


@dataclass(frozen=True)
class PatchGrid:
    """Where an analyzer's patches sit in a signal at ``sr`` Hz.

    The excerpt for patch ``k`` is samples ``[k * hop - lead, k * hop - lead + length)``
    (samples before the start of the track are zeros); a full analysis of ``n`` samples
    has ``(n + lead - length) // hop + 1`` patches (a shorter remainder is dropped).
    """

    sr: int
    hop: int
    length: int
    lead: int = 0

    def n_patches(self, n_samples: int) -> int:
        """Patches of a full analysis of ``n_samples`` samples at ``sr`` (0 if shorter than one)."""
        n = n_samples + self.lead - self.length
        return 0 if n < 0 else n // self.hop + 1

    def start(self, k: int) -> int:
        """First sample (index at ``sr``; negative = before the track) of patch ``k``'s excerpt."""
        return k * self.hop - self.lead


@runtime_checkable
class Analyzer(Protocol):
    """Anything ingest / similar / listen can run.

    Attributes
    ----------
    name : human name ("MTT_musicnn", "mfcc-stats", a run folder's name)
    model_id : stable id of weights + preprocessing (hex string)
    sample_rate : rate in Hz the analyzer wants its input at
    labels : label names, in output order (may be empty)
    label_category : catalog tag category its labels go into ("tag", "instrument", ...);
        an analyzer may also have ``label_categories`` (label -> category) where its labels
        span several (the pretrained taggers, through ``models/vocabulary.py``)
    multi_label : whether labels are independent (sigmoid) or exclusive (softmax)
    embedding_dim : length of ``Analysis.embedding``
    min_duration_s : shortest input it can analyze meaningfully (shorter is padded)
    """

    name: str
    model_id: str
    sample_rate: int
    labels: list[str]
    label_category: str
    multi_label: bool
    embedding_dim: int

    def analyze(self, y: np.ndarray, sr: int) -> Analysis:
        """Analyze mono float32 ``y`` at ``sr`` Hz (resampled if it differs)."""
        ...
