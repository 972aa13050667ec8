"""Bring an existing catalog's derived data up to date without re-running the network.

``soundalike ingest --refresh attributes`` decodes each track once more and computes its
musical attributes (tempo, key, loudness, decoded length) with vocals and energy from the
tagger outputs the catalog already stores; ``--refresh tags`` re-files the stored model
tags of pretrained taggers into their real categories (``models/vocabulary.py``).  Both
commit track by track, so an interrupted refresh keeps what it did and the next one
finishes the rest; a file that cannot be decoded is reported and skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from soundalike.catalog.store import Catalog, Tag
from soundalike.errors import CatalogError, SoundalikeError

RefreshWhat = Literal["attributes", "tags"]
REFRESHABLE: tuple[str, ...] = ("attributes", "tags")
#: The rate attributes are computed at on refresh (what ingest decodes for the musicnn models).
ATTRIBUTES_SR = 16000


@dataclass
class RefreshSummary:
    """What one refresh did."""

    attributes: int = 0
    tags: int = 0
    skipped: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _attributes_job(path: str, predictions: dict[str, float]) -> tuple[str, dict | None, str | None]:
    from soundalike.audio.io import info, load
    from soundalike.ingest.pipeline import LONG_FILE_S, track_attributes

    try:
        meta = info(path)
        if meta.duration_s > LONG_FILE_S:
            return path, track_attributes(path, predictions, sr=ATTRIBUTES_SR,
                                          decoded_s=meta.duration_s), None
        wav = load(path, sr=ATTRIBUTES_SR)
        return path, track_attributes(path, predictions, y=wav.y, sr=wav.sr), None
    except SoundalikeError as exc:
        return path, None, getattr(exc, "reason", None) or str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad file never stops a refresh
        return path, None, f"unexpected {type(exc).__name__}: {exc}"


def _under(path: str, roots: list[Path]) -> bool:
    p = Path(path)
    return any(p == r or r in p.parents for r in roots)


def refresh(what: Iterable[str], *, catalog: str | Path | Catalog, paths: Iterable[str | Path] = (),
            model: str | None = None, force: bool = False, workers: int | None = None,
            top_tags: int | None = None,
            on_event: Callable[[dict[str, Any]], None] | None = None) -> RefreshSummary:
    """Recompute derived data of catalog tracks (under ``paths``, or all).

    Parameters
    ----------
    what : any of ``"attributes"``, ``"tags"``
    catalog : catalog path or open :class:`Catalog`
    paths : only tracks under these folders/files (default: every ok track)
    model : the model whose stored predictions give vocals/energy and whose tags are
        re-filed (default: the catalog's most used)
    force : attributes of every track, not only missing or stale ones
    workers : decoding processes for attributes (default: CPU count)
    top_tags : model tags per track (default: ``ingest.DEFAULT_TOP_TAGS``)
    on_event : ``{"event": "start", "total": n}``, then ``{"event": "track", "path", "status"}``
    """
    from soundalike.audio.attributes import ATTRIBUTES_VERSION
    from soundalike.ingest.pipeline import DEFAULT_TOP_TAGS, MIN_TAG_CONFIDENCE

    what = set(what)
    unknown = what - set(REFRESHABLE)
    if unknown or not what:
        raise CatalogError(f"--refresh takes {', '.join(REFRESHABLE)}; got {', '.join(sorted(unknown)) or 'nothing'}")
    t0 = time.perf_counter()
    cat = catalog if isinstance(catalog, Catalog) else Catalog.open(catalog, create=False)
    own = not isinstance(catalog, Catalog)
    emit = on_event or (lambda e: None)
    summary = RefreshSummary()
    roots = [Path(p).expanduser().resolve() for p in paths]
    try:
        info = cat.find_model(model) if model else None
        if model and info is None:
            raise CatalogError(f"{cat.path}: no model {model!r} (see `soundalike catalog stats`)")
        model_id = info.model_id if info else cat.default_model_id()
        if "tags" in what and model_id:
            summary.tags = _refile_tags(cat, model_id, roots, top_tags or DEFAULT_TOP_TAGS,
                                        MIN_TAG_CONFIDENCE)
        if "attributes" in what:
            ids = ([t.id for t in cat.iter_tracks()] if force
                   else cat.ids_needing_attributes(version=ATTRIBUTES_VERSION, model_id=model_id))
            tracks = cat.get_tracks(ids)
            todo = [tracks[i] for i in ids if i in tracks and (not roots or _under(tracks[i].path, roots))]
            emit({"event": "start", "total": len(todo)})
            preds = cat.get_analyses([t.id for t in todo], model_id) if model_id else {}
            by_path = {t.path: t for t in todo}

            def handle(path: str, attrs: dict | None, reason: str | None) -> None:
                t = by_path[path]
                if attrs is None:
                    summary.failed += 1
                    summary.errors.append((path, reason or "failed"))
                    emit({"event": "track", "path": path, "status": "failed", "reason": reason})
                    return
                cat.put_attributes(t.id, attrs, model_id=model_id or "", version=ATTRIBUTES_VERSION)
                summary.attributes += 1
                emit({"event": "track", "path": path, "status": "refreshed"})

            jobs = [(t.path, preds[t.id].predictions if t.id in preds else {}) for t in todo]
            n = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
            if n == 1:
                for job in jobs:
                    handle(*_attributes_job(*job))
            else:
                from concurrent.futures import ProcessPoolExecutor

                with ProcessPoolExecutor(n) as pool:
                    for res in pool.map(_attributes_job, *zip(*jobs, strict=True), chunksize=4):
                        handle(*res)
    finally:
        summary.elapsed_s = time.perf_counter() - t0
        if own:
            cat.close()
    return summary


def _refile_tags(cat: Catalog, model_id: str, roots: list[Path], top_tags: int, min_conf: float) -> int:
    """Re-store ``model_id``'s top tags from its stored predictions, in their vocabulary
    categories.  Returns the number of tracks re-tagged (none for models outside the table)."""
    from soundalike.models.pretrained import SPECS
    from soundalike.models.vocabulary import category_of

    info = cat.model(model_id)
    from soundalike.models.fusion import LAYOUTS
    from soundalike.models.zoo import split_precision

    name = split_precision(info.name)[0] if info is not None else None  # MTT_musicnn@bf16: MTT's table
    if info is None or (name not in SPECS and name not in LAYOUTS):
        return 0
    # the fusion's labels are MTT's then MSD's: either table, MTT first
    dataset = SPECS[name].dataset if name in SPECS else None
    n = 0
    ids = [t.id for t in cat.iter_tracks() if not roots or _under(t.path, roots)]
    analyses = cat.get_analyses(ids, model_id)
    for tid in ids:
        a = analyses.get(tid)
        if a is None or not a.predictions:
            continue
        top = sorted(a.predictions.items(), key=lambda kv: kv[1], reverse=True)[:top_tags]
        with cat.transaction():
            cat.set_tags(tid, [Tag(label, category_of(label, dataset=dataset), "model", float(p), model_id)
                               for label, p in top if p >= min_conf], source="model", model_id=model_id)
        n += 1
    return n


__all__ = ["REFRESHABLE", "RefreshSummary", "refresh"]
