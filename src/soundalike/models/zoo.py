"""Model registry: one place that maps a model name (or run folder) to an analyzer.

``load_analyzer("mfcc-stats")``, ``load_analyzer("MTT_musicnn")`` or
``load_analyzer("runs/instruments")``.  Analyzers are loaded once per process and
reused (weights are never reloaded per file).
"""

from __future__ import annotations

import functools
from pathlib import Path

from soundalike.errors import ModelError
from soundalike.models.base import Analyzer

#: Pretrained models shipped by the musicnn wheel (MagnaTagATune and Million Song Dataset).
PRETRAINED: tuple[str, ...] = ("MTT_musicnn", "MTT_vgg", "MSD_musicnn", "MSD_vgg")
#: Analyzers that need no weights at all.
BASELINES: tuple[str, ...] = ("mfcc-stats",)
#: Analyzers built from several pretrained models (:mod:`soundalike.models.fusion`).
FUSED: tuple[str, ...] = ("musicnn-fusion", "musicnn-vgg-fusion")
#: What ingest (and so similar, serve and listen) runs when no ``--model`` is given:
#: the model picked from ``benchmarks/bench_similarity.py`` (README, "Similarity"), its
#: front-end convolutions in bf16 (``mixed-ef``: tag probabilities within 0.008 of fp32 on
#: every Philharmonia note, the networks ~2.6x faster; README, "Precision").  A catalog
#: made with the fp32 ``musicnn-fusion`` keeps it (:func:`ingest.pipeline.continuing_model`).
DEFAULT_ANALYZER = "musicnn-fusion@mixed-ef"


def available() -> list[str]:
    """Names accepted by :func:`load_analyzer` (besides paths to trained runs)."""
    return [*BASELINES, *PRETRAINED, *FUSED]


def split_precision(spec: str | Path) -> tuple[str, str]:
    """``"MTT_musicnn@bf16"`` -> ``("MTT_musicnn", "bf16")``; anything else -> ``(spec, "fp32")``."""
    key = str(spec)
    name, sep, prec = key.rpartition("@")
    if sep and (name in PRETRAINED or name in FUSED):
        return name, prec
    return key, "fp32"


def load_analyzer(spec: str | Path, *, precision: str | None = None) -> Analyzer:
    """Return the analyzer for a model name or a trained run folder (cached per process).

    Parameters
    ----------
    spec : a name of :func:`available`, ``NAME@PRECISION`` for a pretrained model in
        another arithmetic (``MTT_musicnn@bf16``), or a trained run folder
    precision : ``"fp32"`` (the reference), ``"bf16"`` or ``"int8"``: pretrained models only;
        ``None`` keeps what ``spec`` says (fp32 if nothing)

    Raises
    ------
    ModelError
        Unknown name or precision, a precision for a model that has none, or a path that
        is not a trained run.
    """
    key, named = split_precision(spec)
    if precision is not None and named != "fp32" and precision != named:
        raise ModelError(f"model {spec!r} says precision {named}, but precision {precision} was asked")
    prec = precision or named
    if prec != "fp32":
        from soundalike.models.pretrained import PRECISIONS

        if key not in PRETRAINED and key not in FUSED:
            raise ModelError(f"precision {prec}: only the pretrained models ({', '.join(PRETRAINED + FUSED)}) "
                             f"run in another precision than fp32, not {key!r}")
        if prec not in PRECISIONS:
            raise ModelError(f"unknown precision {prec!r}; choose one of {', '.join(PRECISIONS)}")
        return _load_cached(f"{key}@{prec}")
    if key not in BASELINES and key not in PRETRAINED and key not in FUSED:
        p = Path(key).expanduser()
        if not p.exists():
            raise ModelError(
                f"unknown model {key!r}: choose one of {', '.join(available())} or give a trained run folder"
            )
        key = str(p.resolve())
    return _load_cached(key)


@functools.lru_cache(maxsize=8)
def _load_cached(key: str) -> Analyzer:
    if key == "mfcc-stats":
        from soundalike.models.baseline import MFCCStats

        return MFCCStats()
    name, _, prec = key.rpartition("@")
    if name in FUSED:
        from soundalike.models.fusion import load_fusion_analyzer

        return load_fusion_analyzer(prec, name)
    if name in PRETRAINED:
        from soundalike.models.pretrained import load_pretrained_analyzer

        return load_pretrained_analyzer(name, precision=prec)
    if key in PRETRAINED:
        from soundalike.models.pretrained import load_pretrained_analyzer

        return load_pretrained_analyzer(key)
    if key in FUSED:
        from soundalike.models.fusion import load_fusion_analyzer

        return load_fusion_analyzer(name=key)
    return load_run_analyzer(Path(key))


def load_run_analyzer(run_dir: str | Path) -> Analyzer:
    """The analyzer of a trained run folder, its frozen backbone (if any) loaded from this registry.

    The registry hands the backbone to :class:`~soundalike.models.checkpoint.RunAnalyzer`,
    so checkpoints never import the registry (no zoo <-> checkpoint cycle).
    """
    from soundalike.models.checkpoint import RunAnalyzer, load_checkpoint

    model, meta = load_checkpoint(run_dir)
    p = Path(run_dir)
    backbone = load_analyzer(meta.backbone) if meta.backbone else None
    return RunAnalyzer(model, meta, name=meta.name or (p.name if p.is_dir() else p.parent.name),
                       backbone=backbone)
