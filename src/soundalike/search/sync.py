"""Keeping a faiss index in step with the catalog: build, load, sync, and a per-process cache.

:func:`open_index` loads a model's persisted :class:`~soundalike.search.index.VectorIndex`
(from ``Catalog.index_dir()``), checks the model id and dimension against the catalog
(a mismatch raises :class:`~soundalike.errors.ModelMismatchError` saying how to
rebuild), then brings it up to date with :func:`sync`: tracks whose analysis is new or
was re-made since the index's ``synced_version`` (the catalog's change marker,
``analyses.version``) are added, tracks that went missing are removed.  An HNSW index
is rebuilt once its tombstones pass :attr:`IndexConfig.max_tombstone_fraction`.

:func:`cached_index` keeps one index per catalog and model in this process and asks
the catalog's :meth:`~soundalike.catalog.store.Catalog.change_token` on every call: one
indexed row read, so a serving process sees another process's commits on its next
request.

:func:`model_info` resolves what a user typed as ``--model`` (a name, a model id or a
trained run folder) to the catalog's model.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from soundalike.errors import CatalogError, ModelMismatchError
from soundalike.search.index import IndexConfig, VectorIndex, rebuild_hint

if TYPE_CHECKING:
    from soundalike.catalog.store import Catalog, ModelInfo


def index_dir(catalog: Catalog | str | Path) -> Path:
    """Where a catalog's indexes live (``<catalog file>.index/``)."""
    from soundalike.catalog.store import Catalog

    if isinstance(catalog, Catalog):
        return catalog.index_dir()
    p = Path(catalog)
    return p.with_name(p.name + ".index")


def lookup_model(cat: Catalog, ref: str) -> ModelInfo | None:
    """The catalog's :class:`ModelInfo` by model id, else by name (newest of that name), else
    by trained run folder; None if none.  ``n_tracks`` is left at 0 (no counting)."""
    info = cat.find_model(ref)
    if info is None:
        run = Path(ref).expanduser()
        if run.exists():  # a trained run folder: ingest recorded it under its model id
            from soundalike.models.checkpoint import run_identity

            _, model_id = run_identity(run)
            return cat.find_model(model_id) if model_id != ref else None
    return info


def default_model_id(cat: Catalog) -> str | None:
    """What similar, serve and listen compare when no ``--model`` is given.

    The model with the most analyses of ok tracks; if the catalog holds an adaptation of
    it (``soundalike index adapt``), the newest adaptation instead.  None: empty catalog.
    """
    return cat.default_model_id(adapted=True)  # one statement


def load_adaptation(cat: Catalog, model_id: str):
    """The :class:`~soundalike.models.adapt.Adaptation` stored for ``model_id``, or None."""
    stored = cat.get_adaptation(model_id)
    if stored is None:
        return None
    from soundalike.models.adapt import Adaptation

    return Adaptation.from_bytes(stored.data)


def analyzer_for(cat: Catalog, model_id: str):
    """The analyzer that makes ``model_id``'s vectors for new audio (outside clips, live).

    A plain model: the registry's analyzer of that name, checked to have that id.  An
    adapted model: its base analyzer with the stored adaptation applied.

    Raises
    ------
    CatalogError
        No such model in the catalog.
    ModelMismatchError
        The analyzer of that name now has another model id (re-ingest).
    """
    from soundalike.models.zoo import load_analyzer

    info = cat.find_model(model_id)
    if info is None:
        raise CatalogError(f"{cat.path}: no model {model_id!r}")
    adaptation = load_adaptation(cat, info.model_id)
    if adaptation is not None:
        from soundalike.models.adapt import AdaptedAnalyzer

        base = analyzer_for(cat, adaptation.base_model_id)
        return AdaptedAnalyzer(base, adaptation)
    analyzer = load_analyzer(info.name)
    if analyzer.model_id != info.model_id:
        raise ModelMismatchError(
            f"model {info.name!r} now has id {analyzer.model_id}, but the catalog's embeddings were "
            f"made by {info.model_id}; re-ingest with `soundalike ingest DIR --model {info.name}`")
    return analyzer


def model_info(cat: Catalog, model: str | None) -> ModelInfo:
    """The catalog's :class:`ModelInfo` for a model name or id (``None``: the default model,
    see :func:`default_model_id`).

    Raises
    ------
    CatalogError
        The catalog holds no analyses (of that model).
    """
    return model_info_and_token(cat, model)[0]


