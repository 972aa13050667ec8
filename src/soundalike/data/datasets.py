"""Dataset readers: every labeled-audio layout becomes one :class:`Manifest`.

A manifest is a list of :class:`Item` — one per *track* (audio file) — with its
labels and an optional *group* (artist, album, recording session...) that splits
keep together.  Readers never decode audio; a missing file is recorded in
``Manifest.errors`` and skipped, and an undecodable one is recorded later, when
features are extracted (see :mod:`soundalike.train.fit`).

Layouts
-------
``folders``   ``ROOT/<label>/<file>`` (GTZAN's ``genres/blues/blues.00000.au``).
``mtt``       MagnaTagATune ``annotations_final.csv``: tab-separated, ``clip_id``,
              one 0/1 column per tag, ``mp3_path`` (relative to the audio root).
``table``     a generic CSV/TSV with a path column and a label column; a label cell
              may hold several values separated by ``|`` (``piano|strings``) and may
              name its category (``instrument=piano|strings``).
``catalog``   labels already in a soundalike catalog (file genre tags, user tags).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from soundalike.errors import DatasetError

Task = Literal["single", "multi"]
DatasetFormat = Literal["auto", "folders", "mtt", "table", "catalog"]
DATASET_FORMATS: tuple[str, ...] = ("auto", "folders", "mtt", "table", "catalog")

#: Column names a generic table may use for the audio path (first match wins).
PATH_COLUMNS = ("path", "file", "filename", "filepath", "audio", "mp3_path", "track")
#: Column names a generic table may use for the group (``--group-by`` overrides).
LABEL_SEPARATOR = "|"


@dataclass(frozen=True)
class Item:
    """One track of a dataset.

    Attributes
    ----------
    path : absolute path of the audio file
    labels : its labels (one for single-label tasks), lower-case
    group : what must stay in one split with it (artist, album...), or ``None``
    """

    path: str
    labels: tuple[str, ...]
    group: str | None = None


@dataclass
class Manifest:
    """A labeled dataset: items, the label vocabulary and what went wrong reading it.

    Attributes
    ----------
    items : tracks that exist and have at least one label
    labels : sorted label vocabulary (model output order)
    task : ``"single"`` (exactly one label per item) or ``"multi"``
    label_category : catalog tag category the labels belong to ("genre", "instrument", ...)
    source : where it came from (a path or "catalog:PATH")
    errors : ``(path, reason)`` for each entry that was skipped
    """

    items: list[Item]
    labels: list[str]
    task: Task
    label_category: str = "tag"
    source: str = ""
    errors: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def label_counts(self) -> dict[str, int]:
        c = Counter(lab for it in self.items for lab in it.labels)
        return {lab: c.get(lab, 0) for lab in self.labels}

    def targets(self):
        """Targets as NumPy: int64 ``(n,)`` class indices (single) or float32 ``(n, n_labels)`` 0/1 (multi)."""
        import numpy as np

        index = {lab: i for i, lab in enumerate(self.labels)}
        if self.task == "single":
            return np.array([index[it.labels[0]] for it in self.items], np.int64)
        Y = np.zeros((len(self.items), len(self.labels)), np.float32)
        for r, it in enumerate(self.items):
            for lab in it.labels:
                if lab in index:
                    Y[r, index[lab]] = 1.0
        return Y

    def subset(self, indices) -> Manifest:
        """A manifest of the given items, same vocabulary and task."""
        return Manifest([self.items[i] for i in indices], list(self.labels), self.task,
                        self.label_category, self.source, [])

    def to_dict(self) -> dict:
        return {"source": self.source, "task": self.task, "label_category": self.label_category,
                "labels": self.labels, "items": [asdict(it) for it in self.items],
                "errors": [list(e) for e in self.errors]}

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        items = [Item(it["path"], tuple(it["labels"]), it.get("group")) for it in d["items"]]
        return cls(items, list(d["labels"]), d["task"], d.get("label_category", "tag"),
                   d.get("source", ""), [tuple(e) for e in d.get("errors", [])])

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> Manifest:
        return cls.from_dict(json.loads(Path(path).read_text()))


# --------------------------------------------------------------------------- helpers


def _norm_label(s: str) -> str:
    return " ".join(s.strip().lower().split())


def _finish(items: list[Item], errors: list[tuple[str, str]], *, task: Task | None,
            category: str, source: str, top_tags: int | None = None,
            labels: list[str] | None = None) -> Manifest:
    """Drop unlabeled items, pick the vocabulary, infer or check the task."""
    if top_tags is not None:
        counts = Counter(lab for it in items for lab in it.labels)
        keep = {lab for lab, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_tags]}
        items = [Item(it.path, tuple(lab for lab in it.labels if lab in keep), it.group) for it in items]
    labeled: list[Item] = []
    for it in items:
        if it.labels:
            labeled.append(it)
        else:
            errors.append((it.path, "no labels"))
    if not labeled:
        raise DatasetError(f"{source}: no labeled audio files found")
    inferred: Task = "multi" if any(len(it.labels) > 1 for it in labeled) else "single"
    if task is None:
        task = inferred
    elif task == "single" and inferred == "multi":
        raise DatasetError(f"{source}: some tracks have several labels; use --task multi")
    vocab = labels if labels is not None else sorted({lab for it in labeled for lab in it.labels})
    return Manifest(labeled, vocab, task, category, source, errors)


def _existing(path: Path, errors: list[tuple[str, str]]) -> bool:
    if not path.exists():
        errors.append((str(path), "file not found"))
        return False
    if path.is_dir():
        errors.append((str(path), "is a directory, not an audio file"))
        return False
    return True


def _group_from_name(pattern: str | None, path: Path) -> str | None:
    if not pattern:
        return None
    m = re.search(pattern, path.stem)
    if not m:
        return path.stem
    return m.group(1) if m.groups() else m.group(0)


# --------------------------------------------------------------------------- readers


def read_folders(root: str | Path, *, category: str = "tag", task: Task | None = "single",
                 group_pattern: str | None = None) -> Manifest:
    """Folder-per-label: ``ROOT/<label>/**/<audio file>``.

    Parameters
    ----------
    root : directory whose sub-directories are the labels
    category : catalog tag category of the labels
    task : the only sensible one here is ``"single"``
    group_pattern : optional regular expression applied to each file's stem; its first
        capture group (or whole match) is the item's group, e.g. ``'^([a-z-]+)_'``

    Raises
    ------
    DatasetError
        When ``root`` is not a directory or holds no audio in label folders.
    """
    from soundalike.audio.io import is_audio_path

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory")
    items: list[Item] = []
    errors: list[tuple[str, str]] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = _norm_label(sub.name)
        for f in sorted(sub.rglob("*")):
            if f.is_file() and is_audio_path(f):
                items.append(Item(str(f.resolve()), (label,), _group_from_name(group_pattern, f)))
    if not items:
        raise DatasetError(f"{root}: no audio files in label sub-folders (expected ROOT/<label>/<file>)")
    return _finish(items, errors, task=task, category=category, source=str(root))


def _sniff_delimiter(path: Path, head: str) -> str:
    if path.suffix.lower() == ".tsv" or "\t" in head.splitlines()[0]:
        return "\t"
    return ","


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read table ({exc})") from exc
    if not text.strip():
        raise DatasetError(f"{path}: empty table")
    delim = _sniff_delimiter(path, text)
    reader = csv.DictReader(text.splitlines(), delimiter=delim)
    header = [h.strip() for h in (reader.fieldnames or [])]
    rows = [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]
    return header, rows


def is_mtt_table(path: Path) -> bool:
    """Whether a file looks like MagnaTagATune's ``annotations_final.csv``."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError):
        return False
    cols = [c.strip().strip('"') for c in first.split("\t")]
    return "clip_id" in cols and "mp3_path" in cols


