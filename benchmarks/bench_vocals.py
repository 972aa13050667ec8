"""Vocals: does the tagger's voice evidence separate a sung line from the same line played?

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_vocals.py [--pairs 24]

Nothing on this machine is real music labelled "has singing" / "instrumental" (the Debian
music packages and the game soundtracks are instrumental, or unlabelled), so this is a
**proxy**, and says so: seeded pieces from ``bench_attributes.generate_cadence`` rendered
twice with fluidsynth + FluidR3 GM, once with the melody on a General-MIDI *voice* patch
(52 "Choir Aahs", 53 "Voice Oohs": sampled human voices singing vowels, no words) and
once on an instrument, everything else identical.  The label is exact; what it labels is
"a sung vowel timbre carries the tune", not "a song with lyrics".

Prints, on the pieces' seeded development / held-out halves (``bench_attributes.split_of``):
the uncalibrated probability's accuracy and expected calibration error (ECE, 10 bins), a
logistic calibration ``sigmoid(slope * evidence + offset)`` fitted on the development half
and its accuracy / ECE on the held-out half, and the evidence's AUC.  The fit is reported,
not written into ``models/vocabulary.py`` (see its ``VOCALS_CALIBRATION``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_attributes as B  # noqa: E402

VOICE_PROGRAMS = (52, 53)
INSTRUMENT_PROGRAMS = (0, 11, 40, 56, 65, 71, 73, 80)


def set_melody_program(src: Path, dst: Path, program: int) -> None:
    """Copy a generated piece with its melody channel (2) switched to ``program``."""
    import mido

    mid = mido.MidiFile(str(src))
    for track in mid.tracks:
        for i, msg in enumerate(track):
            if msg.type == "program_change" and msg.channel == 2:
                track[i] = msg.copy(program=program)
    mid.save(str(dst))


def ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: mean |accuracy - confidence| over equal-width bins."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(float(y[m].mean()) - float(p[m].mean()))
    return total / len(p)


def auc(score: np.ndarray, y: np.ndarray) -> float:
    pos, neg = score[y == 1], score[y == 0]
    return float(np.mean([(s > neg).mean() + 0.5 * (s == neg).mean() for s in pos]))


def fit_logistic(d: np.ndarray, y: np.ndarray, *, l2: float = 1e-3) -> tuple[float, float]:
    """Slope and offset maximising the log-likelihood (Newton steps, tiny L2 for ties)."""
    w = np.zeros(2)
    X = np.stack([d, np.ones_like(d)], axis=1)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        g = X.T @ (p - y) + l2 * w
        H = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(2)
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(w[0]), float(w[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=B.WORK / "vocals")
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--model", default=None, help="analyzer (default: ingest's default)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from soundalike.audio import io
    from soundalike.models import vocabulary as V
    from soundalike.models.zoo import DEFAULT_ANALYZER, load_analyzer

    args.work.mkdir(parents=True, exist_ok=True)
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
    rng = np.random.default_rng(52)
    model_name = args.model or DEFAULT_ANALYZER
    model = load_analyzer(model_name)
    rows = []
    t0 = time.perf_counter()
    for i in range(args.pairs):
        tonic, mode = i % 12, ("major", "minor")[(i // 12) % 2]
        bpm = float(np.round(rng.uniform(70, 160), 1))
        voice = VOICE_PROGRAMS[i % len(VOICE_PROGRAMS)]
        inst = INSTRUMENT_PROGRAMS[int(rng.integers(len(INSTRUMENT_PROGRAMS)))]
        name = f"pair-{i:02d}"
        base = args.work / f"{name}.mid"
        if not base.exists():
            B.generate_cadence(base, tonic=tonic, mode=mode, bpm=bpm, seed=100 + i)
        for label, program in ((1, voice), (0, inst)):
            mid = args.work / f"{name}-p{program}.mid"
            wav = args.work / f"{name}-p{program}.wav"
            if not wav.exists():
                set_melody_program(base, mid, program)
                B.render(mid, wav, seconds=B.CLIP_S)
            y = io.load(wav, sr=model.sample_rate).y
            preds = model.analyze(y, model.sample_rate).predictions
            rows.append({"pair": name, "split": B.split_of(name), "voice": label, "program": program,
                         "evidence": V.vocals_evidence(preds), "p_uncal": V.vocals_probability(preds)})
    print(f"{len(rows)} clips ({args.pairs} pairs) rendered and analysed with {model_name} "
          f"in {time.perf_counter() - t0:.0f} s")
    rows = [r for r in rows if r["evidence"] is not None]
    d = np.array([r["evidence"] for r in rows])
    y = np.array([r["voice"] for r in rows], dtype=float)
    dev = np.array([r["split"] == "dev" for r in rows])
    slope, offset = fit_logistic(d[dev], y[dev])
    p_cal = 1.0 / (1.0 + np.exp(-(slope * d + offset)))
    p_unc = np.array([r["p_uncal"] for r in rows])
    print("\n## Vocals proxy: melody on a GM voice patch vs on an instrument (same piece)\n")
    print("| half | n | AUC of the evidence | uncalibrated acc | uncalibrated ECE | "
          "calibrated acc | calibrated ECE |")
    print("|---|---|---|---|---|---|---|")
    summary = {"model": model_name, "slope": slope, "offset": offset}
    for half, m in (("development (fit here)", dev), ("held out", ~dev)):
        if not m.any():
            continue
        a = auc(d[m], y[m])
        cells = (a, float(((p_unc[m] >= 0.5) == y[m]).mean()), ece(p_unc[m], y[m]),
                 float(((p_cal[m] >= 0.5) == y[m]).mean()), ece(p_cal[m], y[m]))
        summary[half] = dict(zip(("auc", "acc_uncal", "ece_uncal", "acc_cal", "ece_cal"), cells))
        print(f"| {half} | {int(m.sum())} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    print(f"\nfitted on the development half: slope {slope:.3f}, offset {offset:+.3f} "
          f"(shipped: {V.VOCALS_CALIBRATION}, not replaced: the positives are sung vowels "
          "from a soundfont, not songs)")
    inst = y == 0
    print(f"instrumental clips read as vocal (p >= 0.5): uncalibrated {np.mean(p_unc[inst] >= 0.5):.2f}, "
          f"with the fit {np.mean(p_cal[inst] >= 0.5):.2f}; voice-patch clips read as vocal: "
          f"uncalibrated {np.mean(p_unc[~inst] >= 0.5):.2f}, with the fit {np.mean(p_cal[~inst] >= 0.5):.2f}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(f"\nload average at the end: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