def model_info_and_token(cat: Catalog, model: str | None) -> tuple[ModelInfo, int | None]:
    """:func:`model_info`, and the catalog's change token when finding the default model
    read it on the way (same statement), else None: hand it to :func:`cached_index`."""
    token = None
    if model is None:
        mid, token = cat.default_model_and_token()
        if mid is None:
            raise CatalogError(f"{cat.path}: no analysed tracks; run `soundalike ingest DIR "
                               f"--catalog {cat.path}` first")
        model = mid
    info = lookup_model(cat, model)
    if info is None:
        known = ", ".join(f"{m.name} ({m.model_id})" for m in cat.models()) or "none"
        raise CatalogError(f"{cat.path}: no analyses of model {model!r} (models in this catalog: {known}); "
                           f"run `soundalike ingest DIR --model {model}` first")
    return info, token


def _vectors(cat: Catalog, model_id: str, ids: np.ndarray, dim: int) -> np.ndarray:
    try:
        return cat.vectors(model_id, ids, dim=dim)
    except ModelMismatchError as exc:
        info = cat.find_model(model_id)
        raise ModelMismatchError(str(exc).replace(f"--model {model_id}", f"--model {info.name}")
                                 if info else str(exc)) from exc


def sync(index: VectorIndex, cat: Catalog) -> dict[str, int]:
    """Bring ``index`` up to date with the catalog; returns ``{"added", "removed"}`` counts."""
    ids, versions = cat.analysis_versions(index.model_id)
    present = index.track_ids()
    gone = np.setdiff1d(present, ids, assume_unique=True)
    new = np.setdiff1d(ids, present, assume_unique=True)
    redone = ids[versions > index.synced_version]
    todo = np.union1d(new, redone)
    if len(gone):
        index.remove(gone)
    if len(todo):
        index.add(todo, _vectors(cat, index.model_id, todo, index.dim))
    if len(versions):
        index.synced_version = max(index.synced_version, int(versions.max()))
    return {"added": int(len(todo)), "removed": int(len(gone))}


def build_index(cat: Catalog, model_id: str, *, config: IndexConfig = IndexConfig()) -> VectorIndex:
    """Build a fresh index over the catalog's ``ok`` analyses of ``model_id``."""
    info = cat.find_model(model_id)
    dim = info.dim if info else 0
    # one streaming read, not one query per 900 ids (100k vectors: 1 s vs 12 s on PostgreSQL)
    ids, versions, X = cat.index_rows(model_id)
    if not len(ids):
        X = np.zeros((0, dim), np.float32)
    elif X.shape[1] != dim:
        raise ModelMismatchError(f"model {model_id}: the catalog's embeddings are {X.shape[1]}-d, its model "
                                 f"row says {dim}-d; re-ingest with `soundalike ingest DIR --model "
                                 f"{info.name if info else model_id}`")
    return VectorIndex.build(ids, X, model_id=model_id, config=config,
                             synced_version=int(versions.max()) if len(versions) else 0)


def open_index(cat: Catalog, model_id: str, *, config: IndexConfig | None = None, rebuild: bool = False,
               save: bool = True) -> tuple[VectorIndex, dict[str, Any]]:
    """Load the persisted index of ``model_id`` (or build it), check it, bring it up to date.

    Parameters
    ----------
    cat : the open catalog
    model_id : the model whose embeddings to index
    config : build/search settings (default: those saved with the index, else defaults)
    rebuild : ignore any saved index and build from the catalog
    save : persist the index when it was built or changed

    Returns
    -------
    (index, report)
        ``report`` says what happened: ``{"action": "loaded"|"built"|"rebuilt"|"compacted",
        "added", "removed", "kind", "count", "dim"}``.

    Raises
    ------
    ModelMismatchError
        The saved index disagrees with the catalog's model (id or dimension); the
        message says to run ``soundalike index rebuild --model ...``.
    """
    info = cat.find_model(model_id)
    if info is None:
        raise CatalogError(f"{cat.path}: no model {model_id!r} in this catalog")
    directory = index_dir(cat)
    report: dict[str, Any] = {"action": "loaded", "added": 0, "removed": 0}
    index: VectorIndex | None = None
    if not rebuild:
        try:
            index = VectorIndex.load(directory, model_id, config=config)
        except FileNotFoundError:
            index = None
        except ModelMismatchError as exc:
            raise ModelMismatchError(str(exc).replace(f"--model {model_id}", f"--model {info.name}")) from exc
    if index is not None and index.dim != info.dim:
        raise ModelMismatchError(
            f"{directory}: index of model {model_id} holds {index.dim}-d vectors but the catalog's "
            f"embeddings are {info.dim}-d; {rebuild_hint(info.name, model_id)}")
    if index is None:
        t0 = time.perf_counter()
        index = build_index(cat, model_id, config=config or IndexConfig())
        report = {"action": "rebuilt" if rebuild else "built", "added": len(index), "removed": 0,
                  "build_s": round(time.perf_counter() - t0, 3)}
        changed = True
    else:
        report.update(sync(index, cat))
        changed = bool(report["added"] or report["removed"])
        cfg = index.config
        wrong_kind = cfg.kind_for(len(index)) != index.kind
        if wrong_kind or index.n_tombstones > cfg.max_tombstone_fraction * max(index.n_positions, 1):
            index = index.compacted()
            report["action"] = "compacted"
            changed = True
    report.update({"kind": index.kind, "count": len(index), "dim": index.dim})
    if changed and save:
        index.save(directory)
    return index, report


