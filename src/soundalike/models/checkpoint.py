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

from soundalike.errors import CheckpointError, ModelMismatchError
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


def load_checkpoint(run: str | Path):
    """Load a run folder (or its ``model.pt``): returns ``(model in eval mode, RunMeta)``.

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
    try:
        payload = torch.load(f, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{f}: cannot be read as a safe (weights-only) checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{f}: not a soundalike run checkpoint")
    if int(payload.get("version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{f}: checkpoint format {payload['version']} is newer than this "
                              f"soundalike understands ({FORMAT_VERSION}); upgrade soundalike")
    try:
        meta = RunMeta.from_dict(json.loads(payload["meta"]))
        model = build(meta.config)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{f}: checkpoint does not match its described model: {exc}") from exc
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