def read_mtt(path: str | Path, *, audio_root: str | Path | None = None, top_tags: int | None = 50,
             category: str = "tag") -> Manifest:
    """MagnaTagATune ``annotations_final.csv``: tab-separated ``clip_id``, 0/1 tag columns, ``mp3_path``.

    Parameters
    ----------
    path : the annotations file
    audio_root : folder the ``mp3_path`` values are relative to (default: the file's folder)
    top_tags : keep only the most frequent tags (50 in the classic experiment; ``None``: all)

    Clips left without any kept tag are skipped (recorded as "no labels").
    The group is the clip's album-less track name before the clip number, so clips of one
    song (``.../artist-album-01-song-0-29.mp3``, ``...-30-59.mp3``) stay in one split.
    """
    path = Path(path).expanduser()
    header, rows = _read_rows(path)
    header = [h.strip('"') for h in header]
    if "clip_id" not in header or "mp3_path" not in header:
        raise DatasetError(f"{path}: not an MTT annotations file (needs clip_id and mp3_path columns)")
    root = Path(audio_root).expanduser() if audio_root else path.parent
    tags = [h for h in header if h not in ("clip_id", "mp3_path")]
    items: list[Item] = []
    errors: list[tuple[str, str]] = []
    for row in rows:
        row = {k.strip('"'): v.strip().strip('"') for k, v in row.items()}
        rel = row.get("mp3_path", "")
        if not rel:
            errors.append((f"clip {row.get('clip_id', '?')}", "empty mp3_path"))
            continue
        f = root / rel
        if not _existing(f, errors):
            continue
        labels = tuple(_norm_label(t) for t in tags if row.get(t, "0") not in ("0", "", "0.0"))
        group = re.sub(r"-\d+-\d+$", "", Path(rel).stem)
        items.append(Item(str(f.resolve()), labels, group))
    return _finish(items, errors, task="multi", category=category, source=str(path), top_tags=top_tags)