# --------------------------------------------------------------------------- per-process cache


@dataclass
class _Entry:
    index: VectorIndex
    token: int  # the catalog's change token the index (and its cached filters) is in step with


_CACHE: dict[tuple[str, str], _Entry] = {}
_CACHE_LOCK = threading.Lock()


def cached_index(cat: Catalog, model_id: str, *, token: int | None = None) -> VectorIndex:
    """The up-to-date index of ``model_id``, opened once per process and catalog.

    Compares the catalog's change token with the one the cached index was synced at,
    so calling it for every query is cheap and another process's commit is seen on the
    next call; cached filter selections are dropped on any change (tags may have moved).
    ``token``: the change token the caller has just read (it is not read again).
    """
    key = (cat.location, model_id)
    token = cat.change_token() if token is None else int(token)
    with _CACHE_LOCK:
        entry = _CACHE.get(key)
        if entry is not None and entry.token == token:
            return entry.index
        if entry is None:
            index, _ = open_index(cat, model_id)
            _CACHE[key] = _Entry(index, token)
            return index
        # read before the sync: a commit racing with it is seen again on the next call
        rep = sync(entry.index, cat)
        entry.index.clear_masks()
        entry.token = token
        if rep["added"] or rep["removed"]:
            entry.index.save(index_dir(cat))
        return entry.index


def forget_cached(catalog: Catalog | str | Path | None = None) -> None:
    """Drop cached indexes (of one catalog, or all)."""
    from soundalike.catalog.store import Catalog

    with _CACHE_LOCK:
        if catalog is None:
            _CACHE.clear()
            _SEGMENTS.clear()
            return
        from soundalike.catalog.backends import is_url, redact

        if isinstance(catalog, Catalog):
            loc = catalog.location
        else:
            loc = redact(str(catalog)) if is_url(catalog) else str(Path(catalog).resolve())
        for key in [k for k in _CACHE if k[0] == loc]:
            del _CACHE[key]
        for key in [k for k in _SEGMENTS if k[0] == loc]:
            del _SEGMENTS[key]


# --------------------------------------------------------------------------- segment vectors


@dataclass
class _SegmentEntry:
    index: Any  # SegmentIndex
    token: int


_SEGMENTS: dict[tuple[str, str], _SegmentEntry] = {}


def sync_segments(index, cat: Catalog) -> dict[str, int]:
    """Bring a :class:`~soundalike.search.index.SegmentIndex` up to date with the catalog:
    segments written since its ``synced_version`` are (re)read, tracks that lost theirs (or
    went missing) are dropped.  Returns ``{"added", "removed"}``."""
    present = cat.segment_ids(index.model_id)
    gone = np.setdiff1d(index.track_ids(), present, assume_unique=True)
    removed = index.remove(gone) if len(gone) else 0
    added = 0
    for tid, version, starts, V in list(cat.segment_rows(index.model_id, since_version=index.synced_version)):
        if V.shape[1] != index.dim:
            continue  # another length than the model's vectors: never compared
        index.put(tid, starts, V)
        index.synced_version = max(index.synced_version, version)
        added += 1
    return {"added": added, "removed": int(removed)}


def cached_segments(cat: Catalog, model_id: str):
    """The up-to-date :class:`~soundalike.search.index.SegmentIndex` of ``model_id`` in this
    process, or None when the catalog stores no segment vectors of it.

    Like :func:`cached_index`, it asks the catalog's change token on every call and reads
    only what changed since.
    """
    from soundalike.search.index import SegmentIndex

    key = (cat.location, model_id)
    token = cat.change_token()
    with _CACHE_LOCK:
        entry = _SEGMENTS.get(key)
        if entry is not None and entry.token == token:
            return entry.index if len(entry.index) else None
        if entry is None:
            info = cat.find_model(model_id)
            if info is None:
                return None
            entry = _SEGMENTS[key] = _SegmentEntry(SegmentIndex(model_id=model_id, dim=info.dim), -1)
        sync_segments(entry.index, cat)
        entry.token = token
        return entry.index if len(entry.index) else None
