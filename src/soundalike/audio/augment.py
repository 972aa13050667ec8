"""Waveform augmentation for training, including the "live" condition.

Each transform takes mono float32 ``y`` ``(n,)`` and a ``numpy.random.Generator`` and
returns a new float32 array of the same length.  :class:`Augmenter` applies a chosen
set with per-item random state: the generator for item ``i`` of epoch ``e`` is seeded
from ``(seed, epoch, i)``, so the same run gives the same augmented audio whatever the
batch order or number of workers.

Transforms
----------
``gain``     random gain in dB (volume)
``noise``    additive noise at a random SNR: generated white/pink/brown, or a random
             excerpt of a file from a noise folder (``--noise-dir``)
``shift``    circular time shift by a random amount
``speaker``  a "small speaker / phone microphone" band-pass: random low cut
             (120–500 Hz) and high cut (2.5–7 kHz), zero-phase, 2nd-order slopes
``eq``       a random equaliser: 2-4 bell and shelf filters at random frequencies, ±9 dB
             (another microphone, another instrument body, another mix)
``reverb``   a random room: an exponentially decaying noise impulse response (RT60
             0.15-1.2 s, pre-delay 0-20 ms) mixed in at a random wet share
``pitch``    pitch and time jitter: resampled by up to ±50 cents (both move together, as
             a tape or a differently tuned instrument), then cut or padded to the length
``resample`` a wider resampling, up to ±3 semitones: the formants move with the pitch, as
             when a sampler stretches one recording across several keys (soundfonts do)
``codec``    a lossy channel: a random low-pass (3.5-11 kHz) and 8-12-bit quantisation
``live``     shorthand for ``gain,noise,speaker`` (what a phone held up to a speaker hears)
``domain``   shorthand for ``gain,noise,speaker,eq,reverb,pitch,codec``: another room,
             microphone, loudspeaker and recording chain, for models that must hold up on
             other recordings (``train``'s default).  Until the 40-epoch runs it had no
             ``speaker``; that set stays reachable as the list ``gain,noise,eq,reverb,pitch,codec``
             or the preset ``domain-v1``
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from soundalike.errors import ConfigError

AugmentName = Literal["gain", "noise", "shift", "speaker", "eq", "reverb", "pitch", "resample", "codec"]
#: The order transforms are applied in.  A transform draws from the item's generator only when
#: it is chosen, so adding a name here leaves every run that does not use it unchanged.
AUGMENTS: tuple[str, ...] = ("gain", "noise", "shift", "speaker", "eq", "reverb", "pitch", "resample",
                             "codec")
PRESETS: dict[str, tuple[str, ...]] = {"live": ("gain", "noise", "speaker"),
                                       "domain": ("gain", "noise", "speaker", "eq", "reverb", "pitch",
                                                  "codec"),
                                       "domain-v1": ("gain", "noise", "eq", "reverb", "pitch", "codec"),
                                       "all": AUGMENTS, "none": ()}
#: widest shift of ``resample`` in cents (``pitch`` keeps to ±50: tuning, tape speed)
RESAMPLE_CENTS = 300.0
NoiseColor = Literal["white", "pink", "brown"]


def parse_augment(spec: str | None) -> tuple[str, ...]:
    """``"gain,noise"`` / ``"live"`` / ``"none"`` -> tuple of transform names (validated)."""
    if not spec:
        return ()
    out: list[str] = []
    for part in (p.strip().lower() for p in spec.split(",")):
        if not part:
            continue
        names = PRESETS.get(part, (part,))
        for n in names:
            if n not in AUGMENTS:
                raise ConfigError(f"unknown augmentation {n!r}: choose from "
                                  f"{', '.join(AUGMENTS)} or a preset ({', '.join(PRESETS)})")
            if n not in out:
                out.append(n)
    return tuple(out)


def rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if y.size else 0.0


def gain(y: np.ndarray, rng: np.random.Generator, *, low_db: float = -12.0, high_db: float = 6.0) -> np.ndarray:
    """Multiply by a gain drawn uniformly in ``[low_db, high_db]`` dB."""
    g = np.float32(10.0 ** (rng.uniform(low_db, high_db) / 20.0))
    return (y * g).astype(np.float32)


def colored_noise(n: int, rng: np.random.Generator, *, color: NoiseColor = "white") -> np.ndarray:
    """Unit-RMS noise, float32 ``(n,)``: white (flat), pink (1/f power) or brown (1/f²)."""
    w = rng.standard_normal(n)
    if color != "white" and n > 1:
        W = np.fft.rfft(w)
        f = np.arange(len(W), dtype=np.float64)
        f[0] = 1.0
        W = W / (np.sqrt(f) if color == "pink" else f)
        w = np.fft.irfft(W, n)
    return (w / (np.sqrt(np.mean(w * w)) or 1.0)).astype(np.float32)


def add_noise(y: np.ndarray, rng: np.random.Generator, *, snr_low_db: float = 5.0,
              snr_high_db: float = 30.0, noise: np.ndarray | None = None) -> np.ndarray:
    """Add noise at an SNR drawn uniformly in ``[snr_low_db, snr_high_db]`` dB.

    ``noise`` is a source to take a random excerpt from (tiled when shorter than ``y``);
    ``None`` draws white, pink or brown noise.  Silence gets noise at a -40 dBFS level.
    """
    n = len(y)
    if noise is not None and len(noise):
        if len(noise) < n:
            noise = np.tile(noise, int(np.ceil(n / len(noise))))
        start = int(rng.integers(0, len(noise) - n + 1))
        z = noise[start : start + n].astype(np.float32)
        z = z / (rms(z) or 1.0)
    else:
        z = colored_noise(n, rng, color=("white", "pink", "brown")[int(rng.integers(0, 3))])
    snr_db = rng.uniform(snr_low_db, snr_high_db)
    level = rms(y) or 0.01
    scale = np.float32(level / 10.0 ** (snr_db / 20.0))
    return (y + scale * z).astype(np.float32)


def time_shift(y: np.ndarray, rng: np.random.Generator, *, max_fraction: float = 0.5) -> np.ndarray:
    """Roll circularly by up to ``max_fraction`` of the length, either way."""
    k = int(rng.integers(-int(max_fraction * len(y)), int(max_fraction * len(y)) + 1)) if len(y) else 0
    return np.roll(y, k).astype(np.float32)


def bandpass(y: np.ndarray, sr: int, *, low_hz: float | None, high_hz: float | None,
             order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth-shaped band-pass applied in the frequency domain.

    The magnitude is ``1/sqrt(1 + (f/high)^(2·order))`` times ``1/sqrt(1 + (low/f)^(2·order))``.
    """
    n = len(y)
    if n == 0:
        return y.astype(np.float32)
    Y = np.fft.rfft(y.astype(np.float64))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    H = np.ones_like(f)
    if high_hz:
        H /= np.sqrt(1.0 + (f / high_hz) ** (2 * order))
    if low_hz:
        with np.errstate(divide="ignore"):
            H /= np.sqrt(1.0 + (low_hz / np.maximum(f, 1e-9)) ** (2 * order))
    return np.fft.irfft(Y * H, n).astype(np.float32)