def _split_cell(cell: str, column: str) -> tuple[str | None, list[str]]:
    """``"instrument=piano|strings"`` -> ``("instrument", ["piano", "strings"])``."""
    cat = None
    if "=" in cell:
        cat, cell = cell.split("=", 1)
        cat = _norm_label(cat)
    vals = [_norm_label(v) for v in cell.split(LABEL_SEPARATOR)]
    return cat, [v for v in vals if v]


def read_table(path: str | Path, *, label_column: str | None = None, path_column: str | None = None,
               group_column: str | None = None, category: str | None = None,
               task: Task | None = None, audio_root: str | Path | None = None,
               top_tags: int | None = None) -> Manifest:
    """A generic CSV/TSV: one row per track, a path column and a label column.

    Parameters
    ----------
    path : ``.csv`` (comma) or ``.tsv`` (tab) file with a header row
    label_column : column holding the labels (default: the first column that is neither
        the path nor the group column); cells may hold ``a|b`` or ``category=a|b``
    path_column : column with the audio path (default: the first of :data:`PATH_COLUMNS`)
    group_column : column naming the item's group (``--group-by artist``)
    category : tag category (default: the ``category=`` prefix of the cells, else the
        label column's name)
    task : ``"single"``/``"multi"``; ``None`` infers it (multi when any row has several labels)
    audio_root : folder relative paths are resolved against (default: the table's folder)
    """
    path = Path(path).expanduser()
    header, rows = _read_rows(path)
    lower = {h.lower(): h for h in header}
    if path_column is None:
        path_column = next((lower[c] for c in PATH_COLUMNS if c in lower), None)
        if path_column is None:
            raise DatasetError(f"{path}: no path column (one of {', '.join(PATH_COLUMNS)}); "
                               f"columns are {', '.join(header)}")
    elif path_column not in header:
        raise DatasetError(f"{path}: no column {path_column!r}; columns are {', '.join(header)}")
    if group_column is not None and group_column not in header:
        raise DatasetError(f"{path}: no group column {group_column!r}; columns are {', '.join(header)}")
    if label_column is None:
        label_column = next((h for h in header if h not in (path_column, group_column)), None)
        if label_column is None:
            raise DatasetError(f"{path}: no label column")
    elif label_column not in header:
        raise DatasetError(f"{path}: no label column {label_column!r}; columns are {', '.join(header)}")
    root = Path(audio_root).expanduser() if audio_root else path.parent
    items: list[Item] = []
    errors: list[tuple[str, str]] = []
    cats: Counter[str] = Counter()
    for n, row in enumerate(rows, start=2):
        rel = row.get(path_column, "").strip()
        if not rel:
            errors.append((f"{path}:{n}", "empty path"))
            continue
        f = Path(rel).expanduser()
        f = f if f.is_absolute() else root / f
        if not _existing(f, errors):
            continue
        cat, labels = _split_cell(row.get(label_column, ""), label_column)
        if cat:
            cats[cat] += 1
        group = row.get(group_column, "").strip() or None if group_column else None
        items.append(Item(str(f.resolve()), tuple(dict.fromkeys(labels)), group))
    if category is None:
        category = cats.most_common(1)[0][0] if cats else _norm_label(label_column)
    return _finish(items, errors, task=task, category=category, source=str(path), top_tags=top_tags)


