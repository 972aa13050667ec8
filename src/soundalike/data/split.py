"""Track-level (and group-level) train/validation/test splits.

Splitting happens on *tracks*, before any chunking, so the windows of one track can
never sit on both sides (the classic leakage that inflates chunk-level accuracy).
With groups (artist, album, one MTT song's clips) whole groups move together.
Splits are stratified by label and reproducible from the seed.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundalike.data.datasets import Manifest
from soundalike.errors import DatasetError

SPLITS = ("train", "val", "test")
#: Tracks a label needs so that it can be in train, validation and test at least once.
MIN_TRACKS_PER_LABEL = 3


@dataclass(frozen=True)
class Split:
    """Item indices of a manifest per split (sorted int lists)."""

    train: list[int]
    val: list[int]
    test: list[int]
    seed: int = 0

    def __getitem__(self, name: str) -> list[int]:
        return getattr(self, name)

    def to_dict(self, manifest: Manifest | None = None) -> dict:
        d: dict = {"seed": self.seed, **{s: self[s] for s in SPLITS}}
        if manifest is not None:
            d["paths"] = {s: [manifest.items[i].path for i in self[s]] for s in SPLITS}
        return d

    def save(self, path: Path, manifest: Manifest | None = None) -> None:
        Path(path).write_text(json.dumps(self.to_dict(manifest), indent=1))

    @classmethod
    def load(cls, path: Path) -> Split:
        d = json.loads(Path(path).read_text())
        return cls(d["train"], d["val"], d["test"], d.get("seed", 0))


def split_manifest(manifest: Manifest, *, val_fraction: float = 0.1, test_fraction: float = 0.2,
                   seed: int = 0, use_groups: bool = True) -> Split:
    """Split tracks into train/val/test, stratified by label, keeping groups together.

    Parameters
    ----------
    manifest : the dataset
    val_fraction, test_fraction : wanted shares of tracks (per stratum, rounded; every
        stratum with at least 3 units gives one to val and test when the fraction is > 0)
    seed : the same seed and manifest always give the same split
    use_groups : keep items with the same ``group`` in one split (items without a group
        are their own group)

    Notes
    -----
    The unit of assignment is a group (or a track).  Units are stratified by their rarest
    label over the dataset (for single-label: the label), which keeps rare tags present
    in every split where possible.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DatasetError(f"bad split fractions: val={val_fraction}, test={test_fraction}")
    units: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(manifest.items):
        key = f"g:{it.group}" if (use_groups and it.group is not None) else f"t:{i}"
        units[key].append(i)
    freq = Counter(lab for it in manifest.items for lab in it.labels)

    def stratum(members: list[int]) -> str:
        labs = {lab for i in members for lab in manifest.items[i].labels}
        return min(labs, key=lambda lab: (freq[lab], lab))

    strata: dict[str, list[str]] = defaultdict(list)
    for key in sorted(units):
        strata[stratum(units[key])].append(key)
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for name in sorted(strata):
        keys = strata[name]
        order = rng.permutation(len(keys))
        n = len(keys)
        n_test = int(round(test_fraction * n))
        n_val = int(round(val_fraction * n))
        if n >= 3:
            n_test = max(n_test, 1 if test_fraction > 0 else 0)
            n_val = max(n_val, 1 if val_fraction > 0 else 0)
        n_test = min(n_test, max(n - 1, 0))
        n_val = min(n_val, max(n - 1 - n_test, 0))
        for rank, j in enumerate(order):
            s = "test" if rank < n_test else ("val" if rank < n_test + n_val else "train")
            out[s].extend(units[keys[j]])
    if not out["train"]:
        raise DatasetError("split left no training tracks; the dataset is too small")
    return Split(sorted(out["train"]), sorted(out["val"]), sorted(out["test"]), seed)


def split_warnings(manifest: Manifest, split: Split) -> list[str]:
    """Plain warnings about a split too small to measure anything, one line each.

    An empty validation split means model selection runs on the training tracks (its
    "val" scores measure memorisation: 1.0 on three tracks says nothing); an empty test
    split means no score at all; a label with fewer than :data:`MIN_TRACKS_PER_LABEL`
    tracks cannot be in every split.
    """
    out = []
    n = len(manifest.items)
    if not split.val:
        out.append(f"no validation tracks ({n} tracks in all): epochs are scored on the training tracks, "
                   f"so those scores measure memorisation, not generalisation")
    if not split.test:
        out.append(f"no test tracks ({n} tracks in all): the run gets no test score")
    counts = Counter(lab for it in manifest.items for lab in it.labels)
    few = sorted(lab for lab in manifest.labels if counts.get(lab, 0) < MIN_TRACKS_PER_LABEL)
    if few:
        shown = ", ".join(f"{lab} ({counts.get(lab, 0)})" for lab in few[:8]) + (" ..." if len(few) > 8 else "")
        out.append(f"{len(few)} label(s) have fewer than {MIN_TRACKS_PER_LABEL} tracks, too few for one "
                   f"each in train, validation and test: {shown}")
    return out
