"""Train every model family on a real dataset and print a table next to the targets.

Default: ../shared/data/philharmonia (16 instrument classes, 2,328 notes), a
file-level split (20 % test; validation for early stopping is taken from the other
80 %).  Reports training time, windows per second, test accuracy and macro-F1.

Targets (issue 4): the best family reaches >= 97 % test accuracy; the probe trains in
under 1 minute once its backbone embeddings are cached (second probe run).

    .venv/bin/python benchmarks/bench_train.py [--families mel-cnn,probe] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "philharmonia"
EPOCHS = {"mfcc-mlp": 40, "waveform-cnn": 20, "mel-cnn": 40, "probe": 60}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--families", default="probe,mfcc-mlp,mel-cnn,waveform-cnn")
    ap.add_argument("--epochs", type=int, default=None, help="override every family's epochs")
    ap.add_argument("--backbone", default="MTT_musicnn")
    ap.add_argument("--runs", type=Path, default=Path("/tmp/soundalike-bench-runs"))
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from soundalike.data.datasets import read_dataset
    from soundalike.train.fit import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        print(f"no dataset at {args.data}", file=sys.stderr)
        return 2
    manifest = read_dataset(args.data, category="instrument")
    print(f"{args.data}: {len(manifest)} tracks, {len(manifest.labels)} classes; "
          f"torch threads {torch.get_num_threads()}", flush=True)
    rows = []
    for family in [f.strip() for f in args.families.split(",") if f.strip()]:
        epochs = args.epochs or EPOCHS[family]
        cfg = TrainConfig(family=family, epochs=epochs, seed=0, backbone=args.backbone,
                          cache_dir=str(args.cache_dir) if args.cache_dir else None)
        passes = 2 if family == "probe" else 1  # the second probe pass reads cached embeddings
        for p in range(passes):
            t0 = time.perf_counter()
            rep = train(manifest, config=cfg, out=args.runs / f"{family}{'-cached' if p else ''}",
                        on_epoch=lambda r: print(f"  {family} epoch {r['epoch']}: val {r['val_score']:.3f} "
                                                 f"({r['time_s']:.0f} s)", flush=True))
            wall = time.perf_counter() - t0
            tr, te = rep["training"], rep["test"]
            row = {"family": family + (" (cached)" if p else ""), "epochs": tr["epochs_run"],
                   "best_epoch": tr["best_epoch"], "feature_s": tr["feature_time_s"],
                   "train_s": tr["train_time_s"], "wall_s": wall, "windows_per_s": tr["samples_per_s"],
                   "accuracy": te["accuracy"], "balanced_accuracy": te["balanced_accuracy"],
                   "macro_f1": te["macro_f1"], "test_tracks": te["n_tracks"],
                   "window_s": rep["config"]["family"]["window_s"],
                   "val_best": tr["history"][tr["best_epoch"] - 1]["val_score"],
                   "skipped": rep["dataset"]["n_errors"], "run": rep["run_dir"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("| family | window s | epochs (best) | features s | train s | windows/s | val acc | test acc "
          "| bal. acc | macro-F1 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        window = f"{r['window_s']:g}" if not r["family"].startswith("probe") else "(3, backbone)"
        print(f"| {r['family']} | {window} | {r['epochs']} ({r['best_epoch']}) | {r['feature_s']:.1f} | "
              f"{r['train_s']:.1f} | {r['windows_per_s']:.0f} | {r['val_best']:.4f} | {r['accuracy']:.4f} | "
              f"{r['balanced_accuracy']:.4f} | {r['macro_f1']:.4f} |")
    best = max(rows, key=lambda r: r["accuracy"])
    probe = [r for r in rows if r["family"] == "probe (cached)"]
    print(f"\nbest family: {best['family']} {best['accuracy']:.4f}  (target >= 0.97: "
          f"{'met' if best['accuracy'] >= 0.97 else 'NOT met'})")
    if probe:
        print(f"probe with cached embeddings: {probe[0]['wall_s']:.1f} s wall  (target < 60 s: "
              f"{'met' if probe[0]['wall_s'] < 60 else 'NOT met'})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
