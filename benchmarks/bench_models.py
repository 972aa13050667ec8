"""Speed of the pretrained taggers: patches/s and 30-s clips/s, against the TF original.

    python benchmarks/bench_models.py                       # the port only
    python benchmarks/bench_models.py --tf-python /tmp/tfenv/bin/python

For every model and batch size (default 1, 2, 4, 8, 16, 32) it measures how many
3-s patches per second the network runs (log-mel patches already computed), and how
many 30-s clips per second ``predict`` handles end to end (decode, resample, log-mel,
network).  With ``--tf-python`` (a Python that can import tensorflow and the musicnn
wheel, e.g. the throw-away env described in tests/data/musicnn_reference/README.md)
it runs, in the same run and interleaved with ours so both see the same machine load:
the original TF graph on the same patches at the same batch sizes, and the original
``musicnn.extractor.extractor`` on the same clip files; it prints the ratios.
Target: port / TF >= 1.0 (goal 2.0).  ``batch`` is what ``run_patches(batch_size=)``
gets: the port splits each batch into micro-batches of at most ``MICRO_BATCH`` patches
over its worker threads; TF takes the batch whole with its own 2-thread pool.  Clips
are the first 30 s of ../shared/data/music-excerpts when present, synthetic demo
tracks otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "music-excerpts"
CLIP_S = 30.0

# Runs inside the TF environment (never imported by the project).  Protocol: one JSON
# request per stdin line, one JSON answer per stdout line.
TF_WORKER = r'''
import contextlib, json, os, sys, time
import numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
from musicnn import models
import importlib.metadata
from pathlib import Path
PKG = Path(str(importlib.metadata.distribution("musicnn").locate_file("musicnn")))
out = sys.stdout
sys.stdout = sys.stderr          # the extractor prints; keep our channel clean
graphs = {}

def graph(name):
    if name not in graphs:
        g = tf.Graph()
        with g.as_default():
            x = tf.compat.v1.placeholder(tf.float32, [None, 187, 96])
            t = tf.compat.v1.placeholder(tf.bool)
            probs = tf.nn.sigmoid(models.define_model(x, t, name, 50)[0])
            sess = tf.compat.v1.Session(graph=g)
            tf.compat.v1.train.Saver().restore(sess, str(PKG / name) + "/")
        graphs[name] = (sess, x, t, probs)
    return graphs[name]

for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "patches":
        sess, x, t, probs = graph(req["model"])
        P = np.transpose(np.load(req["path"]), (0, 2, 1))
        b = req["batch"]
        sess.run(probs, {x: P[:b], t: False})
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < req["seconds"]:
            for s in range(0, len(P), b):
                sess.run(probs, {x: P[s:s + b], t: False})
            n += len(P)
        ans = {"patches_per_s": n / (time.perf_counter() - t0)}
    elif req["op"] == "extract":
        from musicnn.extractor import extractor
        t0 = time.perf_counter()
        for f in req["files"]:
            extractor(f, model=req["model"], extract_features=False)
        ans = {"clips_per_s": len(req["files"]) / (time.perf_counter() - t0)}
    elif req["op"] == "version":
        ans = {"tf": tf.__version__, "numpy": np.__version__}
    out.write(json.dumps(ans) + "\n"); out.flush()
'''


class TFWorker:
    """The original musicnn in a subprocess of another Python."""

    def __init__(self, python: str):
        self.script = tempfile.NamedTemporaryFile("w", suffix="_musicnn_tf_worker.py", delete=False)
        self.script.write(TF_WORKER)
        self.script.close()
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.proc = subprocess.Popen([python, self.script.name], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)

    def ask(self, **req) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the TF worker died (is tensorflow + musicnn importable by --tf-python?)")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
        os.unlink(self.script.name)


def make_clips(folder: Path, n: int) -> list[Path]:
    """``n`` 30-s clips as 44.1 kHz wav files (real excerpts when available)."""
    import soundfile as sf

    from soundalike.audio import synth
    from soundalike.audio.io import load

    paths = []
    sources = sorted(SHARED.glob("*.ogg")) if SHARED.is_dir() else []
    for i in range(n):
        if i < len(sources):
            y, sr = load(sources[i], sr=44100, duration_s=CLIP_S)
            if len(y) < CLIP_S * sr:  # short excerpt: loop it to 30 s
                y = np.resize(y, int(CLIP_S * sr))
        else:
            sr = 44100
            y = synth.demo_track(sorted(synth.DEMO_STYLES)[i % 5], seed=i, duration_s=CLIP_S, sr=sr)
        p = folder / f"clip{i}.wav"
        sf.write(p, y, sr)
        paths.append(p)
    return paths


def port_patches_per_s(model, P: np.ndarray, batch: int, seconds: float) -> float:
    """Throughput on all of ``P`` fed in forward passes of ``batch`` patches."""
    model.run_patches(P[: 2 * batch], batch_size=batch)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.run_patches(P, batch_size=batch)
        n += len(P)
    return n / (time.perf_counter() - t0)


def port_clips_per_s(model, files: list[Path], batch: int) -> float:
    from soundalike.audio.io import load

    t0 = time.perf_counter()
    for f in files:
        y, sr = load(f, sr=model.sample_rate)
        model.predict(y, sr, batch_size=batch)
    return len(files) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="MTT_musicnn,MTT_vgg,MSD_musicnn,MSD_vgg")
    ap.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per patches/s measurement")
    ap.add_argument("--clips", type=int, default=2, help="30-s clips for the clips/s measurement")
    ap.add_argument("--tf-python", help="a Python with tensorflow + the musicnn wheel (the original)")
    ap.add_argument("--threads", type=int, default=None,
                    help="worker threads for the port (default: SOUNDALIKE_THREADS or the number of CPUs)")
    args = ap.parse_args()

    import torch

    if args.threads:
        os.environ["SOUNDALIKE_THREADS"] = str(args.threads)
    from soundalike.models.pretrained import DEFAULT_BATCH, MICRO_BATCH, default_threads, load

    models = args.models.split(",")
    batches = [int(b) for b in args.batch_sizes.split(",")]
    tf = TFWorker(args.tf_python) if args.tf_python else None
    print(f"# torch {torch.__version__}, {default_threads()} thread(s) for the port, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, micro-batch {MICRO_BATCH}"
          + (f"; original: tensorflow {tf.ask(op='version')['tf']}" if tf else "; no TF original (--tf-python)"))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            files = make_clips(Path(tmp), args.clips)
            m0 = load(models[0])
            P = np.concatenate([m0.patches(load_audio(f, m0.sample_rate), m0.sample_rate) for f in files])
            P = np.resize(P, (max(batches), *P.shape[1:])).astype(np.float32)
            ppath = Path(tmp) / "patches.npy"
            np.save(ppath, P)

            print(f"\n## patches/s (3-s patches, network only: the same 32 patches fed in forward passes of `batch`)\n")
            head = f"| model | batch | port |" + (" TF original | ratio |" if tf else "")
            print(head)
            print("|" + "|".join(["---"] * (head.count("|") - 1)) + "|")
            for name in models:
                m = load(name)
                for b in batches:
                    ours = port_patches_per_s(m, P, b, args.seconds)
                    row = f"| {name} | {b} | {ours:.1f} |"
                    if tf:
                        theirs = tf.ask(op="patches", model=name, batch=b, path=str(ppath),
                                        seconds=args.seconds)["patches_per_s"]
                        row += f" {theirs:.1f} | {ours / theirs:.2f} |"
                    print(row, flush=True)

            print(f"\n## 30-s clips/s end to end ({len(files)} clips: decode, resample, log-mel, network)\n")
            big = max(batches)
            head = (f"| model | port, batch 1 | port, batch {DEFAULT_BATCH} (default) | port, batch {big} |"
                    + (" TF extractor | ratio (default) |" if tf else ""))
            print(head)
            print("|" + "|".join(["---"] * (head.count("|") - 1)) + "|")
            for name in models:
                m = load(name)
                c1 = port_clips_per_s(m, files, 1)
                cd = port_clips_per_s(m, files, DEFAULT_BATCH)
                c16 = port_clips_per_s(m, files, big)
                row = f"| {name} | {c1:.2f} | {cd:.2f} | {c16:.2f} |"
                if tf:
                    theirs = tf.ask(op="extract", model=name, files=[str(f) for f in files])["clips_per_s"]
                    row += f" {theirs:.2f} | {cd / theirs:.2f} |"
                print(row, flush=True)
    finally:
        if tf:
            tf.close()
    print("\ntarget: port/TF >= 1.0, goal 2.0 (the TF extractor rebuilds its graph and restores the "
          "checkpoint on every call and runs one patch at a time, as musicnn does)")


def load_audio(path: Path, sr: int) -> np.ndarray:
    from soundalike.audio.io import load

    return load(path, sr=sr).y


if __name__ == "__main__":
    sys.exit(main())
