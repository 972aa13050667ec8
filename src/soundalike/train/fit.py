"""Training: manifest -> track features (cached) -> track-level split -> fit -> run folder.

:func:`train` is the whole pipeline behind ``soundalike train``.  Tracks are decoded
once (or their frozen backbone embeddings computed once, for the probe) and cached on
disk by content hash + feature config.  Each epoch draws random fixed-length crops
per track, augments them reproducibly (per-item random state, see
:mod:`soundalike.audio.augment`), and trains with AdamW and class weighting.  After
each epoch the model is scored on the validation tracks (track-level: the mean of
window predictions); the best epoch's weights are kept, training stops early when
validation stops improving, and the best model is evaluated on the held-out test
tracks and written up (``report.json``, ``report.md``, PNGs).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soundalike.data.datasets import Manifest
from soundalike.errors import ConfigError, DatasetError, SoundalikeError
from soundalike.models.families import FAMILIES, FamilyConfig, make_config

#: Bump when the decoded-audio cache layout changes.
_WAVE_CACHE_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (saved in ``run.json``).

    Attributes
    ----------
    family : model family (:data:`~soundalike.models.families.FAMILIES`)
    epochs : maximum epochs
    batch_size : windows per step
    lr, weight_decay : AdamW
    patience : epochs without validation improvement before stopping (0: never stop early)
    seed : seeds the split, crops, augmentation and weight initialisation
    val_fraction, test_fraction : track shares of the validation and test splits
    use_groups : keep a group's tracks in one split
    augment : waveform augmentations (:data:`soundalike.audio.augment.AUGMENTS`); the
        waveform families augment each training window; the probe augments only with
        ``augment_copies`` (its inputs are frozen embeddings, computed before training)
    noise_dir : folder of noise recordings for the ``noise`` augmentation
    augment_p : probability of each augmentation per window
    class_weighting : weight the loss by inverse class frequency (``pos_weight`` for multi-label)
    label_smoothing : cross-entropy label smoothing (single-label); ``None``: 0.1 for the
        waveform families, 0 for the probe (what won on Philharmonia's validation split,
        see docs/recipes.md)
    mixup : mixup's Beta(a, a) parameter ``a`` (0: off): each batch is blended with a
        shuffled copy of itself (audio summed, targets blended)
    freq_mixstyle : Freq-MixStyle's probability per batch (mel-cnn; 0: off; other families
        ignore it): each batch's log-mel windows take a Beta(``freq_mixstyle_alpha``)-mixed
        share of another window's per-band statistics (see
        :func:`soundalike.models.families.freq_mixstyle`), drawn per (seed, epoch, batch)
    freq_mixstyle_alpha : its Beta(a, a) parameter
    freq_mixstyle_own : the least share of a window's own band statistics in the mix (0: the
        published method)
    crops_per_track : most random windows drawn per track per epoch (short tracks give one)
    max_duration_s : seconds of each file decoded for training (from the start)
    backbone : pretrained analyzer the probe sits on
    window_s : window length in seconds; ``None`` picks it from the data (see
        :func:`auto_window_s`: 3 s for songs, shorter for sets of short sounds)
    sample_rate : override the family's input rate
    model : further family hyper-parameters (``channels``, ``hidden``, ``n_mels`` ...)
    augment_copies : probe only: embed this many augmented copies of every training track
        with the frozen backbone (cached like the clean embeddings) and train on the clean
        and augmented patches together (0: clean embeddings only)
    cache_dir : feature cache root (default: the user cache); ``use_cache=False`` disables it
    """

    family: str = "mel-cnn"
    epochs: int = 40
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-2
    patience: int = 10
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    use_groups: bool = True
    #: the ``domain`` preset (:data:`soundalike.audio.augment.PRESETS`): measured the most robust
    #: on other recordings (README, "Instruments on other recordings" and "Longer runs, chosen on
    #: another soundfont": the small-speaker band-pass joined it on the selection soundfont)
    augment: tuple[str, ...] = ("gain", "noise", "speaker", "eq", "reverb", "pitch", "codec")
    noise_dir: str | None = None
    augment_p: float = 0.5
    class_weighting: bool = True
    label_smoothing: float | None = None
    mixup: float = 0.0
    freq_mixstyle: float = 0.0
    freq_mixstyle_alpha: float = 0.3
    freq_mixstyle_own: float = 0.0
    crops_per_track: int = 4
    max_duration_s: float = 120.0
    backbone: str = "MTT_musicnn"
    window_s: float | None = None
    sample_rate: int | None = None
    model: dict[str, Any] = field(default_factory=dict)
    augment_copies: int = 0
    cache_dir: str | None = None
    use_cache: bool = True

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"unknown model family {self.family!r}: choose one of {', '.join(FAMILIES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be at least 1")
        bad_smoothing = self.label_smoothing is not None and not 0.0 <= self.label_smoothing < 1.0
        if bad_smoothing or self.mixup < 0.0:
            raise ConfigError("label_smoothing must be in [0, 1) and mixup at least 0")
        if (not 0.0 <= self.freq_mixstyle <= 1.0 or self.freq_mixstyle_alpha <= 0.0
                or not 0.0 <= self.freq_mixstyle_own < 1.0):
            raise ConfigError(f"freq_mixstyle must be a probability in [0, 1], its alpha above 0 and its "
                              f"own share in [0, 1), got {self.freq_mixstyle}, {self.freq_mixstyle_alpha}, "
                              f"{self.freq_mixstyle_own}")
        if self.augment_copies < 0:
            raise ConfigError(f"augment_copies must be at least 0, got {self.augment_copies}")
        object.__setattr__(self, "augment", tuple(self.augment))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = list(self.augment)
        return d


