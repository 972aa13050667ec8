"""``soundalike index adapt``: fit a catalog adaptation and give it a model id of its own.

:func:`adapt_catalog` fits a :class:`~soundalike.models.adapt.Adaptation` (default
``normalize``: catalog z-scoring, block re-normalisation, PCA) on the vectors the catalog
already stores for a base model, registers the adapted model
(``<base id>+adapt-<hash>``, name ``<base name>+adapt``), stores the adaptation and the
adapted vector of every track in the catalog.  Nothing is decoded.  From then on:

- ``similar``/``serve``/``listen`` compare the adapted vectors by default (the newest
  adaptation of the catalog's main model); ``--model <base name>`` still names the old ones;
- ``ingest`` adds the adapted vector of every new or re-analysed track as it commits it;
- an outside clip is analyzed by the base model and mapped through the adaptation;
- the tracks' segment vectors move into the adaptation's space
  (:func:`soundalike.search.segments.adapt_segments`).

Ingest adapts a catalog on its own once it holds :data:`AUTO_ADAPT_TRACKS` tracks of its
model and has no adaptation yet, and fits it again, with the same settings, each time the
model's tracks have grown :data:`AUTO_REFIT_GROWTH` times over what the newest adaptation was
fitted on (``ingest --no-adapt`` leaves it alone).  A refit's segment vectors come from the
one it replaces; an adaptation that ingest fitted by itself is then removed (it was never
asked for by name, and it is a worse fit of the same settings), one that ``index adapt``
made stays, reachable by its id.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Callable

import numpy as np

from soundalike.errors import CatalogError

if TYPE_CHECKING:
    from soundalike.catalog.store import Catalog

#: Ingest fits an adaptation by itself once a catalog holds this many tracks of its model.
AUTO_ADAPT_TRACKS = 200
#: Adapted vectors' length by default (PCA; at most the number of tracks - 1).
DEFAULT_DIM = 256
#: The mutual-nearest-neighbour step's k (0: off). Measured (README, "Similarity"): gamemusic
#: same-soundtrack P@10 0.582 -> 0.591 (higher in each leave-one-soundtrack-out fold),
#: Philharmonia same-instrument P@10 0.705 -> 0.727; k = 10 and a stronger weight did less.
DEFAULT_NEIGHBOURS = 5
#: The signed power taken of the mean-pool blocks of a fused vector before anything else
#: (1: none; :func:`soundalike.models.adapt.signed_power`).  Measured (README, "Similarity",
#: power normalisation): 0.5 lifts gamemusic same-soundtrack P@10 through the default
#: pipeline 0.622 -> 0.638 but lowers same-track segment P@1 0.902 -> 0.896 (target 0.90)
#: and Philharmonia 0.744 -> 0.742, so it is opt-in (``index adapt --power 0.5``).
DEFAULT_POWER = 1.0
#: Ingest fits the adaptation again once its model's tracks have grown this many times over
#: the tracks the newest adaptation was fitted on (a 200-track fit keeps at most 199
#: principal directions and the statistics of its first tracks; README, "Similarity").
AUTO_REFIT_GROWTH = 2.0


def _powers_of(name: str, power: float) -> tuple[float, ...] | None:
    """Per-block exponents for model ``name``: ``power`` for a fused layout's mean-pool
    blocks, 1 for the rest; None (no step) for a single model or ``power`` 1."""
    from soundalike.models.fusion import LAYOUTS
    from soundalike.models.zoo import split_precision

    name = split_precision(name)[0]
    if power == 1.0 or name not in LAYOUTS:
        return None
    return tuple(power if layer == "mean_pool" else 1.0 for _, layer in LAYOUTS[name])


@dataclass(frozen=True)
class AdaptReport:
    """What :func:`adapt_catalog` did."""

    base_model_id: str
    base_name: str
    model_id: str
    name: str
    method: str
    tracks: int
    dim: int
    fit_s: float
    write_s: float
    #: tracks whose segment vectors (segment-aware search) were mapped into the adaptation
    segment_tracks: int = 0
    #: the signed power taken of the fused mean-pool blocks first (1: none)
    power: float = 1.0
    #: fitted by ingest on its own (:func:`maybe_auto_adapt`), not asked for
    auto: bool = False
    #: the adaptation this fit replaced and removed (an earlier automatic fit), if any
    replaced: str | None = None
    #: tracks the adaptation it was refitted from had been fitted on (0: a first fit)
    refit_from_tracks: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _blocks_of(name: str) -> tuple[int, ...]:
    from soundalike.models.fusion import LAYOUTS, block_dims
    from soundalike.models.zoo import split_precision

    # every stored fused layout, at any precision (musicnn-fusion@mixed-ef is the ingest default)
    name = split_precision(name)[0]
    return block_dims(name) if name in LAYOUTS else ()


def adapt_catalog(cat: Catalog, *, model: str | None = None, method: str = "normalize",
                  dim: int = DEFAULT_DIM, seed: int = 0, neighbours: int = DEFAULT_NEIGHBOURS,
                  power: float = DEFAULT_POWER, auto: bool = False) -> AdaptReport:
    """Fit an adaptation of ``model``'s vectors in ``cat`` and store the adapted model.

    Parameters
    ----------
    cat : the open catalog
    model : base model name or id (default: the catalog's most used plain model)
    method : ``"normalize"`` (the only one fitted on stored track vectors alone)
    dim : adapted vector length (at most ``n_tracks - 1`` and the base length)
    seed : recorded for reproducibility (``normalize`` is deterministic)
    neighbours : the mutual-nearest-neighbour step's k (0: PCA alone; see
        :func:`soundalike.models.adapt.fit_neighbour_lpp`); the adapted vectors are then
        ``dim`` plus at most 64 longer
    power : the signed power taken of a fused model's mean-pool blocks first (1: none;
        :func:`soundalike.models.adapt.signed_power`; a single model's vectors: ignored)
    auto : recorded with the adaptation: fitted by ingest on its own, so a later automatic
        refit may remove it (:func:`maybe_auto_adapt`)

    Returns
    -------
    AdaptReport

    Raises
    ------
    CatalogError
        No such model, it is itself an adaptation, or fewer than 3 analysed tracks.
    ConfigError
        An unknown method.
    """
    from soundalike.errors import ConfigError
    from soundalike.models.adapt import fit
    from soundalike.search.sync import model_info

    if method != "normalize":
        raise ConfigError(f"adaptation method {method!r} needs per-segment vectors the catalog does not "
                          f"store; use normalize (the one that measured best, see the README)")
    if model is None:
        base_id = cat.default_model_id()
        if base_id is None:
            raise CatalogError(f"{cat.path}: no analysed tracks; run `soundalike ingest DIR` first")
        model = base_id
    info = model_info(cat, model)
    if cat.get_adaptation(info.model_id) is not None:
        raise CatalogError(f"{info.name} ({info.model_id}) is itself an adaptation; name its base model")
    t0 = time.perf_counter()
    ids, X = cat.embeddings(info.model_id)
    if len(ids) < 3:
        raise CatalogError(f"{cat.path}: adapting {info.name} needs at least 3 analysed tracks, "
                           f"it has {len(ids)}")
    a = fit(X, base_model_id=info.model_id, method="normalize", dim=dim, seed=seed,
            blocks=_blocks_of(info.name), neighbours=neighbours, power=_powers_of(info.name, power))
    # what was asked, so that a refit asks the same (params["dim"] is what the tracks allowed)
    a = replace(a, params={**a.params, "settings": {"dim": int(dim), "neighbours": int(neighbours),
                                                    "power": float(power), "seed": int(seed)},
                           "auto": bool(auto)})
    Y = a.apply(X)
    t1 = time.perf_counter()
    name = f"{info.name}+adapt"
    with cat.transaction():
        cat.register_model(model_id=a.model_id, name=name, dim=a.dim, labels=info.labels,
                           label_category=info.label_category)
        cat.put_adaptation(model_id=a.model_id, base_model_id=info.model_id, method=a.method,
                           data=a.to_bytes())
        cat.put_analyses(a.model_id, ids, Y, settings=cat.analysis_settings(info.model_id))
    from soundalike.search.segments import adapt_segments

    seg = adapt_segments(cat, a)
    if seg["dropped_base"]:
        cat.reclaim_space()  # the base model's 1906-d segments were most of the file
    return AdaptReport(info.model_id, info.name, a.model_id, name, a.method, int(len(ids)), a.dim,
                       round(t1 - t0, 3), round(time.perf_counter() - t1, 3),
                       seg["from_base"] + seg["mapped"], power if a.power is not None else 1.0, auto)


def catalog_size(cat: Catalog) -> int:
    """Bytes the catalog takes on disk (the SQLite file and its WAL), 0 if unknown."""
    total = 0
    for suffix in ("", "-wal"):
        p = f"{cat.path}{suffix}"
        if os.path.exists(p):
            total += os.path.getsize(p)
    return total


def settings_of(adaptation) -> dict:
    """What :func:`adapt_catalog` was asked for when it fitted ``adaptation``: ``{"dim",
    "neighbours", "power", "seed"}`` (recorded since refits exist; read back from the fit
    for older ones)."""
    p = adaptation.params
    if "settings" in p:
        return dict(p["settings"])
    pw = p.get("power")
    return {"dim": DEFAULT_DIM,
            "neighbours": int(p.get("neighbours", 0 if adaptation.lpp_W is None else DEFAULT_NEIGHBOURS)),
            "power": float(min(pw) if isinstance(pw, list) else (pw or 1.0)), "seed": 0}


def refit_at(fitted_on: int, *, min_tracks: int = AUTO_ADAPT_TRACKS,
             growth: float = AUTO_REFIT_GROWTH) -> int | None:
    """The model's track count at which ingest fits again an adaptation fitted on
    ``fitted_on`` tracks: ``growth`` times them, at least ``min_tracks``; None with refits
    off (``growth`` 0) or an adaptation that does not say."""
    if growth <= 0 or fitted_on <= 0:
        return None
    return max(int(min_tracks), math.ceil(growth * fitted_on))


def maybe_auto_adapt(cat: Catalog, *, model_id: str, min_tracks: int = AUTO_ADAPT_TRACKS,
                     growth: float = AUTO_REFIT_GROWTH,
                     on_fit: Callable[[int, int], None] | None = None) -> AdaptReport | None:
    """Adapt ``model_id`` as ingest does after a run; None if nothing was due.

    - No adaptation yet: fit one once the catalog holds ``min_tracks`` of its tracks.
    - Else, once the model's tracks are ``growth`` times those the newest adaptation was
      fitted on: fit again with its settings.  The segment vectors move over from it, and
      every earlier automatic fit is removed (``index adapt``'s are kept).
      ``growth`` 0 turns refits off.

    ``on_fit(tracks, last_fit_tracks)`` is called just before a fit starts (0: a first fit),
    so that a caller can say what takes the time (minutes at 10,000 tracks).
    """
    from soundalike.models.adapt import Adaptation
    from soundalike.search.sync import index_dir

    if cat.get_adaptation(model_id) is not None:  # an adaptation itself
        return None
    n = cat.count_analyses(model_id)
    existing = cat.adaptations(model_id)
    if not existing:
        if n < min_tracks:
            return None
        if on_fit is not None:
            on_fit(n, 0)
        return adapt_catalog(cat, model=model_id, auto=True)
    newest = Adaptation.from_bytes(existing[0].data)
    fitted_on = int(newest.params.get("tracks", 0))
    due = refit_at(fitted_on, min_tracks=min_tracks, growth=growth)
    if due is None or n < due:
        return None
    if on_fit is not None:
        on_fit(n, fitted_on)
    rep = adapt_catalog(cat, model=model_id, auto=True, **settings_of(newest))
    # every earlier automatic fit is superseded (two ingests may each have fitted one)
    gone = []
    for old in existing:
        if old.model_id == rep.model_id:
            continue
        if not (newest if old is existing[0] else Adaptation.from_bytes(old.data)).params.get("auto"):
            continue  # index adapt's own: kept
        try:
            cat.delete_adaptation(old.model_id)
        except CatalogError:  # another ingest (another machine's, on PostgreSQL) removed it first
            continue
        stem = index_dir(cat) / _index_stem(old.model_id)
        for ext in (".faiss", ".ids.npy", ".json"):
            Path(str(stem) + ext).unlink(missing_ok=True)
        gone.append(old.model_id)
    if gone:
        cat.reclaim_space()
    replaced = existing[0].model_id if existing[0].model_id in gone else None
    return replace(rep, replaced=replaced, refit_from_tracks=fitted_on)


def adaptation_status(cat: Catalog, *, min_tracks: int = AUTO_ADAPT_TRACKS,
                      growth: float = AUTO_REFIT_GROWTH) -> list[dict]:
    """Each plain model with analyses: its adaptations and when ingest fits one next.

    One dict per base model, most used first: ``base_model_id``, ``name``, ``tracks``,
    ``adaptations`` (newest first: ``model_id``, ``dim``, ``tracks`` fitted on, ``auto``
    -- fitted by ingest itself, not by ``index adapt`` -- and ``created_at``) and
    ``next_fit_at``: the track count at which ingest (with ``--adapt-at min_tracks``) fits
    again, None with refits off.
    """
    from soundalike.models.adapt import Adaptation

    adapted = {a.model_id for a in cat.adaptations()}
    out = []
    for m in cat.models():
        if m.model_id in adapted or m.n_tracks == 0:
            continue
        fits = []
        for a in cat.adaptations(m.model_id):
            fit = Adaptation.from_bytes(a.data)
            fits.append({"model_id": a.model_id, "dim": int(fit.dim), "tracks": int(fit.params.get("tracks", 0)),
                         "auto": bool(fit.params.get("auto", False)), "created_at": a.created_at})
        nxt = refit_at(fits[0]["tracks"], min_tracks=min_tracks, growth=growth) if fits else int(min_tracks)
        out.append({"base_model_id": m.model_id, "name": m.name, "tracks": m.n_tracks, "adaptations": fits,
                    "next_fit_at": nxt})
    return out


def _index_stem(model_id: str) -> str:
    from soundalike.search.index import _safe_name

    return _safe_name(model_id)
