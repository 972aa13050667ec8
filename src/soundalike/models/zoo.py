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
FUSED: tuple[str, ...] = ("musicnn-fusion",)
#: What ingest (and so similar, serve and listen) runs when no ``--model`` is given:
#: picked from ``benchmarks/bench_similarity.py`` (README, "Similarity").
DEFAULT_ANALYZER = "musicnn-fusion"


def available() -> list[str]:
    """Names accepted by :func:`load_analyzer` (besides paths to trained runs)."""
    return [*BASELINES, *PRETRAINED, *FUSED]


def load_analyzer(spec: str | Path) -> Analyzer:
    """Return the analyzer for a model name or a trained run folder (cached per process).

    Raises
    ------
    ModelError
        Unknown name, or a path that is not a trained run.
    """
    key = str(spec)
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
    if key in PRETRAINED:
        from soundalike.models.pretrained import load_pretrained_analyzer

        return load_pretrained_analyzer(key)
    if key in FUSED:
        from soundalike.models.fusion import load_fusion_analyzer

        return load_fusion_analyzer()
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