@dataclass
class TrackSet:
    """Per-track model material: audio ``(n,)`` float16 or patch embeddings ``(P, d)`` float32."""

    data: list[np.ndarray]
    manifest: Manifest
    errors: list[tuple[str, str]]


Progress = Callable[[str, int, int], None]


def _noop(desc: str, done: int, total: int) -> None:
    pass


# --------------------------------------------------------------------------- features


def wave_cache_key(sample_rate: int, max_duration_s: float) -> str:
    return f"wave-v{_WAVE_CACHE_VERSION}-sr{sample_rate}-max{max_duration_s:g}"


def load_track_audio(path: Path, *, sr: int, max_duration_s: float) -> np.ndarray:
    """Decode the first ``max_duration_s`` seconds of a file as mono float16 at ``sr``."""
    from soundalike.audio.io import load

    # duration_s bounds memory for long files; float16 halves the cache and RAM.
    y = load(path, sr=sr, duration_s=max_duration_s).y
    return np.clip(y, -65000, 65000).astype(np.float16)


def prepare_tracks(manifest: Manifest, *, config: FamilyConfig | None, backbone=None,
                   max_duration_s: float, cache, progress: Progress = _noop) -> TrackSet:
    """Decode (or embed with the backbone) every track, through the cache.

    Undecodable files are recorded in ``errors`` and left out of the returned manifest.
    """
    from soundalike.data.cache import content_hash  # noqa: F401  (fail early if unavailable)
    from soundalike.models.checkpoint import backbone_patches

    if backbone is not None:
        key = f"emb-{backbone.model_id}-max{max_duration_s:g}"
        sr = int(backbone.sample_rate)

        def compute(p: Path) -> np.ndarray:
            y = load_track_audio(p, sr=sr, max_duration_s=max_duration_s).astype(np.float32)
            return backbone_patches(backbone, y, sr)
    else:
        assert config is not None
        key = wave_cache_key(config.sample_rate, max_duration_s)

        def compute(p: Path) -> np.ndarray:
            return load_track_audio(p, sr=config.sample_rate, max_duration_s=max_duration_s)

    data: list[np.ndarray] = []
    keep: list[int] = []
    errors: list[tuple[str, str]] = []
    total = len(manifest.items)
    for i, it in enumerate(manifest.items):
        try:
            arr = cache.get_or_compute(it.path, key, compute)
            if arr.size == 0 or not np.isfinite(arr).all():
                raise DatasetError(f"{it.path}: empty or non-finite features")
            data.append(arr)
            keep.append(i)
        except SoundalikeError as exc:
            errors.append((it.path, getattr(exc, "reason", str(exc))))
        except OSError as exc:
            errors.append((it.path, f"cannot read file: {exc.strerror or exc}"))
        progress("features", i + 1, total)
    sub = manifest.subset(keep)
    sub.errors = list(manifest.errors) + errors
    if not keep:
        raise DatasetError(f"{manifest.source}: none of the {total} files could be decoded")
    return TrackSet(data, sub, errors)


