"""Export a model's embeddings (track ids, paths, vectors) for use elsewhere."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from soundalike.errors import SoundalikeError

if TYPE_CHECKING:
    from soundalike.catalog.store import Catalog

ExportFormat = Literal["csv", "npy"]


def export_embeddings(cat: Catalog, *, path: str | os.PathLike, format: ExportFormat = "npy",
                      model: str | None = None, normalized: bool = False) -> dict:
    """Write the ``ok`` tracks' embeddings of one model.

    Parameters
    ----------
    cat : open catalog
    path : output file.  ``csv``: one row per track, columns ``id, path, e0 .. e{d-1}``.
        ``npy``: ``path`` gets the float32 ``(n, d)`` matrix and two sidecars,
        ``<stem>.ids.npy`` (int64 ``(n,)``) and ``<stem>.paths.txt`` (one path per line),
        rows in the same order (by track id).
    format : ``"csv"`` or ``"npy"``
    model : model name or id (default: the catalog's most used model)
    normalized : L2-normalise the vectors (as the index compares them)

    Returns
    -------
    dict
        ``{"model_id", "count", "dim", "files": [...]}``
    """
    from soundalike.search.index import normalize
    from soundalike.search.sync import model_info

    if format not in ("csv", "npy"):
        raise SoundalikeError(f"unknown export format {format!r}: choose csv or npy")
    info = model_info(cat, model)
    ids, X = cat.embeddings(info.model_id)
    if normalized and len(ids):
        X = normalize(X)
    tracks = cat.get_tracks(ids.tolist())
    paths = [tracks[int(i)].path for i in ids]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    dim = int(X.shape[1]) if X.ndim == 2 and len(ids) else info.dim
    if format == "csv":
        with open(out, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "path", *(f"e{j}" for j in range(dim))])
            for i, p, row in zip(ids, paths, X, strict=True):
                w.writerow([int(i), p, *(f"{v:.9g}" for v in row)])
        files = [str(out)]
    else:
        if out.suffix != ".npy":
            out = out.with_name(out.name + ".npy")
        stem = out.with_suffix("")
        np.save(out, np.asarray(X, np.float32).reshape(len(ids), dim))
        np.save(f"{stem}.ids.npy", ids.astype(np.int64))
        Path(f"{stem}.paths.txt").write_text("".join(p + "\n" for p in paths), encoding="utf-8")
        files = [str(out), f"{stem}.ids.npy", f"{stem}.paths.txt"]
    return {"model_id": info.model_id, "model": info.name, "count": int(len(ids)), "dim": dim, "files": files}