#: Catalog track fields ``--group-by`` may name.
CATALOG_GROUP_FIELDS = ("artist", "album", "genre", "year")


def read_catalog(catalog_path: str | Path, *, category: str = "genre",
                 sources: tuple[str, ...] = ("file", "user"), group_by: str | None = None,
                 task: Task | None = None, top_tags: int | None = None) -> Manifest:
    """Labels already in a catalog: tags of one category from the given sources.

    Parameters
    ----------
    catalog_path : a soundalike catalog (a SQLite file or a ``postgresql://`` URL)
    category : tag category to learn ("genre", "mood", "instrument", "artist", "tag")
    sources : tag sources to trust ("file" tags read from files, "user" tags)
    group_by : a track field (:data:`CATALOG_GROUP_FIELDS`) whose value is the group
    """
    from soundalike.catalog.store import Catalog

    if group_by is not None and group_by not in CATALOG_GROUP_FIELDS:
        raise DatasetError(f"--group-by for a catalog must be one of {', '.join(CATALOG_GROUP_FIELDS)}")
    items: list[Item] = []
    errors: list[tuple[str, str]] = []
    from soundalike.paths import catalog_target

    with Catalog.open(catalog_target(catalog_path)) as cat:
        for track in cat.iter_tracks(status="ok"):
            tags = [t for t in cat.track_tags(track.id, sources=list(sources)) if t.category == category]
            labels = tuple(dict.fromkeys(_norm_label(t.tag) for t in tags))
            if not labels:
                continue
            if not _existing(Path(track.path), errors):
                continue
            group = getattr(track, group_by) if group_by else None
            items.append(Item(str(track.path), labels, None if group is None else str(group)))
    return _finish(items, errors, task=task, category=category, source=f"catalog:{catalog_path}",
                   top_tags=top_tags)


def read_dataset(spec: str | Path, *, fmt: DatasetFormat = "auto", task: Task | None = None,
                 category: str | None = None, group_by: str | None = None,
                 top_tags: int | None = None, label_column: str | None = None,
                 audio_root: str | Path | None = None) -> Manifest:
    """Read any supported layout (see the module docstring) into a :class:`Manifest`.

    ``fmt="auto"`` picks: a directory -> ``folders``; ``catalog:PATH`` or a ``.sqlite``/``.db``
    file -> ``catalog``; a tab-separated file with ``clip_id`` and ``mp3_path`` -> ``mtt``;
    any other ``.csv``/``.tsv`` -> ``table``.  ``group_by`` is a regular expression on the
    file stem for folders, a column for tables, a track field for a catalog; ignored for MTT
    (clips of one song are always grouped).
    """
    s = str(spec)
    if fmt not in DATASET_FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}: choose one of {', '.join(DATASET_FORMATS)}")
    if fmt == "auto":
        p = Path(s.removeprefix("catalog:")).expanduser()
        from soundalike.paths import is_catalog_url

        if (s.startswith("catalog:") or is_catalog_url(s) or
                p.suffix.lower() in (".sqlite", ".db", ".sqlite3")):
            fmt = "catalog"
        elif p.is_dir():
            fmt = "folders"
        elif not p.exists():
            raise DatasetError(f"{p}: no such file or directory")
        elif is_mtt_table(p):
            fmt = "mtt"
        elif p.suffix.lower() in (".csv", ".tsv", ".txt"):
            fmt = "table"
        else:
            raise DatasetError(f"{p}: not a folder, a CSV/TSV table or a catalog")
    if fmt == "folders":
        return read_folders(s, category=category or "tag", task=task or "single", group_pattern=group_by)
    if fmt == "mtt":
        return read_mtt(s, audio_root=audio_root, top_tags=top_tags if top_tags is not None else 50,
                        category=category or "tag")
    if fmt == "table":
        return read_table(s, label_column=label_column, group_column=group_by, category=category,
                          task=task, audio_root=audio_root, top_tags=top_tags)
    return read_catalog(s.removeprefix("catalog:"), category=category or "genre", group_by=group_by,
                        task=task, top_tags=top_tags)
