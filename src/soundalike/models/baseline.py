"""The MFCC-statistics baseline analyzer: mean and standard deviation of 20 MFCCs.

No training, no labels: a 40-d timbre summary that is cheap to compute and a fair
baseline for similarity.  Its embedding is standardised per dimension with fixed
scales so that no single coefficient (the energy-like c0) dominates cosine similarity.
"""

from __future__ import annotations

import hashlib

import numpy as np

from soundalike.config import MelConfig, MFCCConfig
from soundalike.models.base import Analysis

#: Fixed per-coefficient scales (dB-ish units): c0 spans hundreds, the rest tens.
_MEAN_SCALE = np.array([200.0] + [30.0] * 19, np.float32)
_STD_SCALE = np.array([40.0] + [12.0] * 19, np.float32)


class MFCCStats:
    """``mfcc-stats``: ``[mean(mfcc_k), std(mfcc_k)]`` for k < 20, 40-d float32."""

    name = "mfcc-stats"
    labels: list[str] = []
    label_category = "tag"
    multi_label = True
    config = MFCCConfig(mel=MelConfig(sample_rate=22050, n_fft=2048, hop_length=512, n_mels=128),
                        n_mfcc=20)
    sample_rate = config.mel.sample_rate
    embedding_dim = 2 * config.n_mfcc
    #: Long files are summarised in blocks of this many samples (bounded memory).
    block = 22050 * 60

    @property
    def model_id(self) -> str:
        return "mfcc-stats-" + hashlib.sha256(
            (self.config.fingerprint() + "v1").encode()).hexdigest()[:12]

    def analyze(self, y: np.ndarray, sr: int) -> Analysis:
        from soundalike.audio.resample import resample

        y = resample(y, sr, self.sample_rate)
        n = 0
        s1 = np.zeros(self.config.n_mfcc, np.float64)
        s2 = np.zeros(self.config.n_mfcc, np.float64)
        for start in range(0, max(len(y), 1), self.block):
            m = self.mfcc(y[start : start + self.block])
            n += m.shape[1]
            s1 += m.sum(axis=1, dtype=np.float64)
            s2 += np.square(m, dtype=np.float64).sum(axis=1)
        mean = s1 / max(n, 1)
        std = np.sqrt(np.maximum(s2 / max(n, 1) - mean**2, 0.0))
        emb = np.concatenate([mean.astype(np.float32) / _MEAN_SCALE,
                              std.astype(np.float32) / _STD_SCALE]).astype(np.float32)
        return Analysis(embedding=emb, predictions={})

    def mfcc(self, y: np.ndarray) -> np.ndarray:
        from soundalike.audio.features import mfcc

        return mfcc(np.asarray(y, np.float32), self.config)
