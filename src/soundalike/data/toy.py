"""Tiny synthetic labeled datasets: for tests, and to try training without any music.

``write_toy_folders`` makes a folder-per-label set (``tone``, ``noise``, ``clicks``);
``write_toy_table`` makes a multi-label CSV whose tracks mix a random non-empty subset
of the three sources.  Everything is deterministic in ``seed``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TOY_CLASSES = ("tone", "noise", "clicks")


def toy_signal(kind: str, rng: np.random.Generator, *, sr: int, duration_s: float) -> np.ndarray:
    """One random example of ``kind`` (``tone``/``noise``/``clicks``), float32 peak ~0.5."""
    from soundalike.audio import synth

    if kind == "tone":
        y = synth.harmonic_tone(float(rng.uniform(150, 900)), duration_s=duration_s, sr=sr,
                                n_harmonics=int(rng.integers(1, 6)), amplitude=0.5)
    elif kind == "noise":
        y = synth.noise(duration_s=duration_s, sr=sr, amplitude=0.3, seed=int(rng.integers(1 << 30)))
    elif kind == "clicks":
        y = synth.clicks(interval_s=float(rng.uniform(0.08, 0.2)), duration_s=duration_s, sr=sr)
    else:
        raise ValueError(f"unknown toy class {kind!r}")
    return (np.asarray(y, np.float32) * np.float32(rng.uniform(0.5, 1.0))).astype(np.float32)


def write_toy_folders(root: str | Path, *, n_per_class: int = 10, sr: int = 8000,
                      duration_s: float = 1.0, seed: int = 0) -> Path:
    """``root/<class>/<class>-NN.wav`` for the three toy classes; returns ``root``."""
    import soundfile as sf

    root = Path(root)
    rng = np.random.default_rng(seed)
    for kind in TOY_CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            sf.write(root / kind / f"{kind}-{i:02d}.wav", toy_signal(kind, rng, sr=sr, duration_s=duration_s), sr)
    return root


def write_toy_table(root: str | Path, *, n_tracks: int = 36, sr: int = 8000, duration_s: float = 1.0,
                    seed: int = 0, column: str = "sources") -> Path:
    """Multi-label mixtures and ``root/labels.csv`` (``path,<column>`` with ``a|b`` cells); returns the CSV."""
    import soundfile as sf

    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    subsets = [s for s in ((0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2))]
    lines = [f"path,{column}"]
    for i in range(n_tracks):
        subset = subsets[i % len(subsets)] if i < len(subsets) else subsets[int(rng.integers(len(subsets)))]
        y = sum(toy_signal(TOY_CLASSES[k], rng, sr=sr, duration_s=duration_s).astype(np.float64)
                for k in subset)
        y = (0.8 * np.asarray(y) / max(np.abs(y).max(), 1e-6)).astype(np.float32)
        rel = f"audio/mix-{i:03d}.wav"
        sf.write(root / rel, y, sr)
        lines.append(f"{rel},{'|'.join(TOY_CLASSES[k] for k in subset)}")
    csv = root / "labels.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv
