"""Ingest throughput: the analysis budget, local workers vs Ray, the commit path, a projection.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_ingest.py \\
        [--gamemusic ~/.cache/soundalike-bench/gamemusic] [--tracks 24] [--model MTT_musicnn] \\
        [--skip profile,fine,throughput,full,peaks,seek1,vorbis,local,ray,commit,precision] \\
        [--filed DIR]   # DIR: git worktree add --detach DIR 3268b88 (the code as issue 10 was filed)

All figures of one run are measured side by side on the same machine, so only their
ratios count (the machine is shared; the load average is printed).

1b. **Finer profile** of the default's non-network work on the same two files: the seek
   pass's decode (open, seek, pre-roll, decode, mono mix, resample, length check) and the
   attributes (onset envelopes, tempo, chroma, key, loudness) stage by stage.
1. **Profile** of a 4-minute mp3 and ogg (made from a gamemusic track): where the time
   goes, stage by stage (header, decoding, log-mel, network, attributes, hash + file
   tags, commit), three ways: today (the issue's baseline: MTT_musicnn, full, fp32), the
   default before peaks left ingest (one whole decode for peaks, patches and attribute
   excerpts; ``ingest --peaks`` now) and the default now (the header's length checked,
   then only the patches and attribute excerpts decoded, by seeking).  One torch thread.
2. **Throughput** on real full-length gamemusic tracks (a subsample of ``--tracks``,
   every soundtrack and the longest tracks included): today vs the default vs the default
   with ``--peaks``, local 1 and 2 workers vs Ray with 1
   and 2 worker processes (a private Ray on 127.0.0.1 started here; its start is not
   timed, its workers' start is).  Tracks per hour per core and audio hours per hour per
   core; Ray's scaling efficiency at 2 workers = rate(2) / (2 x rate(1)).
3. **Commit rate** of the driver: prepared results committed one transaction per file and
   in groups (the driver's group commit) into SQLite (and PostgreSQL when psycopg and the
   server binaries are there), tracks/s.
5. **Precision**: fp32 vs bf16 vs int8 on every gamemusic track's default-analysis patches:
   speed, the largest change of a track's tag probabilities, same-soundtrack P@10.
4. **Projection** of a 600,000-track store on 1, 4, 10 and 32 nodes of 16 cores from the
   measured per-core rate, capped by the measured commit rate.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"speedup": 10.0, "store_hours_4x16": 1.0, "commit_per_s": 170.0, "ray_eff": 0.80}


def _load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


# --------------------------------------------------------------------------- 1. profile


def _four_minute_files(src: Path, out: Path) -> list[Path]:
    import soundfile as sf

    y, sr = sf.read(src, dtype="float32", always_2d=True)
    y = np.concatenate([y] * int(np.ceil(240 * sr / len(y))))[: 240 * sr]
    files = []
    for fmt, sub, ext in (("MP3", "MPEG_LAYER_III", "mp3"), ("OGG", "VORBIS", "ogg")):
        p = out / f"four_minutes.{ext}"
        with sf.SoundFile(p, "w", sr, y.shape[1], format=fmt, subtype=sub) as f:
            for i in range(0, len(y), 1 << 15):  # blockwise: libsndfile's Vorbis encoder dislikes huge writes
                f.write(y[i : i + (1 << 15)])
        files.append(p)
    return files


def _set_threads(analyzer, n: int) -> None:
    for m in getattr(analyzer, "models", {}).values() or [analyzer.model]:
        m.threads = n


def profile(files: list[Path], model: str, baseline: str) -> None:
    """Where one 4-minute track's ingest time goes, stage by stage, one thread.

    Three ways side by side per format: today (the issue's baseline: ``baseline``, full
    analysis, fp32: one decode to 16 kHz, every patch), the default as it was before one
    decode per file (the fusion at spread:10 in fp32; peaks from their own whole-file decode,
    patches and attribute excerpts each read by seeking), and the default now (one decode
    for everything, ``model`` at its own budget).
    """
    import torch

    from soundalike.audio import attributes as A
    from soundalike.audio import io
    from soundalike.audio.peaks import PeaksAccumulator, peaks_of_file
    from soundalike.catalog.store import Catalog
    from soundalike.ingest.pipeline import _attributes_of_excerpts, _commit, content_hash, read_file_tags
    from soundalike.ingest.plan import default_analysis, patch_grid, planned_patches
    from soundalike.models.zoo import load_analyzer

    torch.set_num_threads(1)
    os.environ["SOUNDALIKE_THREADS"] = "1"
    base = load_analyzer(baseline)
    now = load_analyzer(model)
    for x in (base, now):
        _set_threads(x, 1)

    def timed(fn, repeat=2):
        best, out = float("inf"), None
        for _ in range(repeat):
            t = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t)
        return best, out

    def nets(a, P):
        """log-mel done; the network(s) on patches P."""
        if hasattr(a, "models"):
            return a._analysis(P)
        return a.model._analysis(a.model.run_patches(P))

    def mel_patches(a, ex, sr):
        first = next(iter(a.models.values())) if hasattr(a, "models") else a.model
        if ex is None:
            return first.patches  # whole-signal path
        mel = first.logmel(np.stack(ex), sr)
        lf = a.patch_grid.lead // first.mel_config.hop_length
        return np.ascontiguousarray(mel[:, :, lf : lf + first.patch_frames])

    def commit_time(a, res):
        db = Path(tempfile.mkdtemp()) / "c.sqlite"
        with Catalog.open(db) as cat:
            cat.register_model(model_id=a.model_id, name=a.name, dim=a.embedding_dim, labels=a.labels)
            t, _ = timed(lambda: _commit(cat, res, model_id=a.model_id, label_category="tag", top_tags=5))
        shutil.rmtree(db.parent, ignore_errors=True)
        return t

    plan_now = default_analysis(now)
    heads = [f"today: {baseline} full", f"before (= --peaks): {now.name} {plan_now}, one whole decode",
             f"now: {now.name} {plan_now}, seeks only"]
    print(f"\n## 1. Profile: one 4-minute track, one thread (load {_load()})\n")
    print("| stage | " + " | ".join(f"{f.suffix[1:]} {h}" for f in files for h in heads) + " |")
    print("|---|" + "---|" * (3 * len(files)))
    cols: list[dict[str, float]] = []
    one_by_one: list[float] = []  # (before, now) per file: the excerpts' decode
    sf_vorbis: list[float | None] = []  # per file: the same read with libsndfile's Vorbis decoder
    for path in files:
        meta = io.info(path)
        g = patch_grid(now)
        sr = g.sr
        # --- today: one decode to 16 kHz, every patch through one network
        r: dict[str, float] = {}
        r["header"], _ = timed(lambda: io.info(path))
        r["decode (+ resample to 16 kHz)"], w = timed(lambda: io.load(path, sr=sr))
        first = base.model
        r["log-mel"], P = timed(lambda: first.patches(w.y, w.sr))
        r["network(s)"], an = timed(lambda: nets(base, P), repeat=1)
        r["attributes (tempo, key, loudness)"], _ = timed(lambda: _attributes_of_excerpts(
            [w.y[x] for x in A.excerpt_slices(len(w.y), sr)], an.predictions, sr=sr, total_s=w.duration_s))
        r["hash + file tags"], _ = timed(lambda: (content_hash(path), read_file_tags(path)))
        res = {"kind": "ok", "path": str(path), "hash": "0" * 32, "size": 1, "mtime": 0.0,
               "duration_s": meta.duration_s, "sr": meta.sr, "channels": meta.channels, "format": "x",
               "tags": {}, "embedding": an.embedding, "predictions": an.predictions, "analysis": "full"}
        r["commit (SQLite)"] = commit_time(base, res)
        r["patches"] = len(P)
        cols.append(r)
        # --- before (= ingest --peaks now): one whole decode for peaks, patches and attribute excerpts
        r = {}
        r["header"], _ = timed(lambda: io.info(path))
        picks = planned_patches(now, plan_now, frames=meta.frames, source_sr=meta.sr)
        slices = A.excerpt_slices(int(meta.frames * sr // meta.sr), sr)
        starts = [g.start(k) for k in picks] + [x.start for x in slices]
        lengths = [g.length] * len(picks) + [x.stop - x.start for x in slices]

        def one():
            acc = PeaksAccumulator()
            o = io.read_once(path, sr=sr, starts=starts, lengths=lengths, on_block=acc.add,
                             on_restart=acc.reset)
            return o, acc.result(sr=o.sr)

        r["one whole decode: peaks + patches + attribute excerpts"], (o, pk) = timed(one)
        ex = o.excerpts[: len(picks)]
        r["log-mel"], P = timed(lambda: mel_patches(now, ex, sr))
        r["network(s)"], an = timed(lambda: nets(now, P), repeat=1)
        r["attributes (tempo, key, loudness)"], at = timed(
            lambda: _attributes_of_excerpts(o.excerpts[len(picks):], an.predictions, sr=sr,
                                            total_s=o.duration_s))
        r["hash + file tags"], _ = timed(lambda: (content_hash(path), read_file_tags(path)))
        res = {**res, "embedding": an.embedding, "predictions": an.predictions, "analysis": plan_now,
               "peaks": pk, "attributes": at}
        r["commit (SQLite)"] = commit_time(now, res)
        r["patches"] = len(P)
        cols.append(r)
        # --- now: the header's length checked at its end, then only the excerpts decoded, by seeking
        r = {}
        r["header"], _ = timed(lambda: io.info(path))
        # one call and one open file, as seek_pass reads them: the length checked, the
        # excerpts in order of position, overlaps decoded once
        key = "length check + seek + decode + resample: patches + attribute excerpts"
        if hasattr(io, "checked_excerpts"):
            r[key], (_, both) = timed(lambda: io.checked_excerpts(path, sr=sr, place=lambda m: (starts, lengths)))
        else:  # the code before one open file (for a same-run comparison)
            r[key], (_, both) = timed(lambda: (io.length_checked(path),
                                               io.load_excerpts(path, sr=sr, starts=starts, length=lengths)))
        ex, parts = both[: len(picks)], both[len(picks) :]
        # the same excerpts as read before: each opened, sought and decoded alone, the check apart
        one_by_one.append(timed(lambda: (io.length_checked(path), io._excerpts_one_by_one(
            path, sr=sr, starts=starts, lengths=lengths)))[0])
        one_by_one.append(r[key])
        # the same read with libsndfile decoding Ogg Vorbis too (before FFmpeg's decoder took it)
        with _libsndfile_vorbis(True):
            sf_vorbis.append(timed(lambda: io.checked_excerpts(path, sr=sr, place=lambda m: (starts, lengths)))[0]
                             if hasattr(io, "checked_excerpts") else None)
        r["log-mel"], P = timed(lambda: mel_patches(now, ex, sr))
        r["network(s)"], an = timed(lambda: nets(now, P), repeat=1)
        r["attributes (tempo, key, loudness)"], at = timed(
            lambda: _attributes_of_excerpts(parts, an.predictions, sr=sr, total_s=meta.duration_s))
        r["hash + file tags"], _ = timed(lambda: (content_hash(path), read_file_tags(path)))
        res = {**res, "embedding": an.embedding, "predictions": an.predictions, "analysis": plan_now,
               "peaks": None, "attributes": at}
        r["commit (SQLite)"] = commit_time(now, res)
        r["patches"] = len(P)
        cols.append(r)
    keys = list(dict.fromkeys(k for c in cols for k in c if k != "patches"))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{c[k] * 1000:.0f} ms" if k in c else "" for c in cols) + " |")
    totals = [sum(v for kk, v in c.items() if kk != "patches") for c in cols]
    print("| **total** | " + " | ".join(f"**{t * 1000:.0f} ms**" for t in totals) + " |")
    print("| patches | " + " | ".join(str(c["patches"]) for c in cols) + " |")
    for i, f in enumerate(files):
        t0, t1, t2 = totals[3 * i : 3 * i + 3]
        c2 = cols[3 * i + 2]
        top = max((k for k in c2 if k != "patches"), key=c2.get)
        print(f"\n{f.suffix[1:]}: today / before = {t0 / t1:.1f}x, today / now = **{t0 / t2:.1f}x**; "
              f"the largest cost now: {top} ({c2[top] * 1000:.0f} ms of {t2 * 1000:.0f})")
        b, n = one_by_one[2 * i : 2 * i + 2]
        print(f"{f.suffix[1:]}: the excerpts' decode, each excerpt opened and sought alone (before) "
              f"{b * 1000:.0f} ms, in order with overlaps decoded once (now) {n * 1000:.0f} ms: {b / n:.2f}x")
        if f.suffix == ".ogg" and sf_vorbis[i] is not None:
            print(f"ogg: the same read with libvorbis through libsndfile (before) {sf_vorbis[i] * 1000:.0f} ms, "
                  f"FFmpeg's Vorbis decoder placed by the pages' granules (now) {n * 1000:.0f} ms: "
                  f"{sf_vorbis[i] / n:.2f}x")


def fine_profile(files: list[Path], model: str, repeat: int = 5) -> dict[str, dict[str, float]]:
    """The default's non-network work on one 4-minute track, split finer (CPU seconds, best of
    ``repeat``, one thread): inside the seek pass's decode (open, seek, pre-roll, decode, mono mix,
    resample, length check) and inside the attributes (onset envelopes, tempo, chroma,
    key, loudness).  The decode is timed as ``audio.io`` reads the excerpts (in order of
    position, overlaps decoded once, an MP3 on one handle), stage by stage."""
    import torch

    from soundalike.audio import attributes as A
    from soundalike.audio import io
    from soundalike.ingest.pipeline import _attributes_of_excerpts, content_hash, read_file_tags
    from soundalike.ingest.plan import default_analysis, patch_grid, planned_patches
    from soundalike.models.zoo import load_analyzer

    torch.set_num_threads(1)
    clock = time.thread_time  # CPU time of this thread (all the work here is on it): robust to a busy machine
    now = load_analyzer(model)
    _set_threads(now, 1)
    g = patch_grid(now)
    sr = g.sr
    plan = default_analysis(now)
    first = next(iter(now.models.values())) if hasattr(now, "models") else now.model

    def best(fn):
        b, out = float("inf"), None
        for _ in range(repeat):
            t = clock()
            out = fn()
            b = min(b, clock() - t)
        return b, out

    rows: dict[str, dict[str, float]] = {}
    for path in files:
        fmt = path.suffix[1:]
        col = {}
        meta = io.info(path)
        picks = planned_patches(now, plan, frames=meta.frames, source_sr=meta.sr)
        slices = A.excerpt_slices(int(meta.frames * sr // meta.sr), sr)
        starts = [g.start(k) for k in picks] + [x.start for x in slices]
        lengths = [g.length] * len(picks) + [x.stop - x.start for x in slices]
        if hasattr(io, "checked_excerpts"):  # one open file for the check and the excerpts
            col["seek pass: length check + 6 patches + 3 attribute excerpts"], _ = best(
                lambda: io.checked_excerpts(path, sr=sr, place=lambda m: (starts, lengths)))
        else:
            col["seek pass: length check + 6 patches + 3 attribute excerpts"], _ = best(
                lambda: (io.length_checked(path), io.load_excerpts(path, sr=sr, starts=starts, length=lengths)))
        # the same reads, stage by stage (as _excerpts_on_one_handle does them)
        spans = io._excerpt_spans(starts, lengths, src_sr=meta.sr, sr=sr, margin_s=io.EXCERPT_MARGIN_S)
        groups: list[list[int]] = []
        for i in sorted(range(len(spans)), key=lambda i: spans[i][0]):
            a, n_src = spans[i][0], spans[i][1]
            if groups and a <= groups[-1][1] + io.MERGE_GAP_FRAMES:
                groups[-1][1] = max(groups[-1][1], a + n_src)
                groups[-1].append(i)
            else:
                groups.append([a, a + n_src, i])
        reuse = meta.subtype.startswith("MPEG_LAYER")
        T = dict.fromkeys(("open", "seek", "pre-roll", "decode", "mono", "resample", "check"), float("inf"))
        for _ in range(repeat):
            t = dict.fromkeys(T, 0.0)
            src = None
            for g_start, g_stop, *members in groups:
                t0 = clock()
                if src is None or not reuse:
                    if src is not None:
                        src.close()
                    src = io._sf_open(path)
                t1 = clock()
                at = src._seek_start(g_start)
                src.f.seek(at)
                t2 = clock()
                skip = g_start - at
                while skip > 0:
                    skip -= len(src._read(min(io.BLOCK_FRAMES, skip)))
                t3 = clock()
                blocks, left = [], g_stop - g_start
                while left > 0:
                    b = src._read(min(io.BLOCK_FRAMES, left))
                    if not len(b):
                        break
                    left -= len(b)
                    blocks.append(b)
                t4 = clock()
                mono = [io._to_mono(b) for b in blocks]
                for m in mono:
                    io._check_finite(path, m, offset=0, sr=meta.sr)
                data = np.concatenate(mono)
                t5 = clock()
                for i in members:
                    a, n_src, lead, _, n = spans[i]
                    io._cut_excerpt(data[a - g_start : a - g_start + n_src], src_sr=meta.sr, sr=sr,
                                    lead=lead, length=n)
                t6 = clock()
                for k, dt in zip(("open", "seek", "pre-roll", "decode", "mono", "resample"),
                                 (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
                    t[k] += dt
            t0 = clock()
            if hasattr(io, "_ends_where_stated"):
                io._ends_where_stated(src, slack_s=0.5, keep_open=True)
            else:
                io.length_checked(path)
            t["check"] = clock() - t0
            src.close()
            T = {k: min(T[k], t[k]) for k in T}
        names = {"open": "  open (an MP3 once, other formats once per span)",
                 "seek": "  seek", "pre-roll": f"  pre-roll decode ({io.SEEK_PREROLL_FRAMES} frames a span)",
                 "decode": "  decode the spans",
                 "mono": "  mono mix + finite check",
                 "resample": "  resample to 16 kHz (soxr HQ)", "check": "  length check (last second)"}
        for k, v in T.items():
            col[names[k]] = v
        col["  (spans decoded)"] = len(groups) / 1000  # printed as a count
        ys = io.load_excerpts(path, sr=sr, starts=starts, length=lengths)
        col["log-mel (6 patches)"], _ = best(lambda: first.logmel(np.stack(ys[: len(picks)]), sr))
        parts = ys[len(picks):]
        y = np.concatenate(parts)
        sl, at = [], 0
        for p in parts:
            sl.append(slice(at, at + len(p)))
            at += len(p)
        preds = now.analyze_excerpts(ys[: len(picks)], sr).predictions
        col["attributes"], _ = best(lambda: _attributes_of_excerpts(parts, preds, sr=sr, total_s=meta.duration_s))
        col["  onset envelopes (3 x 15 s)"], _ = best(lambda: [A.onset_envelope(y=y[s], sr=sr) for s in sl])
        col["  tempo (onset envelopes included)"], _ = best(lambda: A.estimate_tempo(y=y, sr=sr, slices=sl))
        col["  chroma (with its 16 -> 8 kHz resample)"], c = best(lambda: A.chroma(y=y, sr=sr, slices=sl))
        col["  key from chroma"], _ = best(lambda: A.key_from_chroma(c))
        col["  loudness (K-weighting, gates)"], _ = best(lambda: A.loudness(y=y, sr=sr))
        col["hash"], _ = best(lambda: content_hash(path))
        col["file tags"], _ = best(lambda: read_file_tags(path))
        for k, v in col.items():
            rows.setdefault(k, {})[fmt] = v
    print(f"\n## 1b. The default's non-network work, finer (CPU time, one thread, best of {repeat}; load {_load()})\n")
    fmts = [f.suffix[1:] for f in files]
    print("| stage | " + " | ".join(fmts) + " |")
    print("|---|" + "---|" * len(fmts))
    for k, d in rows.items():
        cells = [f"{d[f] * 1000:.0f}" if "spans decoded" in k else f"{d[f] * 1000:.1f} ms" for f in fmts]
        print(f"| {k} | " + " | ".join(cells) + " |")
    top = ("seek pass: length check + 6 patches + 3 attribute excerpts", "log-mel (6 patches)", "attributes",
           "hash", "file tags")
    print("| **total (without the networks and the commit)** | "
          + " | ".join(f"**{sum(rows[k][f] for k in top) * 1000:.1f} ms**" for f in fmts) + " |")
    return rows


# --------------------------------------------------------------------------- 2. throughput


def _subsample(gm: Path, n: int) -> tuple[list[Path], float]:
    """``n`` tracks: the longest of each soundtrack first, then round-robin over soundtracks."""
    with open(gm / "gamemusic.csv") as f:
        rows = [(gm / r["path"], r["label"], float(r["duration_s"])) for r in csv.DictReader(f)]
    by: dict[str, list] = {}
    for r in sorted(rows, key=lambda r: -r[2]):
        by.setdefault(r[1], []).append(r)
    out = []
    while len(out) < min(n, len(rows)):
        for lab in sorted(by):
            if by[lab] and len(out) < n:
                out.append(by[lab].pop(0))
    return [r[0] for r in out], sum(r[2] for r in out)


def _folder(tracks: list[Path], tmp: Path) -> Path:
    d = tmp / "tracks"
    d.mkdir(exist_ok=True)
    for i, p in enumerate(tracks):
        # real files (hard links where possible): ingest does not follow a symlink that
        # leads out of the scanned folder
        dst = d / f"{i:03d}_{p.parent.name}_{p.name}"
        try:
            os.link(p, dst)
        except OSError:
            shutil.copyfile(p, dst)
    return d


@contextlib.contextmanager
def _libsndfile_vorbis(on: bool):
    """In this process, Ogg Vorbis excerpts decoded by libsndfile, as before FFmpeg's
    decoder read them (samples within ~1e-6; for the same-run comparison)."""
    from soundalike.audio import io

    real = getattr(io, "FFMPEG_VORBIS", None)
    if on and real is not None:
        io.FFMPEG_VORBIS = False
    try:
        yield
    finally:
        if real is not None:
            io.FFMPEG_VORBIS = real


@contextlib.contextmanager
def _excerpts_one_by_one(on: bool):
    """In this process, ``load_excerpts`` as it was: every excerpt opened, sought and decoded
    alone (the same samples; for the same-run comparison with reading them in order)."""
    from soundalike.audio import io

    real = io._excerpts_on_one_handle
    if on:
        io._excerpts_on_one_handle = lambda src, *, sr, starts, lengths, margin_s: io._excerpts_one_by_one(
            src.path, sr=sr, starts=starts, lengths=lengths, margin_s=margin_s)
    try:
        yield
    finally:
        io._excerpts_on_one_handle = real


def _run_ingest(folder: Path, tmp: Path, name: str, **kw) -> tuple[float, float, float]:
    """``(wall s, steady s, audio s)``; steady = from the first committed file to the last,
    scaled to all files (the workers' start and the model load left out)."""
    from soundalike.ingest import ingest

    db = tmp / f"{name}.sqlite"
    stamps: list[float] = []

    def on_event(e):
        if e["event"] == "file":
            stamps.append(time.perf_counter())

    t = time.perf_counter()
    s = ingest([folder], catalog=db, on_event=on_event, **kw)
    wall = time.perf_counter() - t
    assert s.failed == 0 and s.ingested > 0, (name, s.errors[:3])
    n = len(stamps)
    steady = (stamps[-1] - stamps[0]) * n / (n - 1) if n > 2 else wall
    return wall, steady, s.audio_s


#: run in a subprocess on a checkout of the code as issue 10 was filed: its ``ingest`` (default
#: MTT_musicnn, every patch, fp32) on the same folder, one thread, the same steady-state clock
_FILED_RUN = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from soundalike.catalog.ingest import ingest
stamps = []
def on_event(e):
    if e["event"] == "file":
        stamps.append(time.perf_counter())
t = time.perf_counter()
s = ingest([sys.argv[2]], catalog=sys.argv[3], workers=1, on_event=on_event)
print(json.dumps({"wall": time.perf_counter() - t, "stamps": stamps, "failed": s.failed}))
"""


def _run_filed(code: Path, folder: Path, tmp: Path, name: str) -> tuple[float, float]:
    """``(wall s, steady s)`` of the filed code's ingest of ``folder`` (see :data:`_FILED_RUN`)."""
    import json
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", _FILED_RUN, str(code / "src"), str(folder),
                          str(tmp / f"{name}.sqlite")], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the filed code's ingest ({code}) failed:\n{out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["failed"] == 0, r
    st = r["stamps"]
    n = len(st)
    return r["wall"], ((st[-1] - st[0]) * n / (n - 1) if n > 2 else r["wall"])


