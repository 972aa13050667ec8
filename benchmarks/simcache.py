"""Per-file cache of per-patch features for the similarity benchmark.

For every audio file under a labelled folder it stores, once, the per-patch (3-s,
non-overlapping) outputs of the pretrained musicnn models that the variants in
``bench_similarity.py`` are built from:

- ``<model>/penultimate`` ``(n_patches, 200)``, ``<model>/max_pool`` and
  ``<model>/mean_pool`` ``(n_patches, 753)``, ``<model>/probs`` ``(n_patches, 50)``
  for ``MTT_musicnn`` and ``MSD_musicnn``;
- ``mel/mean`` and ``mel/std`` ``(n_patches, 96)``: each patch's log-mel band means and
  standard deviations (the front end both models share), a production/spectral-balance
  summary that costs nothing extra;
- with ``--extra``, the same for ``MTT_vgg`` and ``MSD_vgg`` (``penultimate`` 256-d and
  the block summaries named in :data:`EXTRA_MODELS`' comment).

Files live under ``~/.cache/soundalike-bench/emb/<dataset>/<relative path>.npz``; a file
whose size changed is recomputed (the read-only shared sets' mtimes move when they are remounted).  Heavy: run it under ``flock /tmp/heavy.lock``.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/simcache.py DIR [DIR ...]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

CACHE_ROOT = Path(os.environ.get("SOUNDALIKE_BENCH_CACHE", Path.home() / ".cache" / "soundalike-bench")) / "emb"
MODELS = ("MTT_musicnn", "MSD_musicnn")
#: Also cached when asked for (``--extra``): the vgg models' penultimate layer (256-d: the
#: last pool's two time steps x 128 channels) and their blocks 3-5 summarised per patch
#: (``block{3,4,5}_{mean,max}``, 128-d; ``block4_time_mean``, 6 bands x 128).
EXTRA_MODELS = ("MTT_vgg", "MSD_vgg")
LAYERS = ("penultimate", "max_pool", "mean_pool")
#: Bumped when what is stored changes.
CACHE_VERSION = "1"


def dataset_key(root: Path) -> str:
    root = Path(root).resolve()
    return f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"


def cache_path(root: Path, path: Path) -> Path:
    rel = Path(path).resolve().relative_to(Path(root).resolve())
    return CACHE_ROOT / dataset_key(root) / (str(rel) + ".npz")


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{CACHE_VERSION}:{st.st_size}:{st.st_mtime_ns}"


def load_cached(root: Path, path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays of ``path`` (None: not cached, or stale)."""
    c = cache_path(root, path)
    if not c.exists():
        return None
    with np.load(c, allow_pickle=False) as z:
        # version and size decide; the modification time is not compared, because the shared
        # data sets are read-only copies whose mount (and so every mtime) is remade at times
        if str(z["stamp"]).split(":")[:2] != _stamp(Path(path)).split(":")[:2]:
            return None
        return {k: z[k] for k in z.files if k != "stamp"}


def _has_models(arrays: dict[str, np.ndarray] | None, models: Iterable[str]) -> bool:
    return arrays is not None and all(f"{m}/probs" in arrays for m in models)


def _net_outputs(model, patches: np.ndarray) -> dict[str, np.ndarray]:
    """Every layer for patches ``(N, 96, 187)``, micro-batches of 2 on the model's threads."""
    import torch

    from soundalike.models.pretrained import MICRO_BATCH, _single_threaded

    # the vgg port's further summaries (block means / maxima, musicnn.py VGG.extra_dims) too
    layers = [k for k in LAYERS if k in model.net.embedding_dims] + list(getattr(model.net, "extra_dims", {}))
    if hasattr(model.net, "with_extras"):
        model.net.with_extras = True
    chunks = [patches[s : s + MICRO_BATCH] for s in range(0, len(patches), MICRO_BATCH)]

    def run(chunk: np.ndarray) -> dict[str, np.ndarray]:
        _single_threaded()
        with torch.inference_mode():
            r = model.net(torch.from_numpy(np.ascontiguousarray(chunk)))
            out = {k: r[k].numpy().astype(np.float32) for k in layers}
            out["probs"] = torch.sigmoid(r["logits"]).numpy().astype(np.float32)
            return out

    results = list(model._executor().map(run, chunks))
    return {k: np.concatenate([r[k] for r in results]) for k in results[0]}


def compute(path: Path, models: Iterable[str] = MODELS, have: dict[str, np.ndarray] | None = None
            ) -> dict[str, np.ndarray]:
    """All per-patch features of one file (see the module docstring); ``have``: kept as is."""
    from soundalike.audio.io import load
    from soundalike.models.pretrained import load as load_model

    have = dict(have or {})
    models = [load_model(m) for m in models if f"{m}/probs" not in have]
    wav = load(path, sr=models[0].sample_rate)
    patches = models[0].patches(wav.y, wav.sr)  # (N, 96, 187), identical front end for both
    out: dict[str, np.ndarray] = {
        "mel/mean": patches.mean(axis=2).astype(np.float32),
        "mel/std": patches.std(axis=2).astype(np.float32),
        "duration_s": np.float64(wav.duration_s),
        **have,
    }
    for m in models:
        for k, v in _net_outputs(m, patches).items():
            out[f"{m.name}/{k}"] = v
    return out


def ensure(root: Path, files: Iterable[Path], *, models: Iterable[str] = MODELS, quiet: bool = False) -> int:
    """Compute and store what is missing; returns how many files were computed."""
    files = list(files)
    models = tuple(models)
    todo = [f for f in files if not _has_models(load_cached(root, f), models)]
    t0 = time.perf_counter()
    for i, f in enumerate(todo, 1):
        try:
            arrs = compute(f, models, load_cached(root, f))
        except Exception as exc:  # noqa: BLE001 - a bad file is reported, the rest go on
            print(f"  skip {f}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        c = cache_path(root, f)
        c.parent.mkdir(parents=True, exist_ok=True)
        tmp = c.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, stamp=np.asarray(_stamp(f)), **arrs)
        os.replace(tmp, c)
        if not quiet and (i % 20 == 0 or i == len(todo)):
            el = time.perf_counter() - t0
            print(f"  {i}/{len(todo)} files, {el:.0f} s, load {open('/proc/loadavg').read().split()[0]}",
                  file=sys.stderr, flush=True)
    return len(todo)


def audio_files(root: Path) -> list[Path]:
    from soundalike.audio.io import is_audio_path

    return sorted(p for p in Path(root).rglob("*") if p.is_file() and is_audio_path(p.name))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--extra", action="store_true", help=f"also {', '.join(EXTRA_MODELS)}")
    args = ap.parse_args(argv)
    models = MODELS + (EXTRA_MODELS if args.extra else ())
    for d in args.dirs:
        files = audio_files(d)
        print(f"{d}: {len(files)} files", file=sys.stderr)
        n = ensure(d, files, models=models)
        print(f"{d}: computed {n}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
