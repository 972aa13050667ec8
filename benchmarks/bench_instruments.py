"""Instrument recognition that holds up on other recordings: probes on frozen pretrained
layers, trained on Philharmonia, tested on Philharmonia's held-out notes *and* on the same
instruments from another recording (the General-MIDI soundfont, ``render_gm_instruments.py``).

Per-patch features come from ``simcache.py`` (run it on both folders first, under
``flock /tmp/heavy.lock``); each note's vector is its patches' mean.  A probe is a
logistic regression on L2-normalised vectors (one per feature set), trained on a
stratified 80 % of Philharmonia (16 classes, seed 0); the ensemble averages the
probes' probabilities.  Cross-domain accuracy counts the 12 classes General MIDI has.
A trained run (``soundalike train``) is scored with ``soundalike evaluate RUN GM_DIR``.

    .venv/bin/python benchmarks/bench_instruments.py [--gm ~/.cache/soundalike-bench/gm-instruments]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_similarity as B  # noqa: E402

GM = Path.home() / ".cache" / "soundalike-bench" / "gm-instruments"
FEATURES = ("MTT.pen", "MSD.pen", "MTT.avg", "MSD.avg", "MTT.max", "MSD.max", "fusion", "MTT.max+MSD.max")


def vectors(tracks, spec: str) -> np.ndarray:
    return B.l2n(B.variant_vectors(spec if ":" in spec or spec == "fusion" else f"{spec}:mean",
                                   [t.arrays for t in tracks]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--philharmonia", type=Path, default=B.PHILHARMONIA)
    ap.add_argument("--gm", type=Path, default=GM)
    ap.add_argument("--features", default=",".join(FEATURES))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    phil = B.load_tracks(args.philharmonia, compute=False)
    gm = B.load_tracks(args.gm, compute=False)
    classes = sorted({t.label for t in phil})
    y = np.asarray([classes.index(t.label) for t in phil])
    gy = np.asarray([classes.index(t.label) for t in gm])
    tr, te = train_test_split(np.arange(len(phil)), test_size=0.2, stratify=y, random_state=0)
    gm_classes = sorted({t.label for t in gm})
    print(f"Philharmonia {len(phil)} notes ({len(classes)} classes; test {len(te)}), "
          f"GM cross-domain {len(gm)} notes ({len(gm_classes)} classes)")
    rows, probs_te, probs_gm = [], {}, {}
    print(f"{'probe on':24} {'phil test':>9} {'GM':>6}")
    for spec in [s.strip() for s in args.features.split(",") if s.strip()]:
        X, G = vectors(phil, spec), vectors(gm, spec)
        clf = LogisticRegression(max_iter=4000, C=10.0, class_weight="balanced").fit(X[tr], y[tr])
        probs_te[spec], probs_gm[spec] = clf.predict_proba(X[te]), clf.predict_proba(G)
        r = {"features": spec, "phil_test": float((probs_te[spec].argmax(1) == y[te]).mean()),
             "gm": float((probs_gm[spec].argmax(1) == gy).mean())}
        rows.append(r)
        print(f"{spec:24} {r['phil_test']:9.3f} {r['gm']:6.3f}", flush=True)
    ens = list(probs_te)
    pe = np.mean([probs_te[s] for s in ens], 0)
    pg = np.mean([probs_gm[s] for s in ens], 0)
    r = {"features": "ensemble of all", "phil_test": float((pe.argmax(1) == y[te]).mean()),
         "gm": float((pg.argmax(1) == gy).mean())}
    rows.append(r)
    print(f"{'ensemble of all':24} {r['phil_test']:9.3f} {r['gm']:6.3f}")
    best = max(rows, key=lambda r: r["gm"])
    gm_pred = (pg if best["features"] == "ensemble of all" else probs_gm[best["features"]]).argmax(1)
    print(f"per class on GM ({best['features']}): " + ", ".join(
        f"{c} {np.mean(gm_pred[gy == classes.index(c)] == classes.index(c)):.2f}" for c in gm_classes))
    print("targets: default instrument run >= 0.97 on Philharmonia and >= 0.60 cross-domain; "
          f"load {open('/proc/loadavg').read().split()[0]}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
