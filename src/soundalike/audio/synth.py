"""Deterministic procedural audio: test signals and the demo catalog's tracks.

Every generator takes ``sr`` and ``duration_s`` (or equivalent) and, where random,
a ``seed``; the same arguments always give the same float32 samples, so tests and
reference arrays can be regenerated anywhere.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

TWO_PI = np.float32(2 * np.pi)


def _t(duration_s: float, sr: int) -> np.ndarray:
    return np.arange(int(round(duration_s * sr)), dtype=np.float64) / sr


def tone(freq: float, *, duration_s: float = 1.0, sr: int = 22050, amplitude: float = 0.5,
         phase: float = 0.0) -> np.ndarray:
    """A sine at ``freq`` Hz, float32 ``(round(duration_s * sr),)``."""
    return (amplitude * np.sin(2 * np.pi * freq * _t(duration_s, sr) + phase)).astype(np.float32)


def harmonic_tone(freq: float, *, duration_s: float = 1.0, sr: int = 22050, amplitude: float = 0.5,
                  n_harmonics: int = 8, rolloff: float = 1.0, decay_s: float | None = None) -> np.ndarray:
    """A harmonic note (partials at k·freq with 1/k**rolloff amplitude), optional exponential decay."""
    t = _t(duration_s, sr)
    y = np.zeros_like(t)
    for k in range(1, n_harmonics + 1):
        if k * freq >= sr / 2:
            break
        y += np.sin(2 * np.pi * k * freq * t) / k**rolloff
    if decay_s is not None:
        y *= np.exp(-t / decay_s)
    peak = np.abs(y).max() or 1.0
    return (amplitude * y / peak).astype(np.float32)


def chord(freqs: list[float], *, duration_s: float = 1.0, sr: int = 22050, amplitude: float = 0.5,
          n_harmonics: int = 4) -> np.ndarray:
    """Several harmonic tones summed and normalised to ``amplitude`` peak."""
    y = sum(harmonic_tone(f, duration_s=duration_s, sr=sr, amplitude=1.0, n_harmonics=n_harmonics)
            .astype(np.float64) for f in freqs)
    y = np.asarray(y)
    return (amplitude * y / (np.abs(y).max() or 1.0)).astype(np.float32)


def chirp(*, f0: float = 100.0, f1: float = 8000.0, duration_s: float = 1.0, sr: int = 22050,
          amplitude: float = 0.5) -> np.ndarray:
    """Exponential sine sweep from ``f0`` to ``f1`` Hz."""
    t = _t(duration_s, sr)
    k = np.log(f1 / f0) / duration_s
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    return (amplitude * np.sin(phase)).astype(np.float32)


def clicks(*, interval_s: float = 0.25, duration_s: float = 1.0, sr: int = 22050,
           amplitude: float = 0.9, click_s: float = 0.002) -> np.ndarray:
    """A click train: short decaying bursts every ``interval_s`` seconds."""
    n = int(round(duration_s * sr))
    y = np.zeros(n, np.float64)
    m = max(1, int(click_s * sr))
    shape = np.exp(-np.arange(m) / (m / 4))
    for start in np.arange(0, n, max(1, int(interval_s * sr))):
        seg = y[start : start + m]
        seg += shape[: len(seg)]
    return (amplitude * y).astype(np.float32)


def noise(*, duration_s: float = 1.0, sr: int = 22050, amplitude: float = 0.3, seed: int = 0,
          color: Literal["white", "pink", "brown"] = "white") -> np.ndarray:
    """Gaussian noise, white, pink (1/f) or brown (1/f²), normalised to ``amplitude`` RMS·3."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sr))
    w = rng.standard_normal(n)
    if color != "white" and n > 1:
        spec = np.fft.rfft(w)
        f = np.fft.rfftfreq(n)
        f[0] = f[1]
        spec /= f ** (0.5 if color == "pink" else 1.0)
        w = np.fft.irfft(spec, n)
    w /= w.std() or 1.0
    return np.clip(amplitude / 3 * w, -1, 1).astype(np.float32)


def silence(*, duration_s: float = 1.0, sr: int = 22050) -> np.ndarray:
    return np.zeros(int(round(duration_s * sr)), np.float32)


def _kick(sr: int, amplitude: float = 0.9) -> np.ndarray:
    t = _t(0.25, sr)
    f = 50 + 100 * np.exp(-t * 30)
    return amplitude * np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t * 12)


def _snare(sr: int, rng: np.random.Generator, amplitude: float = 0.6) -> np.ndarray:
    t = _t(0.18, sr)
    body = np.sin(2 * np.pi * 190 * t) * np.exp(-t * 30)
    return amplitude * (0.5 * body + rng.standard_normal(len(t)) * np.exp(-t * 22))


def _hat(sr: int, rng: np.random.Generator, amplitude: float = 0.25) -> np.ndarray:
    t = _t(0.05, sr)
    x = rng.standard_normal(len(t))
    x = np.diff(x, prepend=0.0)  # crude high-pass
    return amplitude * x * np.exp(-t * 90)