def augmented_embeddings(tracks: TrackSet, indices: list[int], *, backbone, augment: tuple[str, ...],
                         copies: int, seed: int, p: float, max_duration_s: float, cache,
                         noise_dir: str | None = None, progress: Progress = _noop) -> None:
    """Add ``copies`` augmented views to the probe's training tracks, in place.

    Each track in ``indices`` is decoded again, augmented ``copies`` times (the whole
    track, per-copy random state from ``(seed, copy, file)``: reproducible whatever the
    order) and embedded with the frozen ``backbone``; its rows become the clean patches
    followed by every copy's, so a random training patch is a clean or an augmented view
    with equal odds per row.  The embeddings go through ``cache`` under a key naming the
    backbone, the augmentations, ``p``, ``seed`` and the copy.
    """
    import zlib

    from soundalike.audio.augment import Augmenter, load_noise_dir
    from soundalike.models.checkpoint import backbone_patches

    sr = int(backbone.sample_rate)
    noises = load_noise_dir(noise_dir, sr=sr) if noise_dir and "noise" in augment else []
    aug = Augmenter(tuple(augment), sr=sr, seed=seed, p=p, noises=noises)
    names = ",".join(augment)
    total = len(indices) * copies
    done = 0
    for t in indices:
        path = tracks.manifest.items[t].path
        views = [tracks.data[t]]
        for c in range(copies):
            key = f"emb-{backbone.model_id}-max{max_duration_s:g}-aug-{names}-p{p:g}-s{seed}-c{c}"

            def compute(pth: Path, c: int = c) -> np.ndarray:
                y = load_track_audio(pth, sr=sr, max_duration_s=max_duration_s).astype(np.float32)
                ya = aug(y, epoch=1_000_000 + c, index=zlib.crc32(pth.name.encode()))
                return backbone_patches(backbone, ya, sr)

            try:
                views.append(cache.get_or_compute(path, key, compute))
            except (SoundalikeError, OSError):
                pass  # the clean view stays; the file decoded once already
            done += 1
            progress("augmented features", done, total)
        tracks.data[t] = np.concatenate(views).astype(np.float32)


def auto_window_s(lengths: list[int] | np.ndarray, *, sr: int, longest_s: float = 3.0,
                  shortest_s: float = 1.0) -> float:
    """A window length for a dataset: its median track duration rounded up to 0.5 s, within limits.

    Songs (median well over 3 s) get ``longest_s``; a set of short sounds (single notes,
    samples) gets a window about as long as a typical sound, so most of each window is
    sound rather than zero padding.

    Parameters
    ----------
    lengths : track lengths in samples
    sr : sample rate of ``lengths`` in Hz
    """
    if len(lengths) == 0:
        return longest_s
    median_s = float(np.median(np.asarray(lengths, np.float64))) / sr
    return float(min(longest_s, max(shortest_s, math.ceil(median_s * 2.0) / 2.0)))


# --------------------------------------------------------------------------- batches


def _n_crops(n: int, window: int, most: int) -> int:
    return int(min(most, max(1, round(n / window))))


