"""Ingest's group commit on real catalogs (a SQLite file and the private PostgreSQL server):
many finished files in one transaction, each in its own savepoint."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import BACKENDS, new_catalog_target
from soundalike.catalog.store import Catalog
from soundalike.ingest.pipeline import GroupCommitter, _commit, commit_group

DIM = 16
LABELS = [f"label{j}" for j in range(8)]
COMMIT = dict(model_id="m16", label_category="tag", top_tags=3)
#: columns that hold a time or the commit's change token: they differ between two runs
_VOLATILE = {"added_at", "updated_at", "created_at", "computed_at", "time", "version"}


def _results(n: int, *, tag: str = "f", seed: int = 3) -> list[dict]:
    from soundalike.audio.peaks import Peaks

    rng = np.random.default_rng(seed)
    attrs = {"duration_s": 30.0, "bpm": 120.0, "bpm_confidence": 0.8, "bpm_alternative": 60.0,
             "bpm_ambiguous": False, "key_tonic": 9, "key_mode": "minor", "camelot": "8A",
             "key_confidence": 0.7, "loudness_lufs": -12.0, "loudness_range_lu": 5.0, "vocals": 0.3,
             "energy": 0.5, "seconds_read": 30.0}
    out = []
    for i in range(n):
        out.append({"kind": "ok", "path": f"/music/{tag}/{i:03d}.ogg", "hash": f"{tag}{i}", "size": 100 + i,
                    "mtime": 1.0 + i, "inode": 1000 + i, "device": 7, "duration_s": 30.0, "sr": 44100,
                    "channels": 2, "format": "ogg",
                    "tags": {"title": f"t{i}", "artist": f"artist {i % 3}", "genre": "rock/pop", "year": 1990 + i},
                    "embedding": rng.standard_normal(DIM).astype(np.float32),
                    "predictions": dict(zip(LABELS, rng.random(len(LABELS)).tolist(), strict=True)),
                    "analysis": "spread:4", "attributes": attrs,
                    "peaks": Peaks(min=-rng.integers(0, 127, 50).astype(np.int8),
                                   max=rng.integers(0, 127, 50).astype(np.int8), duration_s=30.0)})
    return out


def _open(target) -> Catalog:
    cat = Catalog.open(target)
    cat.register_model(model_id="m16", name="m16", dim=DIM, labels=LABELS, label_category="tag")
    return cat


def _refused(res: dict) -> dict:
    # the database itself refuses this row: tracks.content_hash is NOT NULL on both backends
    return {**res, "hash": None}


def _rows(cat: Catalog) -> dict[str, list[tuple]]:
    out = {}
    for table, cols in cat.table_layout():
        if table == "counters":  # the change token: one bump per transaction, so fewer here
            continue
        keep = [c for c in cols if c not in _VOLATILE]
        out[table] = sorted((tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                             for batch in cat.read_table(table, keep) for r in batch), key=repr)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refused_file_rolls_back_alone_and_the_group_commits(backend, tmp_path, request):
    target = new_catalog_target(backend, tmp_path, request)
    results = _results(6)
    # the first file of the group is refused: it is also the one whose savepoint bumped the
    # change counter first, so the others must still be stamped with the commit's new token
    results[0] = _refused(results[0])
    results[3] = _refused(results[3])
    with _open(target) as cat:
        token = cat.change_token()
        outcomes = commit_group(cat, results, **COMMIT)
        assert [o is None for o in outcomes] == [False, True, True, False, True, True]
        assert outcomes[0][0] == "CatalogWriteError" and "content_hash" in outcomes[0][1]
    with Catalog.open(target) as cat:  # a fresh connection: what was committed
        paths = sorted(t.path for t in cat.iter_tracks())
        assert paths == sorted(r["path"] for i, r in enumerate(results) if i not in (0, 3))
        assert sorted(e.path for e in cat.errors()) == [results[0]["path"], results[3]["path"]]
        assert all("content_hash" in e.reason and e.error_type == "CatalogWriteError" for e in cat.errors())
        assert cat.change_token() > token
        changed = set(cat.changed_track_ids(token).tolist())  # what an index sync picks up
        assert {t.id for t in cat.iter_tracks()} <= changed
        assert len(cat.analyzed_ids("m16")) == 4
        for t in cat.iter_tracks():
            assert cat.get_peaks(t.id) is not None and cat.track_attributes(t.id)["bpm"] == 120.0
            assert {(g.tag, g.source) for g in cat.track_tags(t.id)} >= {("rock", "file"), ("pop", "file")}


@pytest.mark.parametrize("backend", BACKENDS)
def test_group_commit_writes_the_rows_per_file_commits_write(backend, tmp_path, request):
    results = _results(10)
    results.append({"kind": "error", "path": "/music/f/broken.mp3", "type": "AudioDecodeError",
                    "reason": "not an audio file", "size": 5, "mtime": 2.0})
    results.append({"kind": "touch", "path": results[1]["path"], "size": 999, "mtime": 9.0, "inode": 5, "device": 7})
    one = new_catalog_target(backend, tmp_path / "a", request)
    group = new_catalog_target(backend, tmp_path / "b", request)
    with _open(one) as cat:
        for res in results:  # the per-file path: one transaction each
            _commit(cat, res, **COMMIT)
        per_file = _rows(cat)
    with _open(group) as cat:
        assert commit_group(cat, results, **COMMIT) == [None] * len(results)
        grouped = _rows(cat)
    assert grouped == per_file
    assert len(grouped["tracks"]) == 10 and len(grouped["ingest_errors"]) == 1
    assert len(grouped["analyses"]) == 10 and grouped["tags"]
    (touched,) = [r for r in grouped["tracks"] if results[1]["path"] in r]
    assert 999 in touched  # the touch after the file's own commit, in the same group, applied


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_file_commit_refusing_a_file_still_raises_nothing_and_records_it(backend, tmp_path, request):
    # a group of one (the slow-trickle case) takes the same path: the refusal is that file's error
    target = new_catalog_target(backend, tmp_path, request)
    with _open(target) as cat:
        (why,) = commit_group(cat, [_refused(_results(1)[0])], **COMMIT)
        assert why is not None and cat.count_tracks() == 0 and len(cat.errors()) == 1
        _commit(cat, _results(1)[0], **COMMIT)  # the single-file commit still works after it
        assert cat.count_tracks() == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_committer_reports_a_file_done_only_once_its_group_committed(backend, tmp_path, request):
    target = new_catalog_target(backend, tmp_path, request)
    seen: list[tuple[str, bool, bool]] = []
    with _open(target) as cat, Catalog.open(target) as other:
        def done(res, failure):
            # another connection sees the file (or its error) at the moment it is reported done
            visible = other.track_by_path(res["path"]) is not None
            errored = res["path"] in other.error_states()
            seen.append((res["path"], failure is None, visible or errored))

        results = _results(7)
        results[5] = _refused(results[5])
        committer = GroupCommitter(cat, on_done=done, max_files=3, **COMMIT)
        committer(results[:1])  # one waiting: committed at once, a group of one
        assert committer.groups == 1 and len(seen) == 1
        committer(results[1:])  # six waiting, at most three a group
        assert committer.groups == 3
    assert [p for p, _, _ in seen] == [r["path"] for r in results]
    assert all(vis for _, _, vis in seen)
    assert [ok for _, ok, _ in seen] == [True] * 5 + [False, True]


def test_committer_groups_shrink_when_files_are_slow_to_commit(tmp_path):
    with _open(tmp_path / "c.sqlite") as cat:
        c = GroupCommitter(cat, on_done=lambda r, f: None, max_files=32, max_seconds=0.2, **COMMIT)
        assert c.bound() == 32
        c.per_file_s = 0.05  # 50 ms a file: four fit in 0.2 s
        assert c.bound() == 4
        c.per_file_s = 1.0
        assert c.bound() == 1