def small_speaker(y: np.ndarray, rng: np.random.Generator, *, sr: int) -> np.ndarray:
    """Band-limit like a small loudspeaker heard through a phone: random low and high cuts."""
    low = rng.uniform(120.0, 500.0)
    high = min(rng.uniform(2500.0, 7000.0), 0.45 * sr)
    return bandpass(y, sr, low_hz=low, high_hz=high)


def random_eq(y: np.ndarray, rng: np.random.Generator, *, sr: int, max_db: float = 9.0) -> np.ndarray:
    """2-4 random bell/shelf boosts and cuts of up to ``max_db`` dB, zero-phase (frequency domain)."""
    n = len(y)
    if n == 0:
        return y.astype(np.float32)
    f = np.fft.rfftfreq(n, 1.0 / sr)
    logf = np.log2(np.maximum(f, 1.0))
    gain_db = np.zeros_like(f)
    for _ in range(int(rng.integers(2, 5))):
        g = rng.uniform(-max_db, max_db)
        kind = int(rng.integers(0, 3))
        if kind == 0:  # bell around a log-uniform centre, 0.5-2 octaves wide
            fc = np.log2(np.exp(rng.uniform(np.log(80.0), np.log(0.4 * sr))))
            width = rng.uniform(0.5, 2.0)
            gain_db += g * np.exp(-0.5 * ((logf - fc) / (width / 2)) ** 2)
        else:  # low (kind 1) or high (kind 2) shelf with a one-octave transition
            fc = np.log2(rng.uniform(100.0, 400.0) if kind == 1 else rng.uniform(2000.0, min(8000.0, 0.45 * sr)))
            step = 1.0 / (1.0 + np.exp(-(logf - fc) * 4.0))
            gain_db += g * (1.0 - step if kind == 1 else step)
    out = np.fft.irfft(np.fft.rfft(y.astype(np.float64)) * 10.0 ** (gain_db / 20.0), n)
    peak = np.abs(out).max()
    limit = max(np.abs(y).max(), 1e-9)
    return (out * min(1.0, limit / peak) if peak > 0 else out).astype(np.float32)


