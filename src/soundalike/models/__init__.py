"""Models: the analyzer protocol, the pretrained zoo and trained runs.

``soundalike.models.load("MTT_musicnn")`` returns a pretrained tagger (see
:mod:`soundalike.models.pretrained`); torch is imported only when a model is loaded,
so importing this package stays cheap.
"""

from __future__ import annotations

import os


def load(name: str | os.PathLike):
    """Any model ``--model`` accepts, loaded once per process.

    A pretrained name ("MTT_musicnn", "MTT_vgg", "MSD_musicnn", "MSD_vgg") gives the
    :class:`~soundalike.models.pretrained.PretrainedModel` (tags, taggrams, embeddings
    of every layer); "mfcc-stats" or a trained run folder gives its
    :class:`~soundalike.models.base.Analyzer` (see :func:`soundalike.models.zoo.load_analyzer`).
    Every one of them has ``analyze(y, sr)``, ``labels``, ``model_id`` and ``sample_rate``.

    Raises
    ------
    ModelError
        Unknown name, or a path that is not a trained run.
    """
    from pathlib import Path

    from soundalike.errors import ModelError
    from soundalike.models.zoo import BASELINES, PRETRAINED, load_analyzer

    if str(name) in PRETRAINED:
        from soundalike.models.pretrained import load as _load

        return _load(str(name))
    if str(name) not in BASELINES and not Path(name).expanduser().exists():
        raise ModelError(f"unknown pretrained model {str(name)!r}; choose one of {', '.join(PRETRAINED)}, "
                         f"a baseline ({', '.join(BASELINES)}) or a trained run folder")
    return load_analyzer(name)


__all__ = ["load"]
