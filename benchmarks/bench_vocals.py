"""Vocals: calibrate the tagger's voice evidence on music with and without a voice on top.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_vocals.py \\
        [--models MTT_musicnn,MSD_musicnn,musicnn-fusion] [--beds 64] [--json out.json]

Nothing on this machine is real music labelled "has singing" / "instrumental", so the
labelled set is built, and says what it is:

* **beds** (the negatives, as they are): 30-s instrumental clips -- the fluidsynth renders
  of ``bench_attributes.py`` (generated cadences, Debian MIDI files) and excerpts of the
  Debian game soundtracks (``~/.cache/soundalike-bench/gamemusic``);
* **sung** (label "vocals"): the same bed with a sung line mixed on top -- Festival's
  singing mode (Debian ``festival`` with the ``kal`` and ``ked`` diphone voices, two
  American English men, built from recorded human speech), random words on a random
  melody in the key and at the tempo our own estimators read from the bed, phrases with
  rests, as a lead vocal would be;
* **speech** (reported on its own, not fitted: speech over music is not singing): the same
  bed with real recorded human speech on top -- the Asterisk voice prompts (Debian
  ``asterisk-core-sounds-en-wav``, one woman, 8 kHz telephone band), joined with pauses.

Each voice is mixed at a voice-to-music level (RMS of the voice where it sounds against
the bed's RMS) drawn from :data:`LEVELS`, and every clip (negatives too) is scaled to the
same RMS, so loudness says nothing.  Beds are split into development / held-out halves by a
seeded hash of their name *before* anything is fitted (a bed's twins stay in its half; the
speech prompts are split the same way).  Per analyzer, on the development half's sung
clips against their beds, it fits ``sigmoid(slope * evidence + offset)`` for two voice
evidences -- the strongest voice label minus the strongest no-voice label (as shipped
before) and the mean of each side (``models.vocabulary.vocals_evidence``, shipped now) --
and, as a tried alternative, an L2 logistic regression on every label's logit; then scores
each on the held-out half: AUC, accuracy at 0.5, Brier score and expected calibration
error (ECE, 10 bins), the shipped probability by voice level and for real speech, and what
the 8 real excerpts in ``/work/shared/data/music-excerpts`` read (one is a song).  It
prints the ``VOCALS_CALIBRATION`` entry to ship; the shipped row shows what
``models/vocabulary.py`` holds now.

Tools come from Debian packages unpacked without installing (``apt-get download`` +
``dpkg -x`` into ``--debroot``): festival, libestools2.5, festvox-kallpc16k,
festvox-kdlpc16k, festlex-cmu, festlex-poslex, asterisk-core-sounds-en-wav.
Renders and the taggers' predictions are cached under ``--work``.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_attributes as B  # noqa: E402

SR = 16000
CLIP_S = 30.0
BENCH = Path.home() / ".cache" / "soundalike-bench"
SPLIT_SEED = "vocals-split-13"
#: Voice RMS (where it sounds) over the bed's RMS, dB.  Pop mixes put the lead vocal
#: around 0 dB against the band; -6 is a voice buried in the mix.
LEVELS = (-6.0, -3.0, 0.0, 3.0, 6.0)
SINGERS = ("kal_diphone", "ked_diphone")
TARGET_RMS = 0.1
DEB_PACKAGES = ("festival", "libestools2.5", "festvox-kallpc16k", "festvox-kdlpc16k", "festlex-cmu",
                "festlex-poslex", "asterisk-core-sounds-en-wav")
FLATS = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
#: Lyrics: one-syllable words so each sung note carries one word.
WORDS = ("love", "heart", "night", "day", "sun", "rain", "home", "road", "light", "dream", "fire", "sky",
         "blue", "time", "way", "go", "come", "stay", "run", "fall", "hold", "take", "give", "know",
         "feel", "see", "all", "me", "you", "we", "my", "your", "the", "and", "down", "out", "long",
         "gone", "cold", "warm", "sweet", "old", "new", "here", "there", "now", "more", "baby", "oh",
         "yeah", "town", "moon", "star", "tree", "sea", "wind", "song", "sing", "dance", "slow",
         "high", "low", "true", "lost", "find", "mind", "eyes", "hand", "kiss", "tears", "smile",
         "world", "life", "free", "wild", "ride", "side", "door", "floor", "shine", "dark", "gold")


def split_of(name: str) -> str:
    """``"dev"`` or ``"held"`` by a seeded hash of ``name`` (fixed before any fit)."""
    return "dev" if hashlib.sha256(f"{SPLIT_SEED}:{name}".encode()).digest()[0] % 2 == 0 else "held"


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little"))


# --------------------------------------------------------------------------- metrics


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
    if not len(pos) or not len(neg):
        return float("nan")
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


def scores(p: np.ndarray, y: np.ndarray, d: np.ndarray) -> dict:
    return {"n": int(len(y)), "auc": auc(d, y), "acc": float(((p >= 0.5) == (y == 1)).mean()),
            "brier": float(np.mean((p - y) ** 2)), "ece": ece(p, y)}


# --------------------------------------------------------------------------- material


def festival_env(debroot: Path) -> tuple[list[str], dict]:
    fest = debroot / "usr" / "bin" / "festival"
    if not fest.exists():
        sys.exit(f"festival not found under {debroot}: cd {debroot.parent} && apt-get download "
                 + " ".join(DEB_PACKAGES) + f" && for d in *.deb; do dpkg -x $d {debroot}; done")
    lib = debroot / "usr" / "share" / "festival"
    env = dict(os.environ, LD_LIBRARY_PATH=str(debroot / "usr" / "lib" / "x86_64-linux-gnu"))
    return [str(fest), "--libdir", str(lib), "--datadir", str(lib), "-b"], env


def song_xml(*, rng: np.random.Generator, tonic: int, mode: str, bpm: float, seconds: float) -> str:
    """A Festival singing-mode score: phrases of 4-8 words on a stepwise melody in the key
    (male range C3-E4), rests between phrases, about ``seconds`` long at ``bpm``."""
    while bpm > 140:
        bpm /= 2
    while bpm < 60:
        bpm *= 2
    scale = B.MAJOR_SCALE if mode == "major" else B.MINOR_SCALE
    pitches = [m for m in range(48, 65) if (m - tonic) % 12 in scale]   # MIDI C3..E4
    lines, beats, at = [], 0.0, int(rng.integers(len(pitches) // 3, 2 * len(pitches) // 3))
    while beats * 60 / bpm < seconds:
        for _ in range(int(rng.integers(4, 9))):
            at = int(np.clip(at + rng.integers(-2, 3), 0, len(pitches) - 1))
            m = pitches[at]
            dur = float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.0, 1.5, 2.0]))
            word = WORDS[int(rng.integers(len(WORDS)))]
            lines.append(f'<DURATION BEATS="{dur}"><PITCH NOTE="{FLATS[m % 12]}{m // 12 - 1}">'
                         f"{word}</PITCH></DURATION>")
            beats += dur
        rest = float(rng.choice([1.0, 1.5, 2.0, 3.0]))
        lines.append(f'<REST BEATS="{rest}"></REST>')
        beats += rest
    return ('<?xml version="1.0"?>\n<!DOCTYPE SINGING PUBLIC "-//SINGING//DTD SINGING mark up//EN" '
            f'"Singing.v0_1.dtd" []>\n<SINGING BPM="{bpm:.1f}">\n' + "\n".join(lines) + "\n</SINGING>\n")


def sing(*, xml: str, voice: str, out: Path, debroot: Path, tmp: Path) -> None:
    """Render a singing-mode score with a Festival voice to ``out`` (WAV)."""
    cmd, env = festival_env(debroot)
    tmp.mkdir(parents=True, exist_ok=True)
    for f in (debroot / "usr" / "share" / "sgml" / "festival").iterdir():   # the DTD it resolves
        (tmp / f.name).write_bytes(f.read_bytes())
    score = tmp / f"{out.stem}.xml"
    score.write_text(xml)
    scm = tmp / f"{out.stem}.scm"
    scm.write_text(f"(voice_{voice})\n(defvar n 0)\n"
                   f'(define (keep utt) (utt.save.wave utt "{tmp}/{out.stem}-part.wav" \'riff))\n'
                   "(set! tts_hooks (list utt.synth keep))\n"
                   f"(tts_file \"{score}\" 'singing)\n")
    subprocess.run(cmd + [str(scm)], env=dict(env, TMPDIR=str(tmp)), check=True, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (tmp / f"{out.stem}-part.wav").replace(out)


def speech_pool(debroot: Path, half: str) -> list[Path]:
    files = sorted((debroot / "usr/share/asterisk/sounds/en_US_f_Allison").rglob("*.wav"))
    return [f for f in files if split_of("prompt:" + f.name) == half]


def speech_track(*, rng: np.random.Generator, pool: list[Path], seconds: float) -> np.ndarray:
    """Real prompts in a random order with 0.2-0.8 s pauses, ``seconds`` long at :data:`SR`."""
    from soundalike.audio import io

    out, n = [], 0
    while n < seconds * SR:
        y = io.load(pool[int(rng.integers(len(pool)))], sr=SR).y.astype(np.float32)
        gap = np.zeros(int(rng.uniform(0.2, 0.8) * SR), np.float32)
        out += [y, gap]
        n += len(y) + len(gap)
    return np.concatenate(out)[: int(seconds * SR)]


def active_rms(v: np.ndarray) -> float:
    """RMS over the 50-ms frames where the voice sounds (within 30 dB of its loudest)."""
    f = v[: len(v) // 800 * 800].reshape(-1, 800)
    e = np.sqrt((f.astype(np.float64) ** 2).mean(axis=1))
    on = e > e.max() * 10 ** (-30 / 20)
    return float(np.sqrt((e[on] ** 2).mean())) if on.any() else 0.0


def mix(bed: np.ndarray, voice: np.ndarray, *, level_db: float, offset: int) -> np.ndarray:
    v = np.zeros_like(bed)
    v[offset: offset + len(voice)] = voice[: len(bed) - offset]
    gain = float(np.sqrt((bed.astype(np.float64) ** 2).mean())) / max(active_rms(v), 1e-9)
    return (bed + v * np.float32(gain * 10 ** (level_db / 20))).astype(np.float32)


def normalised(y: np.ndarray) -> np.ndarray:
    r = float(np.sqrt((y.astype(np.float64) ** 2).mean()))
    return np.clip(y * np.float32(TARGET_RMS / max(r, 1e-9)), -1, 1).astype(np.float32)


def beds(n: int) -> list[tuple[str, Path, float]]:
    """``(name, path, start_s)``: bench_attributes' renders then game-soundtrack excerpts,
    interleaved by source so any ``n`` mixes them."""
    r45 = sorted(glob.glob(str(B.WORK / "r45" / "*.wav")))
    groups = [[(Path(p).stem, Path(p), 5.0 if "gen-" not in p else 0.0) for p in r45 if Path(p).stem.startswith(k)]
              for k in ("gen-", "music-", "openmsx-")]
    gm = BENCH / "gamemusic" / "gamemusic.csv"
    if gm.exists():
        import csv

        rows = list(csv.DictReader(gm.open()))
        by_game: dict[str, list] = {}
        for r in rows:
            if float(r["duration_s"]) >= CLIP_S + 10:
                by_game.setdefault(r["label"], []).append(r)
        games = []
        for g, rs in sorted(by_game.items()):
            for r in rs[::max(1, len(rs) // 4)][:4]:
                games.append((f"game-{g}-{Path(r['path']).stem}", gm.parent / r["path"],
                              round(float(r["duration_s"]) * 0.3, 1)))
        groups.append(games)
    out, i = [], 0
    while len(out) < n and any(groups):
        g = groups[i % len(groups)]
        if g:
            out.append(g.pop(0))
        i += 1
    return out


def build_clips(*, n_beds: int, work: Path, debroot: Path) -> list[dict]:
    """Write every clip (bed, bed + sung, bed + speech) as 16-kHz WAV; return their rows."""
    import soundfile as sf
    from soundalike.audio import attributes as A
    from soundalike.audio import io

    clips = work / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, path, start in beds(n_beds):
        half, rng = split_of(name), rng_for(name)
        paths = {k: clips / f"{name}--{k}.wav" for k in ("none", "sung", "speech")}
        lv_sung, lv_speech = (float(rng.choice(LEVELS)) for _ in range(2))
        singer = SINGERS[int(rng.integers(len(SINGERS)))]
        if not all(p.exists() for p in paths.values()):
            bed = io.load(path, sr=SR, offset_s=start, duration_s=CLIP_S).y.astype(np.float32)
            if len(bed) < CLIP_S * SR * 0.9:
                continue
            key = A.estimate_key(y=bed, sr=SR)
            tempo = A.estimate_tempo(y=bed, sr=SR)
            tonic, mode = (key.tonic, key.mode) if key else (int(rng.integers(12)), "major")
            song = work / "songs" / f"{name}.wav"
            song.parent.mkdir(exist_ok=True)
            if not song.exists():
                sing(xml=song_xml(rng=rng, tonic=tonic, mode=mode, bpm=tempo.bpm if tempo else 100.0,
                                  seconds=CLIP_S), voice=singer, out=song, debroot=debroot, tmp=work / "fest")
            sung = io.load(song, sr=SR).y.astype(np.float32)
            speech = speech_track(rng=rng, pool=speech_pool(debroot, half), seconds=CLIP_S)
            off = int(rng.uniform(0, 2) * SR)
            sf.write(str(paths["none"]), normalised(bed), SR, subtype="PCM_16")
            sf.write(str(paths["sung"]), normalised(mix(bed, sung, level_db=lv_sung, offset=off)), SR,
                     subtype="PCM_16")
            sf.write(str(paths["speech"]), normalised(mix(bed, speech, level_db=lv_speech, offset=off)),
                     SR, subtype="PCM_16")
        for kind, p in paths.items():
            rows.append({"clip": p.stem, "bed": name, "split": half, "kind": kind, "wav": str(p),
                         "level_db": {"none": None, "sung": lv_sung, "speech": lv_speech}[kind],
                         "singer": singer if kind == "sung" else None,
                         "source": name.split("-")[0]})
    return rows


def predictions(model_name: str, wavs: list[str], cache: Path) -> dict[str, dict]:
    """The analyzer's label probabilities per file (cached by file name)."""
    from soundalike.audio import io
    from soundalike.models.zoo import load_analyzer

    got = json.loads(cache.read_text()) if cache.exists() else {}
    todo = [w for w in wavs if Path(w).name not in got]
    if todo:
        model = load_analyzer(model_name)
        t0 = time.perf_counter()
        for i, w in enumerate(todo):
            y = io.load(w, sr=model.sample_rate).y
            got[Path(w).name] = {k: float(v) for k, v in model.analyze(y, model.sample_rate).predictions.items()}
            if i % 20 == 19:
                cache.write_text(json.dumps(got))
                print(f"  {model_name}: {i + 1}/{len(todo)} clips, {time.perf_counter() - t0:.0f} s", flush=True)
        cache.write_text(json.dumps(got))
    return got


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def evidence_strongest(pr: dict[str, float]) -> float | None:
    """The evidence as shipped before: strongest voice label minus strongest no-voice label."""
    from soundalike.models import vocabulary as V

    pos = [V._logit(p) for k, p in pr.items() if k in V.role_labels("vocals", +1)]
    neg = [V._logit(p) for k, p in pr.items() if k in V.role_labels("vocals", -1)]
    return (max(pos) - (max(neg) if neg else V._logit(0.05))) if pos else None


