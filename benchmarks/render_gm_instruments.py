"""Render a cross-dataset instrument test set: Philharmonia's classes from another recording.

The General-MIDI soundfont ``fluid-soundfont-gm`` (FluidR3_GM: real sampled instruments,
recorded elsewhere, with fluidsynth's own reverb and chorus) plays the Philharmonia
classes that General MIDI has, as single notes at several pitches across each
instrument's range, three dynamics and three lengths.  The output is a folder per class
named as Philharmonia names it, so ``soundalike evaluate RUN OUT`` scores a run trained on
Philharmonia on sounds it never heard.  Benchmark-only: needs ``apt-get install
fluidsynth fluid-soundfont-gm``; nothing here is committed.

    .venv/bin/python benchmarks/render_gm_instruments.py [--out ~/.cache/soundalike-bench/gm-instruments]

A second, independent soundfont (``apt-get install timgm6mb-soundfont``: TimGM6mb, other
samples than FluidR3) gives a *selection* set, so that settings can be chosen on one
soundfont and the FluidR3 figures stay an untouched check:

    .venv/bin/python benchmarks/render_gm_instruments.py --soundfont /usr/share/sounds/sf2/TimGM6mb.sf2 \
        --out ~/.cache/soundalike-bench/gm-timgm6mb
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
DEFAULT_OUT = Path.home() / ".cache" / "soundalike-bench" / "gm-instruments"

#: Philharmonia class -> (GM programs, 0-based; lowest and highest MIDI note rendered).
#: contrabassoon, bass clarinet, mandolin and (pitched) percussion have no GM program.
CLASSES: dict[str, tuple[tuple[int, ...], int, int]] = {
    "cello": ((42,), 36, 76),
    "double_bass": ((43,), 28, 62),
    "flute": ((73,), 60, 93),
    "oboe": ((68,), 58, 88),
    "cor_anglais": ((69,), 52, 81),
    "clarinet": ((71,), 50, 89),
    "bassoon": ((70,), 34, 72),
    "french_horn": ((60,), 41, 77),
    "trombone": ((57,), 40, 72),
    "saxophone": ((65, 66), 49, 80),
    "guitar": ((24,), 40, 81),
    "banjo": ((105,), 48, 79),
}
DYNAMICS = {"pianissimo": 35, "mezzo-forte": 80, "fortissimo": 120}
LENGTHS_S = (0.5, 1.0, 2.0)
PITCH_STEP = 3  # semitones between rendered pitches
GAP_S = 2.5  # silence after each note (release and reverb tails die out)
SR = 44100
TICKS = 480  # per quarter note at 120 bpm: 960 ticks per second

NOTE_NAMES = ("C", "Cs", "D", "Ds", "E", "F", "Fs", "G", "Gs", "A", "As", "B")


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def midi_file(program: int, notes: list[tuple[float, float, int, int]]) -> bytes:
    """A type-0 SMF playing ``notes`` = [(start_s, length_s, pitch, velocity)] on ``program``."""
    per_s = TICKS * 2
    events = []
    for start, length, pitch, vel in notes:
        events.append((round(start * per_s), 1, bytes([0x90, pitch, vel])))
        events.append((round((start + length) * per_s), 0, bytes([0x80, pitch, 0])))
    events.sort(key=lambda e: (e[0], e[1]))
    track = bytearray(b"\x00\xff\x51\x03\x07\xa1\x20")  # tempo 500000 us per quarter
    track += b"\x00" + bytes([0xC0, program])
    now = 0
    for t, _, data in events:
        track += _vlq(t - now) + data
        now = t
    track += b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS) + b"MTrk" + struct.pack(">I", len(track)) + track


def render(out: Path, *, soundfont: Path = SOUNDFONT) -> int:
    import soundfile as sf

    if shutil.which("fluidsynth") is None or not soundfont.exists():
        raise SystemExit(f"needs fluidsynth and the soundfont {soundfont}: apt-get install fluidsynth "
                         "fluid-soundfont-gm (or timgm6mb-soundfont)")
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        for cls, (programs, lo, hi) in CLASSES.items():
            (out / cls).mkdir(parents=True, exist_ok=True)
            for prog in programs:
                notes, names = [], []
                t = 0.5
                for pitch in range(lo, hi + 1, PITCH_STEP):
                    for dyn, vel in DYNAMICS.items():
                        for length in LENGTHS_S:
                            notes.append((t, length, pitch, vel))
                            name = f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"
                            names.append(f"{cls}_gm{prog}_{name}_{str(length).replace('.', '')}_{dyn}")
                            t += length + GAP_S
                mid = Path(tmp) / f"{cls}-{prog}.mid"
                wav = Path(tmp) / f"{cls}-{prog}.wav"
                mid.write_bytes(midi_file(prog, notes))
                subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(SR), "-F", str(wav),
                                str(soundfont), str(mid)], check=True, capture_output=True)
                y, sr = sf.read(wav, dtype="float32", always_2d=True)
                y = y.mean(axis=1)
                for (start, length, _, _), name in zip(notes, names, strict=True):
                    a = int(start * sr)
                    b = min(len(y), int((start + length + 1.0) * sr))  # the note and 1 s of its tail
                    seg = y[a:b]
                    if np.abs(seg).max() < 1e-4:
                        continue  # outside the soundfont's range: silence
                    sf.write(out / cls / f"{name}.wav", seg, sr, subtype="PCM_16")
                    n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--soundfont", type=Path, default=SOUNDFONT)
    args = ap.parse_args(argv)
    n = render(args.out, soundfont=args.soundfont)
    print(f"{args.out}: {n} notes in {len(CLASSES)} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