def throughput(gm: Path, n: int, model: str, skip: set[str], tmp: Path, *, baseline: str = "MTT_musicnn",
               variants: tuple[str, ...] = (), filed: Path | None = None) -> dict[str, float]:
    from soundalike.ingest.plan import DEFAULT_ANALYSIS

    from soundalike.ingest.plan import default_analysis
    from soundalike.models.zoo import load_analyzer

    default_label = f"{model}, {default_analysis(load_analyzer(model))}"  # what ingest runs by default

    import torch

    torch.set_num_threads(1)  # the in-process (1 worker) run: one core, as the workers get
    tracks, audio_s = _subsample(gm, n)
    folder = _folder(tracks, tmp)
    print(f"\n## 2. Throughput: {len(tracks)} gamemusic tracks ({audio_s / 3600:.2f} h of audio, "
          f"{audio_s / len(tracks) / 60:.1f} min per track), {model}, load {_load()}\n")
    runs = []
    if "full" not in skip:
        runs.append((f"today: {baseline}, full, fp32 (the issue's baseline), local, 1 worker", 1,
                     dict(workers=1, analysis="full", model=baseline)))
    runs.append((f"default: {default_label}, local, 1 worker", 1, dict(workers=1, model=model)))
    if "seek1" not in skip:  # the default as it read excerpts before: each opened and sought alone
        runs.append((f"{default_label}, one seek per excerpt (before), local, 1 worker", 1,
                     dict(workers=1, model=model, one_by_one=True)))
    if "vorbis" not in skip:  # the default before FFmpeg decoded Ogg Vorbis excerpts
        runs.append((f"{default_label}, Ogg Vorbis through libsndfile (before), local, 1 worker", 1,
                     dict(workers=1, model=model, sf_vorbis=True)))
    if "peaks" not in skip:  # the default before peaks left ingest: one whole decode per file
        runs.append((f"{default_label}, --peaks (the default before), local, 1 worker", 1,
                     dict(workers=1, model=model, peaks=True)))
    for v in variants:  # other settings weighed against the default, same run
        vm, _, va = v.partition(":")
        runs.append((f"{vm}, {va or default_analysis(load_analyzer(vm))}, local, 1 worker", 1,
                     dict(workers=1, model=vm, analysis=va or None)))
    if "local" not in skip:
        runs.append((f"default, local, 2 workers", 2, dict(workers=2, model=model)))
    ray_addr = None
    if "ray" not in skip:
        ray_addr = _start_ray(tmp)
        runs.append(("default, Ray, 1 worker process", 1, dict(ray=ray_addr, workers=1, model=model)))
        runs.append(("default, Ray, 2 worker processes", 2, dict(ray=ray_addr, workers=2, model=model)))
    print("| run | cores | wall s (with start-up) | steady s | tracks/h per core | audio h/h per core | vs full |")
    print("|---|---|---|---|---|---|---|")
    rates: dict[str, float] = {}
    full_rate = None
    filed_rate = None
    if filed is not None:
        import subprocess

        rev = subprocess.run(["git", "-C", str(filed), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip() or "?"
        wall, steady = _run_filed(filed, folder, tmp, "filed")
        filed_rate = len(tracks) / steady * 3600
        print(f"| the issue's today: the code as filed ({rev}), its default (MTT_musicnn, every patch, fp32), "
              f"1 worker | 1 | {wall:.1f} | {steady:.1f} | {filed_rate:.0f} | {audio_s / steady:.1f} | |", flush=True)
    try:
        for i, (label, cores, kw) in enumerate(runs):
            os.environ["SOUNDALIKE_THREADS"] = "1"  # one inference thread per worker process
            kw = dict(kw)
            with _excerpts_one_by_one(kw.pop("one_by_one", False)), _libsndfile_vorbis(kw.pop("sf_vorbis", False)):
                wall, steady, got_s = _run_ingest(folder, tmp, f"run{i}", **kw)
            # rates at steady state: a big store amortises the workers' start-up
            per_core = len(tracks) / steady * 3600 / cores
            audio = got_s / steady / cores
            if label.startswith("today"):
                full_rate = per_core
            rates[label] = per_core
            vs = f"{per_core / full_rate:.1f}x" if full_rate else ""
            print(f"| {label} | {cores} | {wall:.1f} | {steady:.1f} | {per_core:.0f} | {audio:.1f} | {vs} |",
                  flush=True)
    finally:
        if ray_addr:
            _stop_ray()
    keys = list(rates)
    out = {"per_core": rates.get(f"default: {default_label}, local, 1 worker", 0.0)}
    if full_rate:
        out["speedup"] = out["per_core"] / full_rate
    if filed_rate:
        out["speedup_filed"] = out["per_core"] / filed_rate
    ray1 = [v for k, v in rates.items() if "Ray, 1" in k]
    ray2 = [v for k, v in rates.items() if "Ray, 2" in k]
    if ray1 and ray2:
        out["ray_eff"] = ray2[0] / ray1[0]  # per-core rates: efficiency = rate(2) / (2 rate(1))
    loc2 = [v for k, v in rates.items() if "local, 2" in k]
    if loc2:
        out["local_eff"] = loc2[0] / out["per_core"]
    del keys
    return out


_RAY: dict = {}


def _start_ray(tmp: Path) -> str:
    """A private two-CPU Ray on 127.0.0.1 (head only), in its own temp dir."""
    from ray.cluster_utils import Cluster

    root = tempfile.mkdtemp(prefix="sa-bench-ray-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = root
    os.makedirs(os.path.join(root, "ray"))
    c = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=2, object_store_memory=100 * 1024 * 1024, node_ip_address="127.0.0.1",
        temp_dir=os.path.join(root, "ray"), include_dashboard=False))
    _RAY.update(cluster=c, root=root)
    return c.address


def _stop_ray() -> None:
    c = _RAY.pop("cluster", None)
    if c is not None:
        c.shutdown()
    shutil.rmtree(_RAY.pop("root", ""), ignore_errors=True)


# --------------------------------------------------------------------------- 3. commit


def commit_rate(n: int, model: str, *, with_peaks: bool = False) -> dict[str, float]:
    """Prepared results shaped as the default ingest makes them (``model``'s embedding size
    and labels, attributes; peaks with ``with_peaks``, as ``--peaks`` makes them) committed
    one transaction per file, and in groups as the driver commits them."""
    from soundalike.audio import synth
    from soundalike.audio.peaks import peaks_from_blocks
    from soundalike.catalog.store import Catalog
    from soundalike.ingest.pipeline import GROUP_FILES, _attributes_of_excerpts, _commit, commit_group
    from soundalike.models.zoo import load_analyzer

    a = load_analyzer(model)
    rng = np.random.default_rng(0)
    labels = list(a.labels)
    y = synth.demo_track("drum-loop", seed=0, duration_s=20.0, sr=16000)
    attrs = _attributes_of_excerpts([y], {}, sr=16000, total_s=200.0)
    peaks = peaks_from_blocks([y], sr=16000)
    results = [{"kind": "ok", "path": f"/music/artist{i % 500}/album{i % 50}/track{i:06d}.mp3",
                "hash": f"{i:032x}", "size": 5_000_000 + i, "mtime": 1.7e9 + i, "duration_s": 200.0,
                "sr": 44100, "channels": 2, "format": "mp3",
                "tags": {"title": f"Track {i}", "artist": f"Artist {i % 500}", "album": f"Album {i % 50}",
                         "genre": "Rock", "year": 1990 + i % 30},
                "embedding": rng.standard_normal(a.embedding_dim).astype(np.float32),
                "predictions": dict(zip(labels, rng.random(len(labels)).tolist())), "analysis": "spread:6",
                "peaks": peaks if with_peaks else None, "attributes": attrs}
               for i in range(n)]
    targets = {"SQLite": lambda d: d / "c.sqlite"}
    pg = None
    try:
        import psycopg  # noqa: F401

        sys.path.insert(0, str(ROOT / "tests"))
        from pgserver import PgServer, find_bin_dir

        if find_bin_dir() is not None:
            pg = PgServer(find_bin_dir()).start()
            targets["PostgreSQL"] = lambda d: pg.new_database("bench")
    except Exception as exc:  # noqa: BLE001 - PostgreSQL is optional here
        print(f"(PostgreSQL not measured: {type(exc).__name__}: {exc})")
    print(f"\n## 3. Commit rate: {n} prepared tracks as {a.name} makes them ({a.embedding_dim}-d, "
          f"{len(labels)} labels, {'peaks, ' if with_peaks else 'no peaks (as the default makes them), '}"
          f"attributes), one transaction each and in groups of {GROUP_FILES} (the driver's path when "
          f"files wait; load {_load()})\n")
    print("| catalog | commit | tracks/s | target |")
    print("|---|---|---|---|")
    out = {}
    kw = dict(model_id=a.model_id, label_category="tag", top_tags=5,
              label_categories=getattr(a, "label_categories", None))
    try:
        for name, where in targets.items():
            for how in ("per file", "grouped"):
                d = Path(tempfile.mkdtemp())
                with Catalog.open(where(d)) as cat:
                    cat.register_model(model_id=a.model_id, name=a.name, dim=a.embedding_dim, labels=labels)
                    t = time.perf_counter()
                    if how == "per file":
                        for r in results:
                            _commit(cat, r, **kw)
                    else:
                        for i in range(0, n, GROUP_FILES):
                            assert all(o is None for o in commit_group(cat, results[i : i + GROUP_FILES], **kw))
                    rate = n / (time.perf_counter() - t)
                    assert cat.count_tracks() == n
                shutil.rmtree(d, ignore_errors=True)
                if how == "grouped":
                    out[name] = rate
                print(f"| {name} | {how} | {rate:.0f} | >= {TARGETS['commit_per_s']:.0f} |", flush=True)
    finally:
        if pg is not None:
            pg.stop()
    return out


# --------------------------------------------------------------------------- 5. precision


def precision(gm: Path, model: str) -> None:
    """fp32 vs bf16 vs int8 on every gamemusic track's default-analysis patches."""
    import torch

    from soundalike.audio.io import info, load_excerpts
    from soundalike.ingest.plan import DEFAULT_ANALYSIS, patch_grid, planned_patches
    from soundalike.models.zoo import load_analyzer

    torch.set_num_threads(1)
    with open(gm / "gamemusic.csv") as f:
        rows = [(gm / r["path"], r["label"]) for r in csv.DictReader(f)]
    base = load_analyzer(model.split("@")[0])
    g = patch_grid(base)
    excerpts = []
    for p, _ in rows:
        meta = info(p)
        picks = planned_patches(base, DEFAULT_ANALYSIS, frames=meta.frames, source_sr=meta.sr)
        if picks is None:  # no more patches than the budget: all of them, as ingest does
            picks = range(max(1, g.n_patches(int(meta.frames * g.sr // meta.sr))))
        excerpts.append(load_excerpts(p, sr=g.sr, starts=[g.start(k) for k in picks], length=g.length))
    labels = np.array([lab for _, lab in rows])
    print(f"\n## 5. Precision: {len(rows)} gamemusic tracks, {DEFAULT_ANALYSIS}, {model}, one thread "
          f"(load {_load()})\n")
    print("| precision | patches/s | max abs diff, track tag probabilities | max abs diff, per patch "
          "| same-soundtrack P@10 | model id |")
    print("|---|---|---|---|---|---|")
    ref = None
    for prec in ("fp32", "bf16", "int8"):
        a = load_analyzer(model.split("@")[0], precision=prec)
        _set_threads(a, 1)
        t = time.perf_counter()
        outs = [a.analyze_excerpts(ex, g.sr) for ex in excerpts]
        dt = time.perf_counter() - t
        n_p = sum(len(o.patch_embeddings) for o in outs)
        E = np.stack([o.embedding for o in outs])
        P = np.stack([np.array(list(o.predictions.values())) for o in outs])
        PP = [o.patch_predictions for o in outs]
        En = E / np.linalg.norm(E, axis=1, keepdims=True)
        S = En @ En.T
        np.fill_diagonal(S, -np.inf)
        nn = np.argsort(-S, axis=1, kind="stable")[:, :10]
        p10 = float((labels[nn] == labels[:, None]).mean())
        if ref is None:
            ref = (P, PP)
        d_track = float(np.abs(P - ref[0]).max())
        d_patch = max(float(np.abs(x - y).max()) for x, y in zip(PP, ref[1]))
        print(f"| {prec} | {n_p / dt:.1f} | {d_track:.4f} | {d_patch:.4f} | {p10:.4f} | {a.model_id} |",
              flush=True)
    print("\nA precision other than fp32 becomes the default only if the track tag probabilities stay "
          "within 0.01 of fp32 and P@10 is unchanged.")


# --------------------------------------------------------------------------- 4. projection


def projection(per_core: float, commit: float) -> None:
    print(f"\n## 4. Projection: 600,000 tracks, nodes of 16 cores, {per_core:.0f} tracks/h per core "
          f"(measured above), commit ceiling {commit:.0f} tracks/s\n")
    print("| nodes | cores | analysis tracks/s | committed tracks/s | hours | target |")
    print("|---|---|---|---|---|---|")
    for nodes in (1, 4, 10, 32):
        cores = nodes * 16
        analysis = cores * per_core / 3600
        rate = min(analysis, commit)
        hours = 600_000 / rate / 3600
        tgt = f"< {TARGETS['store_hours_4x16']:.0f} h" if nodes == 4 else ""
        cap = " (commit-bound)" if commit < analysis else ""
        print(f"| {nodes} | {cores} | {analysis:.0f} | {rate:.0f}{cap} | {hours:.2f} | {tgt} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gamemusic", type=Path, default=Path("~/.cache/soundalike-bench/gamemusic").expanduser())
    ap.add_argument("--tracks", type=int, default=24)
    ap.add_argument("--model", default=None, help="the default run's analyzer (default: ingest's default)")
    ap.add_argument("--baseline-model", default="MTT_musicnn",
                    help="today's analyzer (the issue's baseline: MTT_musicnn, full analysis, fp32)")
    ap.add_argument("--variants", default="",
                    help="comma-separated MODEL[:ANALYSIS] runs next to the default, e.g. musicnn-fusion@bf16:spread:6")
    ap.add_argument("--filed", type=Path, default=None, metavar="DIR",
                    help="also run the issue's baseline as the code was when it was filed: a checkout "
                         "(git worktree add --detach DIR 3268b88), its default ingest on the same tracks")
    ap.add_argument("--commits", type=int, default=3000)
    ap.add_argument("--skip", default="", help="comma-separated: profile,fine,throughput,full,peaks,seek1,vorbis,local,ray,commit,precision")
    args = ap.parse_args()
    if args.model is None:
        from soundalike.models.zoo import DEFAULT_ANALYZER

        args.model = DEFAULT_ANALYZER
    skip = set(filter(None, args.skip.split(",")))
    if args.filed is not None and not (args.filed / "src" / "soundalike" / "catalog" / "ingest.py").is_file():
        ap.error(f"--filed {args.filed}: not a checkout of the code as issue 10 was filed (no "
                 f"src/soundalike/catalog/ingest.py); make one with `git worktree add --detach {args.filed} 3268b88`")
    # A "1 worker, 1 core" row runs on one core: without this the analyzer's patch-parallel
    # inference threads (models.pretrained.default_threads) took every CPU, so the one-worker
    # rates (and the projection from them) counted up to two cores as one.  Pool workers
    # keep their own share (ingest sets it per worker); Ray workers get theirs from Ray.
    os.environ.setdefault("SOUNDALIKE_THREADS", "1")
    from soundalike.models.musicnn import _cpu_capability, front_end_nchw, native_bf16

    # the CPU kind decides the arithmetic (README, "And on a CPU without AVX-512"): say which ran
    print(f"# bench_ingest (load {_load()}, {os.cpu_count()} CPUs, "
          f"SOUNDALIKE_THREADS={os.environ['SOUNDALIKE_THREADS']}; torch CPU capability "
          f"{_cpu_capability() or '?'}, bf16 {'native' if native_bf16() else 'emulated in fp32'}, "
          f"front end {'NCHW' if front_end_nchw() else 'channels-last'})")
    tmp = Path(tempfile.mkdtemp(prefix="sa-bench-ingest-"))
    try:
        src = sorted(args.gamemusic.glob("flare-game/*.ogg"))
        four = _four_minute_files(max(src, key=lambda p: p.stat().st_size), tmp) if src else []
        if "profile" not in skip and four:
            profile(four, args.model, args.baseline_model)
        if "fine" not in skip and four:
            fine_profile(four, args.model)
        if "throughput" in skip:
            return
        tp = throughput(args.gamemusic, args.tracks, args.model, skip, tmp, baseline=args.baseline_model,
                        variants=tuple(filter(None, args.variants.split(","))), filed=args.filed)
        commits = commit_rate(args.commits, args.model) if "commit" not in skip else {}
        if "precision" not in skip:
            precision(args.gamemusic, args.model)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ceiling = min(commits.values()) if commits else float("inf")
    projection(tp["per_core"], ceiling)
    print("\n## Targets\n")
    print("| figure | measured | target |")
    print("|---|---|---|")
    if "speedup" in tp:
        print(f"| default analysis vs full, tracks/h, same run | {tp['speedup']:.1f}x | >= {TARGETS['speedup']:.0f}x |")
    if "speedup_filed" in tp:
        print(f"| default analysis vs the code as filed, tracks/h, same run | {tp['speedup_filed']:.1f}x "
              f"| >= {TARGETS['speedup']:.0f}x |")
    hours = 600_000 / min(64 * tp["per_core"] / 3600, ceiling) / 3600
    print(f"| 600k tracks on 4 x 16 cores (projection) | {hours:.2f} h | < {TARGETS['store_hours_4x16']:.0f} h |")
    for name, rate in commits.items():
        print(f"| commit path (grouped, the driver's), {name} | {rate:.0f} tracks/s | >= {TARGETS['commit_per_s']:.0f} |")
    if "ray_eff" in tp:
        print(f"| Ray scaling efficiency at 2 workers | {tp['ray_eff']:.0%} | >= {TARGETS['ray_eff']:.0%} |")
    if "local_eff" in tp:
        print(f"| (local pool scaling efficiency at 2 workers) | {tp['local_eff']:.0%} | |")
    print(f"\nload average at the end: {_load()}")


if __name__ == "__main__":
    main()