def reverb(y: np.ndarray, rng: np.random.Generator, *, sr: int) -> np.ndarray:
    """Convolve with a random synthetic room (decaying noise, RT60 0.15-1.2 s), random wet share."""
    n = len(y)
    if n == 0:
        return y.astype(np.float32)
    rt60 = rng.uniform(0.15, 1.2)
    length = int(min(rt60, 1.5) * sr)
    t = np.arange(length) / sr
    ir = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    ir = bandpass(ir.astype(np.float32), sr, low_hz=None, high_hz=rng.uniform(2000.0, 0.45 * sr)).astype(np.float64)
    pre = int(rng.uniform(0.0, 0.02) * sr)
    ir = np.concatenate([np.zeros(pre), ir])
    ir /= np.sqrt(np.sum(ir * ir)) or 1.0
    m = n + len(ir) - 1
    size = 1 << (m - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(y.astype(np.float64), size) * np.fft.rfft(ir, size), size)[:n]
    share = rng.uniform(0.2, 0.7)
    wet *= (rms(y) / (np.sqrt(np.mean(wet * wet)) or 1.0))
    return ((1.0 - share) * y + share * wet).astype(np.float32)


def pitch_jitter(y: np.ndarray, rng: np.random.Generator, *, max_cents: float = 50.0) -> np.ndarray:
    """Resample by up to ``max_cents`` either way (pitch and tempo move together), same length."""
    n = len(y)
    if n < 2:
        return y.astype(np.float32)
    ratio = 2.0 ** (rng.uniform(-max_cents, max_cents) / 1200.0)
    src = np.arange(0, n, ratio)  # read positions: ratio > 1 plays faster and higher
    out = np.interp(src, np.arange(n), y.astype(np.float64))
    if len(out) >= n:
        return out[:n].astype(np.float32)
    return np.concatenate([out, np.zeros(n - len(out))]).astype(np.float32)


def codec(y: np.ndarray, rng: np.random.Generator, *, sr: int) -> np.ndarray:
    """A lossy channel: random low-pass (3.5-11 kHz) and 8-12-bit quantisation of the peak."""
    high = min(rng.uniform(3500.0, 11000.0), 0.45 * sr)
    z = bandpass(y, sr, low_hz=None, high_hz=high, order=4)
    peak = float(np.abs(z).max()) or 1.0
    step = peak / 2 ** (int(rng.integers(8, 13)) - 1)
    return (np.round(z / step) * step).astype(np.float32)


def load_noise_dir(noise_dir: str | Path, *, sr: int, max_files: int = 200,
                   max_duration_s: float = 60.0) -> list[np.ndarray]:
    """Decode up to ``max_files`` noise recordings from a folder (undecodable ones are skipped)."""
    from soundalike.audio.io import is_audio_path, load
    from soundalike.errors import AudioDecodeError

    d = Path(noise_dir).expanduser()
    if not d.is_dir():
        raise ConfigError(f"--noise-dir {d}: not a directory")
    out: list[np.ndarray] = []
    for f in sorted(p for p in d.rglob("*") if p.is_file() and is_audio_path(p))[:max_files]:
        try:
            out.append(load(f, sr=sr, duration_s=max_duration_s).y)
        except AudioDecodeError:
            continue
    if not out:
        raise ConfigError(f"--noise-dir {d}: no decodable audio files")
    return out


@dataclass
class Augmenter:
    """Applies the chosen transforms, each with probability ``p``, reproducibly per item.

    Parameters
    ----------
    names : transforms to use (see :data:`AUGMENTS`)
    sr : sample rate of the audio it gets
    seed : base seed of the run
    p : probability of applying each transform to an item
    noises : noise recordings for ``noise`` (empty: generated noise)
    gain_db, snr_db : ranges for ``gain`` and ``noise``
    """

    names: tuple[str, ...]
    sr: int
    seed: int = 0
    p: float = 0.7
    noises: list[np.ndarray] = field(default_factory=list)
    gain_db: tuple[float, float] = (-12.0, 6.0)
    snr_db: tuple[float, float] = (10.0, 40.0)

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        """The generator for item ``index`` of ``epoch`` (independent of batching)."""
        return np.random.default_rng([self.seed, epoch, index, 0xA6])

    def __call__(self, y: np.ndarray, *, epoch: int, index: int) -> np.ndarray:
        """Augmented copy of ``y`` (float32, same length)."""
        rng = self.rng(epoch, index)
        y = np.asarray(y, np.float32)
        for name in AUGMENTS:  # fixed order, whatever order they were given in
            if name not in self.names or rng.random() >= self.p:
                continue
            if name == "gain":
                y = gain(y, rng, low_db=self.gain_db[0], high_db=self.gain_db[1])
            elif name == "noise":
                src = self.noises[int(rng.integers(0, len(self.noises)))] if self.noises else None
                y = add_noise(y, rng, snr_low_db=self.snr_db[0], snr_high_db=self.snr_db[1], noise=src)
            elif name == "shift":
                y = time_shift(y, rng)
            elif name == "speaker":
                y = small_speaker(y, rng, sr=self.sr)
            elif name == "eq":
                y = random_eq(y, rng, sr=self.sr)
            elif name == "reverb":
                y = reverb(y, rng, sr=self.sr)
            elif name == "pitch":
                y = pitch_jitter(y, rng)
            elif name == "resample":
                y = pitch_jitter(y, rng, max_cents=RESAMPLE_CENTS)
            elif name == "codec":
                y = codec(y, rng, sr=self.sr)
        return y