def epoch_samples(track_data: list[np.ndarray], train_idx: list[int], *, config: FamilyConfig,
                  crops_per_track: int, seed: int, epoch: int) -> list[tuple[int, int]]:
    """Shuffled ``(track index, serial)`` pairs for one epoch; ``serial`` seeds the item's crop."""
    pairs: list[int] = []
    for t in train_idx:
        n = len(track_data[t])
        k = _n_crops(n, config.window_samples, crops_per_track) if config.input_kind == "waveform" \
            else min(crops_per_track, n)
        pairs.extend([t] * k)
    order = np.random.default_rng([seed, epoch, 0x5E]).permutation(len(pairs))
    return [(pairs[j], int(j)) for j in order]


def crop(data: np.ndarray, rng: np.random.Generator, *, config: FamilyConfig) -> np.ndarray:
    """One random model input from a track: a window of samples (zero-padded) or one patch."""
    if config.input_kind == "embedding":
        return np.asarray(data[int(rng.integers(0, len(data)))], np.float32)
    size = config.window_samples
    n = len(data)
    out = np.zeros(size, np.float32)
    start = int(rng.integers(0, n - size + 1)) if n > size else 0
    seg = data[start : start + size]
    out[: len(seg)] = seg
    return out


# --------------------------------------------------------------------------- evaluation