def logistic_all_labels(X: np.ndarray, y: np.ndarray, *, l2: float = 10.0) -> tuple[np.ndarray, ...]:
    """L2 logistic regression on every label's logit (standardised): ``(mean, sd, w, b)``."""
    mu, sd = X.mean(0), X.std(0) + 1e-6
    Z = np.hstack([(X - mu) / sd, np.ones((len(X), 1))])
    w = np.zeros(Z.shape[1])
    R = np.eye(len(w)) * l2
    R[-1, -1] = 1e-6
    for _ in range(50):
        p = sigmoid(Z @ w)
        w -= np.linalg.solve((Z * (p * (1 - p))[:, None]).T @ Z + R, Z.T @ (p - y) + R @ w)
    return mu, sd, w[:-1], w[-1]


def report(model_name: str, rows: list[dict], preds: dict[str, dict], real: dict[str, dict]) -> dict:
    from soundalike.models import vocabulary as V

    P = [preds[Path(r["wav"]).name] for r in rows]
    kind = np.array([r["kind"] for r in rows])
    dev = np.array([r["split"] == "dev" for r in rows])
    lev = np.array([r["level_db"] if r["level_db"] is not None else np.nan for r in rows], dtype=float)
    task = kind != "speech"
    y = (kind == "sung").astype(float)
    fit = dev & task
    vocab = V.vocals_vocabulary(P[0])
    labels = sorted(P[0])
    X = np.array([[V._logit(p[k]) for k in labels] for p in P])
    mu, sd, w, b = logistic_all_labels(X[fit], y[fit])
    lr = (X - mu) / sd @ w + b
    evidences = {"strongest label of each side (before)": np.array([evidence_strongest(p) for p in P], float),
                 "mean of each side (shipped)": np.array([V.vocals_evidence(p) for p in P], float)}
    out = {"model": model_name, "vocabulary": vocab, "n_dev_fit": int(fit.sum()), "evidences": {}}
    print(f"\n### {model_name} (voice labels of {vocab}): sung vs the same bed without it\n")
    print("Fitted on the development half's sung clips and their beds "
          f"({int(fit.sum())} clips), scored on the held-out half's ({int((~dev & task).sum())}).\n")
    print("| evidence | probability | dev AUC | held-out AUC | held-out acc@0.5 | held-out Brier | held-out ECE |")
    print("|---|---|---|---|---|---|---|")
    held = ~dev & task

    def line(name: str, how: str, e: np.ndarray, p: np.ndarray) -> dict:
        sc = scores(p[held], y[held], e[held])
        sc["dev_auc"] = auc(e[fit], y[fit])
        print(f"| {name} | {how} | {sc['dev_auc']:.3f} | {sc['auc']:.3f} | {sc['acc']:.3f} | {sc['brier']:.3f} | "
              f"{sc['ece']:.3f} |")
        return sc

    for name, e in evidences.items():
        slope, offset = fit_logistic(e[fit], y[fit])
        out["evidences"][name] = {"slope": slope, "offset": offset,
                                  "uncal": line(name, "slope 1, offset 0", e, sigmoid(e)),
                                  "cal": line(name, f"fitted: slope {slope:.3f}, offset {offset:+.3f}", e,
                                              sigmoid(slope * e + offset))}
    shipped = np.array([V.vocals_probability(p) for p in P], float)
    out["shipped"] = line("mean of each side (shipped)", f"shipped {V.VOCALS_CALIBRATION.get(vocab)}",
                          evidences["mean of each side (shipped)"], shipped)
    out["all_labels_lr"] = line("every label, L2 logistic regression (tried)", "fitted", lr, sigmoid(lr))
    top = np.argsort(-np.abs(w))[:8]
    print("\nthe regression's largest weights (per standard deviation of a label's logit): "
          + ", ".join(f"{labels[i]} {w[i]:+.2f}" for i in top))
    e = evidences["mean of each side (shipped)"]
    slope, offset = out["evidences"]["mean of each side (shipped)"]["slope"], \
        out["evidences"]["mean of each side (shipped)"]["offset"]
    print(f"\nto ship: VOCALS_CALIBRATION[{vocab!r}] = ({slope:.3f}, {offset:.3f})")
    print("\nheld out, shipped probability, by what is on top (AUC against the held-out beds):\n")
    print("| clips | n | median evidence | read as vocals (p >= 0.5) | AUC vs beds |")
    print("|---|---|---|---|---|")
    held_neg = ~dev & (kind == "none")
    groups = [("instrumental beds", held_neg)]
    groups += [(f"sung, {lv:+.0f} dB", ~dev & (kind == "sung") & (lev == lv)) for lv in LEVELS]
    groups += [("sung, all levels", ~dev & (kind == "sung"))]
    groups += [(f"real speech, {lv:+.0f} dB", ~dev & (kind == "speech") & (lev == lv)) for lv in LEVELS]
    groups += [("real speech, all levels", ~dev & (kind == "speech"))]
    out["groups"] = {}
    for label, m in groups:
        if not m.any():
            continue
        a = float("nan") if label.startswith("instr") else auc(
            np.concatenate([e[m], e[held_neg]]), np.concatenate([np.ones(m.sum()), np.zeros(held_neg.sum())]))
        g = {"n": int(m.sum()), "median_evidence": float(np.median(e[m])),
             "yes": float((shipped[m] >= 0.5).mean()), "auc": a}
        out["groups"][label] = g
        print(f"| {label} | {g['n']} | {g['median_evidence']:+.2f} | {g['yes']:.2f} | "
              + ("-" if math.isnan(a) else f"{a:.3f}") + " |")
    inst = dev & (kind == "none")
    print(f"\n(development half, for comparison: instrumental beds read as vocals "
          f"{(shipped[inst] >= 0.5).mean():.2f}, sung {(shipped[dev & (kind == 'sung')] >= 0.5).mean():.2f})")
    print("\nreal excerpts (/work/shared/data/music-excerpts, whole files; only the Karissa Hobbs song "
          "has singing):\n")
    print("| excerpt | before (strongest, slope 1) | shipped | every-label regression |")
    print("|---|---|---|---|")
    out["real"] = {}
    for name, pr in real.items():
        before = float(sigmoid(np.array(evidence_strongest(pr))))
        now = V.vocals_probability(pr)
        reg = float(sigmoid((np.array([V._logit(pr[k]) for k in labels]) - mu) / sd @ w + b))
        out["real"][name] = {"before": before, "shipped": now, "regression": reg}
        print(f"| {name[:48]} | {before:.2f} | {now:.2f} | {reg:.2f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=BENCH / "vox")
    ap.add_argument("--debroot", type=Path, default=BENCH / "debroot")
    ap.add_argument("--beds", type=int, default=64)
    ap.add_argument("--models", default="MTT_musicnn,MSD_musicnn,musicnn-fusion")
    ap.add_argument("--excerpts", type=Path, default=Path("/work/shared/data/music-excerpts"))
    ap.add_argument("--build-only", action="store_true", help="render the clips, analyse nothing")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
    t0 = time.perf_counter()
    rows = build_clips(n_beds=args.beds, work=args.work, debroot=args.debroot)
    beds_n = len({r["bed"] for r in rows})
    dev_n = len({r["bed"] for r in rows if r["split"] == "dev"})
    srcs = sorted({r["source"] for r in rows})
    per_source = ", ".join(f"{s} {sum(1 for r in rows if r['source'] == s) // 3}" for s in srcs)
    print(f"{len(rows)} clips from {beds_n} beds ({dev_n} development, {beds_n - dev_n} held out; "
          f"sources {per_source}) "
          f"in {time.perf_counter() - t0:.0f} s")
    if args.build_only:
        return
    excerpts = sorted(str(p) for p in args.excerpts.glob("*.ogg")) if args.excerpts.exists() else []
    summary = {"rows": rows, "models": {}}
    for model_name in args.models.split(","):
        t1 = time.perf_counter()
        preds = predictions(model_name, [r["wav"] for r in rows], args.work / f"preds-{model_name}.json")
        real = predictions(model_name, excerpts, args.work / f"real-{model_name}.json")
        print(f"{model_name}: predictions in {time.perf_counter() - t1:.0f} s")
        summary["models"][model_name] = report(model_name, rows, preds, real)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=float))
    print(f"\nload average at the end: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
