"""Self-describing checkpoints and trained runs as analyzers.

A run folder holds ``model.pt``: a plain dict of tensors, strings and numbers that
loads with ``torch.load(weights_only=True)`` (no pickled code).  Besides the weights
it carries everything needed to use it: the family and its hyper-parameters (which
include the feature parameters: sample rate, window, mel/MFCC settings), the label
list and its catalog category, the task, the backbone for probes, and the format
version.  :class:`RunAnalyzer` (loaded by :func:`soundalike.models.zoo.load_run_analyzer`) turns a run into an
:class:`~soundalike.models.base.Analyzer`, so ``--model runs/X`` works wherever a
pretrained model name does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from soundalike.errors import CheckpointError, ConfigError, ModelMismatchError
from soundalike.models.base import Analysis, Analyzer
from soundalike.models.families import FamilyConfig, build

FORMAT = "soundalike-run"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "model.pt"


@dataclass(frozen=True)
class RunMeta:
    """What a checkpoint says about itself."""

    config: FamilyConfig
    labels: list[str]
    task: str
    label_category: str
    backbone: str | None = None
    backbone_model_id: str | None = None
    name: str = ""
    extra: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "family": self.config.family,
                "config": self.config.to_dict(), "labels": list(self.labels), "task": self.task,
                "label_category": self.label_category, "backbone": self.backbone,
                "backbone_model_id": self.backbone_model_id, "name": self.name,
                "extra": self.extra or {}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunMeta:
        return cls(FamilyConfig.from_dict(d["config"]), list(d["labels"]), d["task"],
                   d["label_category"], d.get("backbone"), d.get("backbone_model_id"),
                   d.get("name", ""), d.get("extra") or {})


def save_checkpoint(path: str | Path, model, meta: RunMeta) -> None:
    """Write weights + metadata (metadata as a JSON string) atomically."""
    import os
    import tempfile

    import torch

    from soundalike import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "soundalike_version": str(__version__),
               "meta": json.dumps(meta.to_dict()),
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checkpoint_file(run: str | Path) -> Path:
    p = Path(run).expanduser()
    return p / CHECKPOINT_NAME if p.is_dir() else p


#: Most parameters a checkpoint's described model may have (about 2 GB of float32):
#: a tampered config must not make us allocate 160 GB before the weights are compared.
MAX_PARAMETERS = 500_000_000
#: Ranges of the config fields every family uses; a value outside is a broken checkpoint.
_CONFIG_BOUNDS: dict[str, tuple[float, float]] = {
    "n_labels": (1, 100_000), "sample_rate": (1000, 384_000), "window_s": (0.05, 3600.0),
    "n_mels": (1, 1024), "n_fft": (16, 1 << 17), "hop_length": (1, 1 << 17), "n_mfcc": (1, 1024),
    "hidden": (0, 1 << 17), "embedding_dim": (1, 1 << 17), "dropout": (0.0, 0.999),
    "input_dim": (0, 1 << 17), "freq_mask": (0, 1024), "time_mask": (0, 1 << 16), "hop_fraction": (1e-3, 1.0),
    "resnorm": (0.0, 1000.0),
}


def _bad(f: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{f}: {why}")


def _check_meta(f: Path, d: Any) -> RunMeta:
    """A :class:`RunMeta` from a checkpoint's decoded metadata, every field checked."""
    if not isinstance(d, dict):
        raise _bad(f, "checkpoint metadata is not a JSON object")
    cfg = d.get("config")
    if not isinstance(cfg, dict):
        raise _bad(f, "checkpoint metadata has no model config")
    for key, (lo, hi) in _CONFIG_BOUNDS.items():
        if key not in cfg:
            continue
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise _bad(f, f"config {key}={v!r} is out of range ({lo:g}..{hi:g})")
    channels = cfg.get("channels", [])
    if (not isinstance(channels, list) or len(channels) > 16
            or not all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 8192 for c in channels)):
        raise _bad(f, f"config channels={channels!r} is not a list of up to 16 widths in 1..8192")
    labels = d.get("labels")
    if (not isinstance(labels, list) or not labels
            or not all(isinstance(x, str) and x.strip() for x in labels)):
        raise _bad(f, "checkpoint labels are not a non-empty list of names")
    if len(set(labels)) != len(labels):
        raise _bad(f, "checkpoint labels repeat a name")
    if cfg.get("n_labels") != len(labels):
        raise _bad(f, f"checkpoint has {len(labels)} labels but its model head has "
                      f"{cfg.get('n_labels')!r} outputs")
    if d.get("task") not in ("single", "multi"):
        raise _bad(f, f"checkpoint task {d.get('task')!r} is neither 'single' nor 'multi'")
    if not isinstance(d.get("label_category"), str) or not d["label_category"].strip():
        raise _bad(f, "checkpoint has no label category")
    for key in ("backbone", "backbone_model_id", "name"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise _bad(f, f"checkpoint {key} is not a string")
    try:
        return RunMeta.from_dict(d)
    except (ConfigError, TypeError, ValueError, KeyError) as exc:
        raise _bad(f, f"checkpoint config is invalid: {exc}") from None


def _build_checked(f: Path, meta: RunMeta, state: dict):
    """Build the described model once its size and shapes are known to fit ``state``."""
    import torch

    try:
        with torch.device("meta"):  # shapes only: nothing allocated yet
            shell = build(meta.config)
    except Exception as exc:  # noqa: BLE001 - any failure here is a broken description
        raise _bad(f, f"checkpoint describes a model that cannot be built: {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    expected = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    n_params = sum(int(np.prod(s)) for s in expected.values())
    if n_params > MAX_PARAMETERS:
        raise _bad(f, f"checkpoint describes a model of {n_params:,} parameters (the limit is "
                      f"{MAX_PARAMETERS:,}): refusing to build it")
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = [k for k in expected if k in got and got[k] != expected[k]]
    if missing or unexpected or wrong:
        parts = [f"{len(x)} {what}" for x, what in ((missing, "missing"), (unexpected, "unexpected"),
                                                   (wrong, "of the wrong shape")) if x]
        example = (f"; e.g. {wrong[0]}: {got[wrong[0]]} in the file, {expected[wrong[0]]} expected" if wrong
                   else f"; e.g. {(missing or unexpected)[0]}")
        raise _bad(f, f"weights do not fit the described {meta.config.family} model "
                      f"({', '.join(parts)} tensors{example})")
    model = build(meta.config)
    model.load_state_dict(state)
    return model


def load_checkpoint(run: str | Path):
    """Load a run folder (or its ``model.pt``): returns ``(model in eval mode, RunMeta)``.

    Everything in the file is checked before it is used: a file that is not a torch
    checkpoint, one that would need pickled code, a wrong or future format version,
    metadata out of range, labels that do not match the head, a model too large to
    build, weights that do not fit -- each is one :class:`CheckpointError` line.

    Raises
    ------
    CheckpointError
        Missing file, not a soundalike checkpoint, newer format, or weights that do
        not fit the described architecture.
    """
    import pickle

    import torch

    f = checkpoint_file(run)
    if not f.exists():
        raise CheckpointError(f"{f}: no checkpoint (expected a run folder with {CHECKPOINT_NAME})")
    if not f.is_file():
        raise CheckpointError(f"{f}: not a file")
    try:
        payload = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises weights_only=False, i.e. running the file's code: never that
        if "global" in str(exc).lower():
            raise _bad(f, "refused: the file holds pickled objects other than tensors and plain data "
                          "(a soundalike checkpoint never does)") from None
        raise _bad(f, "not a torch checkpoint (expected the model.pt that `soundalike train` writes)") from None
    except OSError as exc:
        raise _bad(f, f"cannot be read: {exc.strerror or exc}") from None
    except Exception:  # noqa: BLE001 - torch raises KeyError, RuntimeError, ... on non-checkpoints
        raise _bad(f, "not a torch checkpoint (expected the model.pt that `soundalike train` writes)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{f}: not a soundalike run checkpoint")
    version = payload.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _bad(f, f"checkpoint format version {version!r} is not a version number")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{f}: checkpoint format {version} is newer than this "
                              f"soundalike understands ({FORMAT_VERSION}); upgrade soundalike")
    raw, state = payload.get("meta"), payload.get("state_dict")
    if not isinstance(raw, str):
        raise _bad(f, "checkpoint has no metadata")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise _bad(f, "checkpoint weights are not a dict of named tensors")
    try:
        d = json.loads(raw)
    except (ValueError, RecursionError):
        raise _bad(f, "checkpoint metadata is not valid JSON") from None
    meta = _check_meta(f, d)
    model = _build_checked(f, meta, state)
    model.eval()
    return model, meta


def run_model_id(model, meta: RunMeta) -> str:
    """``run-`` + hash of the weights, the family config and the labels (16 hex digits)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(meta.config.to_dict(), sort_keys=True).encode())
    h.update(json.dumps(meta.labels).encode())
    h.update((meta.backbone_model_id or "").encode())
    return "run-" + h.hexdigest()[:16]


# --------------------------------------------------------------------------- windows


def windows(x: np.ndarray, *, size: int, hop: int | None = None) -> np.ndarray:
    """Cut ``(n,)`` samples into ``(n_windows, size)`` windows covering the whole signal.

    Windows start every ``hop`` samples (default ``size``: back to back); the last one
    is placed to end exactly at the signal's end, so a track a little longer than a
    window gives two full windows instead of one full and one mostly zero-padded.  A
    signal shorter than ``size`` gives one window, zero-padded at the end.
    """
    hop = hop or size
    n = len(x)
    if n <= size:
        out = np.zeros((1, size), np.float32)
        out[0, :n] = x
        return out
    starts = list(range(0, n - size + 1, hop))
    if starts[-1] != n - size:
        starts.append(n - size)
    return np.stack([np.asarray(x[s : s + size], np.float32) for s in starts])


def infer_windows(model, X: np.ndarray, *, multi_label: bool, batch_size: int = 64):
    """Probabilities and embeddings for a stack of model inputs.

    Parameters
    ----------
    X : float32 ``(n_windows, window_samples)`` audio or ``(n_patches, input_dim)`` embeddings

    Returns
    -------
    probs : float32 ``(n_windows, n_labels)``
    emb : float32 ``(n_windows, embedding_dim)``
    """
    import torch

    probs, embs = [], []
    with torch.no_grad():
        for i in range(0, len(X), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(X[i : i + batch_size], np.float32))
            e = model.embed(xb)
            logits = model.head(e)
            p = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)
            probs.append(p.numpy())
            embs.append(e.numpy())
    return np.concatenate(probs).astype(np.float32), np.concatenate(embs).astype(np.float32)


def track_inputs(data: np.ndarray, config: FamilyConfig) -> np.ndarray:
    """All model inputs of one track: its windows (waveform) or its patch embeddings (probe)."""
    if config.input_kind == "embedding":
        return np.atleast_2d(np.asarray(data, np.float32))
    return windows(np.asarray(data, np.float32), size=config.window_samples, hop=config.hop_samples)


# --------------------------------------------------------------------------- analyzer


class RunAnalyzer:
    """A trained run as an :class:`~soundalike.models.base.Analyzer`.

    The embedding is the track-level mean of the penultimate layer over windows; the
    predictions are the track-level mean label probabilities.
    """

    def __init__(self, model, meta: RunMeta, *, name: str, backbone: Analyzer | None = None):
        self.model = model
        self.meta = meta
        self.name = name
        self.labels = list(meta.labels)
        self.label_category = meta.label_category
        self.multi_label = meta.task == "multi"
        self.embedding_dim = int(meta.config.embedding_dim)
        self.model_id = run_model_id(model, meta)
        self._backbone = None
        if meta.backbone:
            if backbone is None:
                raise CheckpointError(f"run {name} probes the backbone {meta.backbone}: load it with "
                                      f"soundalike.models.zoo.load_run_analyzer")
            self._backbone = backbone
            if meta.backbone_model_id and self._backbone.model_id != meta.backbone_model_id:
                raise ModelMismatchError(
                    f"run {name} was trained on backbone {meta.backbone} with model id "
                    f"{meta.backbone_model_id}, but the installed one has id {self._backbone.model_id}; "
                    f"retrain the probe")
            self.sample_rate = int(self._backbone.sample_rate)
        else:
            self.sample_rate = int(meta.config.sample_rate)
        self.min_duration_s = float(meta.config.window_s) if not meta.backbone else 0.0

    def inputs(self, y: np.ndarray, sr: int) -> np.ndarray:
        """The model inputs for samples ``y`` at ``sr`` (windows or backbone patch embeddings)."""
        from soundalike.audio.resample import resample

        y = resample(np.asarray(y, np.float32), sr, self.sample_rate)
        if self._backbone is not None:
            return backbone_patches(self._backbone, y, self.sample_rate)
        return track_inputs(y, self.meta.config)

    def analyze(self, y: np.ndarray, sr: int) -> Analysis:
        P, E = infer_windows(self.model, self.inputs(y, sr), multi_label=self.multi_label)
        probs = P.mean(axis=0)
        return Analysis(embedding=E.mean(axis=0).astype(np.float32),
                        predictions={lab: float(p) for lab, p in zip(self.labels, probs)},
                        patch_embeddings=E, patch_predictions=P)


def backbone_patches(analyzer, y: np.ndarray, sr: int) -> np.ndarray:
    """Frozen backbone embeddings of a track: per-patch when the analyzer gives them, float32 ``(P, d)``."""
    a = analyzer.analyze(np.asarray(y, np.float32), sr)
    if a.patch_embeddings is not None and len(a.patch_embeddings):
        return np.asarray(a.patch_embeddings, np.float32)
    return np.asarray(a.embedding, np.float32)[None, :]


def run_identity(run: str | Path) -> tuple[str, str]:
    """``(name, model_id)`` of a run folder, as ingest records it in a catalog.

    Cheap (no backbone is loaded): lets search and live commands resolve
    ``--model runs/X`` to the catalog model that ``ingest --model runs/X`` wrote.

    Raises
    ------
    CheckpointError
        ``run`` is not a readable run checkpoint.
    """
    model, meta = load_checkpoint(run)
    p = Path(run)
    return meta.name or (p.name if p.is_dir() else p.parent.name), run_model_id(model, meta)