def predict_tracks(model, track_data: list[np.ndarray], indices: list[int], *, config: FamilyConfig,
                   multi_label: bool, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Track-level probabilities and embeddings: means over each track's windows.

    Returns
    -------
    probs : float32 ``(len(indices), n_labels)``
    emb : float32 ``(len(indices), embedding_dim)``
    """
    from soundalike.models.checkpoint import infer_windows, track_inputs

    if not indices:
        return (np.zeros((0, config.n_labels), np.float32), np.zeros((0, config.embedding_dim), np.float32))
    inputs = [track_inputs(track_data[t], config) for t in indices]
    counts = [len(x) for x in inputs]
    was = model.training
    model.eval()
    try:
        P, E = infer_windows(model, np.concatenate(inputs), multi_label=multi_label, batch_size=batch_size)
    finally:
        model.train(was)
    bounds = np.cumsum([0, *counts])
    probs = np.stack([P[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])
    emb = np.stack([E[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])
    return probs.astype(np.float32), emb.astype(np.float32)


def _loss_fn(task: str, targets: np.ndarray, train_idx: list[int], n_labels: int, weighting: bool,
             label_smoothing: float = 0.0):
    import torch

    if task == "single":
        weight = None
        if weighting:
            counts = np.bincount(targets[train_idx], minlength=n_labels).astype(np.float64)
            w = np.where(counts > 0, len(train_idx) / (n_labels * np.maximum(counts, 1)), 0.0)
            weight = torch.tensor(w, dtype=torch.float32)
        return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    pos_weight = None
    if weighting:
        pos = targets[train_idx].sum(axis=0).astype(np.float64)
        neg = len(train_idx) - pos
        pos_weight = torch.tensor(np.clip(neg / np.maximum(pos, 1), 1.0, 30.0), dtype=torch.float32)
    return torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)


def _val_score(task: str, metrics: dict) -> float:
    v = metrics["accuracy"] if task == "single" else metrics["macro_roc_auc"]
    return -math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _val_loss(task: str, probs: np.ndarray, targets: np.ndarray) -> float:
    eps = 1e-7
    if task == "single":
        return float(-np.log(np.clip(probs[np.arange(len(targets)), targets], eps, 1.0)).mean())
    P = np.clip(probs, eps, 1 - eps)
    return float(-(targets * np.log(P) + (1 - targets) * np.log(1 - P)).mean())


# --------------------------------------------------------------------------- the loop


def _train_forward(model, x, train: TrainConfig, *, epoch: int, batch: int):
    """Training logits: the model, with Freq-MixStyle between its log-mel and its network when
    ``train`` asks for it (families without a spectrogram ignore it); drawn per (seed, epoch,
    batch), so a run is reproducible whatever else draws random numbers."""
    if train.freq_mixstyle <= 0 or not hasattr(model, "from_spectrogram"):
        return model(x)
    from soundalike.models.families import freq_mixstyle

    rng = np.random.default_rng([train.seed, epoch, batch, 0xF5])
    S = freq_mixstyle(model.spectrogram(x), p=train.freq_mixstyle, alpha=train.freq_mixstyle_alpha,
                      own=train.freq_mixstyle_own, rng=rng)
    return model.head(model.from_spectrogram(S))


@dataclass
class FitResult:
    """What :func:`fit_model` returns: the best model and the per-epoch history."""

    model: Any
    history: list[dict[str, float]]
    best_epoch: int
    train_time_s: float
    samples_seen: int


def fit_model(model, tracks: TrackSet, split, *, config: FamilyConfig, train: TrainConfig,
              on_epoch: Callable[[dict], None] | None = None, progress: Progress = _noop,
              on_epoch_model: Callable[[int, Any], None] | None = None) -> FitResult:
    """Train ``model`` on the split's train tracks, early-stopping on its val tracks.

    ``on_epoch_model(epoch, model)`` is called after each epoch's validation with the model
    as it is then (not the best so far): what a benchmark needs to score a run at several
    epoch counts without training it again.

    Returns the model holding the best validation epoch's weights.
    """
    import torch

    from soundalike.audio.augment import Augmenter, load_noise_dir
    from soundalike.train.evaluate import metrics_for

    manifest = tracks.manifest
    task = manifest.task
    targets = manifest.targets()
    torch.manual_seed(train.seed)
    noises = (load_noise_dir(train.noise_dir, sr=config.sample_rate)
              if train.noise_dir and "noise" in train.augment else [])
    augment = None
    if train.augment and config.input_kind == "waveform":
        augment = Augmenter(tuple(train.augment), sr=config.sample_rate, seed=train.seed,
                            p=train.augment_p, noises=noises)
    smoothing = train.label_smoothing
    if smoothing is None:
        smoothing = 0.0 if config.input_kind == "embedding" else 0.1
    loss_fn = _loss_fn(task, targets, split.train, config.n_labels, train.class_weighting, smoothing)
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=train.epochs, eta_min=train.lr * 0.02)
    val_idx = split.val or split.train  # tiny sets: fall back to train for model selection
    scored_on = "val" if split.val else "train"  # said in every history row: never a silent 1.0
    history: list[dict[str, float]] = []
    best = (-math.inf, math.inf)
    best_state = copy.deepcopy(model.state_dict())
    best_epoch = 0
    stale = 0
    seen = 0
    t0 = time.perf_counter()
    for epoch in range(1, train.epochs + 1):
        model.train()
        samples = epoch_samples(tracks.data, split.train, config=config,
                                crops_per_track=train.crops_per_track, seed=train.seed, epoch=epoch)
        total_loss, n_batches = 0.0, 0
        n_steps = max(1, math.ceil(len(samples) / train.batch_size))
        for b in range(0, len(samples), train.batch_size):
            chunk = samples[b : b + train.batch_size]
            if len(chunk) < 2 and len(samples) > 1:
                continue  # batch-norm needs two items
            xs = []
            for t, serial in chunk:
                rng = np.random.default_rng([train.seed, epoch, serial, 0xC0])
                x = crop(tracks.data[t], rng, config=config)
                if augment is not None:
                    x = augment(x, epoch=epoch, index=serial)
                xs.append(x)
            xb = torch.from_numpy(np.stack(xs))
            idx = [t for t, _ in chunk]
            yb = (torch.from_numpy(targets[idx]) if task == "single"
                  else torch.from_numpy(targets[idx].astype(np.float32)))
            opt.zero_grad(set_to_none=True)
            if train.mixup > 0:
                mrng = np.random.default_rng([train.seed, epoch, b, 0x31])
                lam = float(mrng.beta(train.mixup, train.mixup))
                perm = torch.from_numpy(mrng.permutation(len(chunk)))
                logits = _train_forward(model, lam * xb + (1.0 - lam) * xb[perm], train, epoch=epoch, batch=b)
                if task == "single":
                    loss = lam * loss_fn(logits, yb) + (1.0 - lam) * loss_fn(logits, yb[perm])
                else:
                    loss = loss_fn(logits, lam * yb + (1.0 - lam) * yb[perm])
            else:
                loss = loss_fn(_train_forward(model, xb, train, epoch=epoch, batch=b), yb)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach())
            n_batches += 1
            seen += len(chunk)
            progress(f"epoch {epoch}/{train.epochs}", b // train.batch_size + 1, n_steps)
        sched.step()
        probs, _ = predict_tracks(model, tracks.data, val_idx, config=config, multi_label=task == "multi")
        vt = targets[val_idx]
        m = metrics_for(task, vt, probs, manifest.labels)
        score = _val_score(task, m)
        vloss = _val_loss(task, probs, vt)
        row = {"epoch": epoch, "train_loss": total_loss / max(n_batches, 1), "val_loss": vloss,
               "val_score": score if math.isfinite(score) else float("nan"),
               "scored_on": scored_on, "time_s": time.perf_counter() - t0}
        history.append(row)
        if (score, -vloss) > (best[0], -best[1]):
            best, best_epoch, stale = (score, vloss), epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        if on_epoch:
            on_epoch(row)
        if on_epoch_model:
            on_epoch_model(epoch, model)
        if train.patience and stale >= train.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(model, history, best_epoch, time.perf_counter() - t0, seen)


# --------------------------------------------------------------------------- the pipeline


def default_run_dir(manifest: Manifest, family: str, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = Path(manifest.source.removeprefix("catalog:")).stem or "data"
    return Path(root) / f"{name}-{family}-{stamp}"


def train(manifest: Manifest, *, config: TrainConfig = TrainConfig(), out: str | Path | None = None,
          progress: Progress = _noop, on_epoch: Callable[[dict], None] | None = None,
          on_warning: Callable[[str], None] | None = None,
          on_epoch_model: Callable[[int, Any], None] | None = None) -> dict:
    """The whole pipeline: features, split, fit, test evaluation, run folder.

    Parameters
    ----------
    manifest : the labeled dataset (from :func:`soundalike.data.datasets.read_dataset`)
    config : training settings
    out : run folder (default ``runs/<dataset>-<family>-<timestamp>``); created
    progress : ``progress(stage, done, total)`` callback (the CLI draws bars with it)
    on_epoch : called with each epoch's history row
    on_epoch_model : called as ``on_epoch_model(epoch, model)`` after each epoch (see
        :func:`fit_model`)
    on_warning : called with each one-line warning about the data (a split too small to
        score on, labels with too few tracks) before training starts; they are also in
        ``report["warnings"]`` and report.md

    Returns
    -------
    report : the dict written to ``report.json`` (``report["run_dir"]`` is the folder)
    """
    import torch

    from soundalike.data.cache import FeatureCache
    from soundalike.data.split import split_manifest, split_warnings
    from soundalike.models.families import build
    from soundalike.models.checkpoint import CHECKPOINT_NAME, RunMeta, run_model_id, save_checkpoint
    from soundalike.train.evaluate import metrics_for
    from soundalike.train.report import write_report

    run_dir = Path(out) if out is not None else default_run_dir(manifest, config.family)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    cache = FeatureCache(config.cache_dir, enabled=config.use_cache)
    n_labels = len(manifest.labels)
    overrides = dict(config.model)
    if config.window_s is not None:
        overrides["window_s"] = config.window_s
    if config.sample_rate is not None:
        overrides["sample_rate"] = config.sample_rate

    backbone = None
    t_feat = time.perf_counter()
    if config.family == "probe":
        from soundalike.models.zoo import load_analyzer

        backbone = load_analyzer(config.backbone)
        tracks = prepare_tracks(manifest, config=None, backbone=backbone,
                                max_duration_s=config.max_duration_s, cache=cache, progress=progress)
        overrides["input_dim"] = int(tracks.data[0].shape[1])
        # the probe reads one backbone patch per input: its window is the backbone's patch
        # (a 0-s window made a checkpoint that load_checkpoint refuses)
        overrides.setdefault("window_s", float(getattr(backbone, "min_duration_s", 0.0) or 3.0))
        overrides["sample_rate"] = int(backbone.sample_rate)
        fam = make_config("probe", n_labels=n_labels, **overrides)
    else:
        fam = make_config(config.family, n_labels=n_labels, **overrides)
        tracks = prepare_tracks(manifest, config=fam, max_duration_s=config.max_duration_s,
                                cache=cache, progress=progress)
        if config.window_s is None:
            overrides["window_s"] = auto_window_s([len(x) for x in tracks.data], sr=fam.sample_rate)
            fam = make_config(config.family, n_labels=n_labels, **overrides)
    feature_time_s = time.perf_counter() - t_feat
    man = tracks.manifest
    split = split_manifest(man, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                           seed=config.seed, use_groups=config.use_groups)
    man.save(run_dir / "manifest.json")
    split.save(run_dir / "split.json", man)
    warnings = split_warnings(man, split)
    for w in warnings:
        (on_warning or (lambda m: None))(w)

    if backbone is not None and config.augment and config.augment_copies:
        augmented_embeddings(tracks, split.train, backbone=backbone, augment=config.augment,
                             copies=config.augment_copies, seed=config.seed, p=config.augment_p,
                             max_duration_s=config.max_duration_s, cache=cache,
                             noise_dir=config.noise_dir, progress=progress)
    torch.manual_seed(config.seed)  # the backbone may have drawn from torch's generator
    model = build(fam)
    meta = RunMeta(fam, list(man.labels), man.task, man.label_category,
                   backbone=config.backbone if backbone is not None else None,
                   backbone_model_id=backbone.model_id if backbone is not None else None,
                   name=run_dir.name, extra={"train": config.to_dict()})
    result = fit_model(model, tracks, split, config=fam, train=config, on_epoch=on_epoch, progress=progress,
                       on_epoch_model=on_epoch_model)
    save_checkpoint(run_dir / CHECKPOINT_NAME, result.model, meta)

    test_idx = split.test
    targets = man.targets()
    probs, _ = predict_tracks(result.model, tracks.data, test_idx, config=fam, multi_label=man.task == "multi")
    metrics = metrics_for(man.task, targets[test_idx], probs, man.labels) if test_idx else {}
    report = {
        "run_dir": str(run_dir),
        "model_id": run_model_id(result.model, meta),
        "family": fam.family,
        "task": man.task,
        "label_category": man.label_category,
        "labels": man.labels,
        "dataset": {"source": man.source, "n_tracks": len(man.items),
                    "label_counts": man.label_counts(),
                    "split_sizes": {s: len(split[s]) for s in ("train", "val", "test")},
                    "n_errors": len(man.errors), "errors": [list(e) for e in man.errors[:200]]},
        "config": {"family": fam.to_dict(), "train": config.to_dict(),
                   "backbone": meta.backbone, "backbone_model_id": meta.backbone_model_id},
        "training": {"epochs_run": len(result.history), "best_epoch": result.best_epoch,
                     "train_time_s": result.train_time_s, "feature_time_s": feature_time_s,
                     "samples_seen": result.samples_seen,
                     "samples_per_s": result.samples_seen / max(result.train_time_s, 1e-9),
                     "cache_hits": cache.hits, "cache_misses": cache.misses,
                     "history": result.history},
        "test": metrics,
        "warnings": warnings,
        "evaluated_on": "test split (track-level: mean of window predictions)",
    }
    (run_dir / "run.json").write_text(json.dumps(meta.to_dict(), indent=1))
    write_report(run_dir, report)
    return report
