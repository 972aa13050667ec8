"""Models: the analyzer protocol, the pretrained zoo and trained runs.

``soundalike.models.load("MTT_musicnn")`` returns a pretrained tagger (see
:mod:`soundalike.models.pretrained`); torch is imported only when a model is loaded,
so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from soundalike.models.pretrained import PretrainedModel


def load(name: str) -> PretrainedModel:
    """The pretrained model ``name`` ("MTT_musicnn", "MTT_vgg", "MSD_musicnn", "MSD_vgg"),
    loaded once per process; see :func:`soundalike.models.pretrained.load`."""
    from soundalike.models.pretrained import load as _load

    return _load(name)


__all__ = ["load"]