def drum_pattern(*, bpm: float = 120.0, duration_s: float = 4.0, sr: int = 22050, seed: int = 0,
                 amplitude: float = 0.9, pattern: str = "x-h-s-h-x-x-s-h-") -> np.ndarray:
    """A drum loop on a 16th-note grid: ``x`` kick, ``s`` snare, ``h`` hi-hat, ``-`` rest."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sr))
    y = np.zeros(n + sr, np.float64)
    step = 60.0 / bpm / 4
    for i, start in enumerate(np.arange(0, duration_s, step)):
        sym = pattern[i % len(pattern)]
        hit = {"x": lambda: _kick(sr), "s": lambda: _snare(sr, rng),
               "h": lambda: _hat(sr, rng)}.get(sym)
        if hit is None:
            continue
        h = hit()
        s = int(start * sr)
        y[s : s + len(h)] += h
    y = y[:n]
    return (amplitude * y / (np.abs(y).max() or 1.0)).astype(np.float32)


# --------------------------------------------------------------------------- demo catalog styles

#: Styles of the procedurally generated demo tracks, with the genre/mood/instrument tags
#: written into their files.
DEMO_STYLES: dict[str, dict[str, str]] = {
    "ambient-drone": {"genre": "ambient", "mood": "calm", "instrument": "synth pad"},
    "drum-loop": {"genre": "electronic", "mood": "energetic", "instrument": "drums"},
    "piano-arpeggio": {"genre": "classical", "mood": "gentle", "instrument": "piano"},
    "noise-texture": {"genre": "experimental", "mood": "dark", "instrument": "noise"},
    "bass-groove": {"genre": "funk", "mood": "groovy", "instrument": "bass"},
}

_SCALE = [0, 2, 4, 5, 7, 9, 11, 12]


def demo_track(style: str, *, seed: int = 0, duration_s: float = 8.0, sr: int = 22050) -> np.ndarray:
    """One procedurally generated track of a demo style, float32 mono at ``sr``.

    Variations (key, tempo, timbre) come from ``seed``; tracks of one style sound alike,
    tracks of different styles clearly do not.
    """
    rng = np.random.default_rng(seed)
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    if style == "ambient-drone":
        freqs = [root * r for r in (1, 1.5, 2, 2.5 if rng.random() < 0.5 else 2.4)]
        y = chord(freqs, duration_s=duration_s, sr=sr, amplitude=0.6, n_harmonics=3)
        lfo = 0.7 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * _t(duration_s, sr))
        y = y * lfo.astype(np.float32) + noise(duration_s=duration_s, sr=sr, amplitude=0.02,
                                               seed=seed, color="pink")
    elif style == "drum-loop":
        y = drum_pattern(bpm=float(rng.uniform(110, 140)), duration_s=duration_s, sr=sr, seed=seed,
                         pattern=["x-h-s-h-x-x-s-h-", "x-hhs-h-x-hhs-hh", "x---s---x-x-s---"][seed % 3])
    elif style == "piano-arpeggio":
        n = int(round(duration_s * sr))
        y = np.zeros(n + sr, np.float64)
        step = 60.0 / float(rng.uniform(80, 110)) / 2
        for i, start in enumerate(np.arange(0, duration_s, step)):
            f = 2 * root * 2 ** (_SCALE[(i * 2 + int(rng.integers(0, 3))) % len(_SCALE)] / 12)
            note = harmonic_tone(f, duration_s=1.0, sr=sr, amplitude=0.5, n_harmonics=10,
                                 rolloff=1.6, decay_s=0.35)
            s = int(start * sr)
            y[s : s + len(note)] += note
        y = y[:n]
        y = (0.8 * y / (np.abs(y).max() or 1.0)).astype(np.float32)
    elif style == "noise-texture":
        y = noise(duration_s=duration_s, sr=sr, amplitude=0.8, seed=seed,
                  color=["white", "pink", "brown"][seed % 3])
        env = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * _t(duration_s, sr)))
        y = (y * env).astype(np.float32)
    elif style == "bass-groove":
        n = int(round(duration_s * sr))
        y = np.zeros(n + sr, np.float64)
        step = 60.0 / float(rng.uniform(95, 115)) / 2
        riff = [0, 0, 7, 5, 0, 3, 5, 7]
        for i, start in enumerate(np.arange(0, duration_s, step)):
            f = root / 2 * 2 ** (riff[i % len(riff)] / 12)
            note = harmonic_tone(f, duration_s=0.3, sr=sr, amplitude=0.7, n_harmonics=6,
                                 rolloff=1.2, decay_s=0.15)
            s = int(start * sr)
            y[s : s + len(note)] += note
        y = y[:n] + 0.5 * drum_pattern(bpm=60 / step / 2, duration_s=duration_s, sr=sr, seed=seed,
                                       pattern="x-------s-------")
        y = (0.8 * y / (np.abs(y).max() or 1.0)).astype(np.float32)
    else:
        raise ValueError(f"unknown demo style {style!r}; choose from {sorted(DEMO_STYLES)}")
    return np.clip(y, -1.0, 1.0).astype(np.float32)
