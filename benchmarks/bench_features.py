"""Feature and ingest throughput (a benchmark, not a test).

    .venv/bin/python benchmarks/bench_features.py [--clips 8] [--ingest-n 200] [--data ../shared/data]

1. log-mel throughput against librosa on the same 30-s clips, equal parameters
   (22.05 kHz, n_fft 2048, hop 512, 128 Slaney mels, dB with top_db 80): per clip and
   batched, with torch's default thread count; target >= 3x librosa.
2. ingest throughput end to end (decode + MFCC-stats analyzer + catalog writes, 2 worker
   processes), in mp3 clips per second, on ../shared/data (Philharmonia mp3 notes) and on
   generated 10-s mp3 clips.

Prints a table with each figure next to its target.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

CLIP_S = 30.0
SR = 22050


def _best(fn, repeat: int = 3) -> float:
    fn()  # warm-up (caches, lazy imports)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _clips(n: int, data: Path | None) -> tuple[np.ndarray, str]:
    from soundalike.audio import io, synth

    if data is not None:
        excerpts = sorted((data / "music-excerpts").glob("*.ogg"))
        ys = []
        for p in excerpts:
            w = io.load(p, sr=SR)
            for a in range(0, len(w.y) - int(CLIP_S * SR) + 1, int(CLIP_S * SR)):
                ys.append(w.y[a : a + int(CLIP_S * SR)])
                if len(ys) == n:
                    return np.stack(ys), "music excerpts"
    styles = list(synth.DEMO_STYLES)
    ys = [synth.demo_track(styles[i % len(styles)], seed=i, duration_s=CLIP_S, sr=SR) for i in range(n)]
    return np.stack(ys), "generated"


def bench_logmel(n_clips: int, data: Path | None) -> list[tuple[str, str, str]]:
    import librosa
    import torch

    from soundalike.audio import features
    from soundalike.config import MelConfig

    X, source = _clips(n_clips, data)
    cfg = MelConfig(sample_rate=SR, n_fft=2048, hop_length=512, n_mels=128, top_db=80.0)

    def lib_one(y):
        M = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=2048, hop_length=512, n_mels=128,
                                           center=True, pad_mode="constant")
        return librosa.power_to_db(M, ref=1.0, amin=1e-10, top_db=80.0)

    err = float(np.abs(features.logmel(X[0], cfg) - lib_one(X[0])).max())
    t_lib = _best(lambda: [lib_one(y) for y in X])
    t_one = _best(lambda: [features.logmel(y, cfg) for y in X])
    t_batch = _best(lambda: features.logmel(X, cfg))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t_one_1 = _best(lambda: [features.logmel(y, cfg) for y in X])
    torch.set_num_threads(threads)
    n = len(X)
    lib_rate = n / t_lib
    rows = [
        (f"log-mel, librosa {librosa.__version__} ({n} x 30 s {source})", f"{lib_rate:.1f} clips/s", "baseline"),
        (f"log-mel, ours per clip ({threads} torch threads)", f"{n / t_one:.1f} clips/s = {lib_rate and n / t_one / lib_rate:.1f}x",
         ">= 3x"),
        (f"log-mel, ours batched ({n} clips, {threads} threads)", f"{n / t_batch:.1f} clips/s = {n / t_batch / lib_rate:.1f}x",
         ">= 3x"),
        ("log-mel, ours per clip (1 torch thread)", f"{n / t_one_1:.1f} clips/s = {n / t_one_1 / lib_rate:.1f}x", "-"),
        ("log-mel, max |ours - librosa|", f"{err:.4f} dB", "<= 0.01 dB"),
    ]
    return rows


def _ingest_rate(files: list[Path], label: str, workers: int) -> tuple[str, str, str]:
    from soundalike.ingest import ingest

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        s = ingest(paths=files, catalog=Path(tmp) / "catalog.sqlite", model="mfcc-stats", workers=workers)
        dt = time.perf_counter() - t
    dur = ""
    return (f"ingest {label}, {workers} workers ({s.ingested} ok, {s.failed} failed{dur})",
            f"{len(files) / dt:.1f} clips/s ({dt:.1f} s)", "-")


def bench_ingest(n: int, data: Path | None, workers: int) -> list[tuple[str, str, str]]:
    import soundfile as sf

    from soundalike.audio import synth

    rows = []
    if data is not None:
        mp3s = sorted((data / "philharmonia").rglob("*.mp3"))
        rng = np.random.default_rng(0)
        pick = [mp3s[i] for i in sorted(rng.choice(len(mp3s), size=min(n, len(mp3s)), replace=False))]
        rows.append(_ingest_rate(pick, f"{len(pick)} Philharmonia mp3", workers))
    with tempfile.TemporaryDirectory() as tmp:
        styles = list(synth.DEMO_STYLES)
        files = []
        for i in range(min(n, 60)):
            p = Path(tmp) / f"gen_{i:03d}.mp3"
            y = synth.demo_track(styles[i % len(styles)], seed=i, duration_s=10.0, sr=SR)
            sf.write(str(p), y, SR, format="MP3", subtype="MPEG_LAYER_III")
            files.append(p)
        rows.append(_ingest_rate(files, f"{len(files)} generated 10-s mp3", workers))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--ingest-n", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--skip-ingest", action="store_true")
    args = ap.parse_args()
    data = args.data if args.data.is_dir() else None
    rows = bench_logmel(args.clips, data)
    if not args.skip_ingest:
        rows += bench_ingest(args.ingest_n, data, args.workers)
    print(f"cpu cores available: {len(os.sched_getaffinity(0))}")
    w = max(len(r[0]) for r in rows)
    v = max(len(r[1]) for r in rows)
    print(f"{'measure':<{w}}  {'result':<{v}}  target")
    for name, val, target in rows:
        print(f"{name:<{w}}  {val:<{v}}  {target}")


if __name__ == "__main__":
    main()
