"""Frozen configuration dataclasses: one source of truth per audio/feature parameter.

Every config has ``fingerprint()``, a short stable hash of its fields, used to key
feature caches and to name model ids, so that an artifact always says what made it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from soundalike.errors import ConfigError

Compression = Literal["db", "log10"]


def _fingerprint(obj: Any) -> str:
    payload = json.dumps(
        {"type": type(obj).__name__, **dataclasses.asdict(obj)}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class _Fingerprinted:
    def fingerprint(self) -> str:
        """Short stable hash of the config's type and fields (16 hex digits)."""
        return _fingerprint(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class AudioConfig(_Fingerprinted):
    """How audio is decoded before features: target rate and channel mixing."""

    sample_rate: int = 22050
    mono: bool = True

    def __post_init__(self) -> None:
        if not 1000 <= self.sample_rate <= 384000:
            raise ConfigError(f"sample_rate must be in 1000..384000 Hz, got {self.sample_rate}")


@dataclass(frozen=True)
class MelConfig(_Fingerprinted):
    """Short-time Fourier and mel parameters (Slaney mel scale and norm).

    ``compression`` picks ``"db"`` (``10*log10(max(S, amin))`` relative to ``ref=1``,
    clipped ``top_db`` below the peak when ``top_db`` is set) or ``"log10"``
    (``log10(1 + log_c * S)``, as musicnn uses).
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    win_length: int | None = None
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    power: float = 2.0
    center: bool = True
    compression: Compression = "db"
    top_db: float | None = 80.0
    amin: float = 1e-10
    log_c: float = 10000.0

    def __post_init__(self) -> None:
        if self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ConfigError("n_fft, hop_length and n_mels must be positive")
        if self.win_length is not None and not 0 < self.win_length <= self.n_fft:
            raise ConfigError(f"win_length must be in 1..n_fft, got {self.win_length}")
        nyquist = self.sample_rate / 2
        fmax = self.fmax if self.fmax is not None else nyquist
        if not 0 <= self.fmin < fmax <= nyquist + 1e-6:
            raise ConfigError(
                f"need 0 <= fmin < fmax <= sr/2, got fmin={self.fmin}, fmax={fmax}, sr={self.sample_rate}"
            )
        if self.compression not in ("db", "log10"):
            raise ConfigError(f"compression must be 'db' or 'log10', got {self.compression!r}")

    @property
    def fmax_hz(self) -> float:
        return float(self.fmax) if self.fmax is not None else self.sample_rate / 2

    @property
    def hop_s(self) -> float:
        return self.hop_length / self.sample_rate


@dataclass(frozen=True)
class MFCCConfig(_Fingerprinted):
    """MFCCs: orthonormal DCT-II of a dB log-mel spectrogram."""

    mel: MelConfig = MelConfig()
    n_mfcc: int = 20

    def __post_init__(self) -> None:
        if isinstance(self.mel, dict):  # from_dict / JSON round trip
            object.__setattr__(self, "mel", MelConfig(**self.mel))
        if not 1 <= self.n_mfcc <= self.mel.n_mels:
            raise ConfigError(f"n_mfcc must be in 1..n_mels, got {self.n_mfcc}")
        if self.mel.compression != "db":
            raise ConfigError("MFCCs are defined on a dB log-mel spectrogram (compression='db')")
