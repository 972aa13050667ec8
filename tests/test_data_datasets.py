"""Dataset readers: folders, MTT annotations, generic tables, catalog labels; bad entries reported."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from soundalike.data.datasets import Manifest, read_dataset, read_folders, read_mtt, read_table
from soundalike.errors import DatasetError

SR = 8000


def _wav(path, seed=0, seconds=0.3):
    path.parent.mkdir(parents=True, exist_ok=True)
    y = np.random.default_rng(seed).standard_normal(int(SR * seconds)).astype(np.float32) * 0.1
    sf.write(path, y, SR)
    return path


def test_folders_one_label_per_subfolder(tmp_path):
    for lab in ("Blues", "rock"):
        for i in range(3):
            _wav(tmp_path / lab / f"{lab.lower()}.{i:05d}.wav", seed=i)
    (tmp_path / "rock" / "notes.txt").write_text("not audio")
    m = read_folders(tmp_path, category="genre")
    assert m.labels == ["blues", "rock"] and m.task == "single" and m.label_category == "genre"
    assert len(m) == 6 and all(len(it.labels) == 1 for it in m.items)
    assert {it.labels[0] for it in m.items if "/Blues/" in it.path} == {"blues"}
    assert list(m.targets()) == [0, 0, 0, 1, 1, 1]


def test_folders_group_pattern(tmp_path):
    for i, artist in enumerate(["ann", "ann", "bob"]):
        _wav(tmp_path / "x" / f"{artist}_{i}.wav", seed=i)
    m = read_folders(tmp_path, group_pattern=r"^([a-z]+)_")
    assert sorted(it.group for it in m.items) == ["ann", "ann", "bob"]


def test_folders_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        read_folders(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no audio"):
        read_folders(tmp_path)


def _mtt(tmp_path, n=12):
    tags = ["guitar", "classical", "slow", "rare"]
    lines = ["\t".join(['"clip_id"', *[f'"{t}"' for t in tags], '"mp3_path"'])]
    for i in range(n):
        rel = f"{i % 3}/artist-album-{i // 2:02d}-song-{(i % 2) * 30}-{(i % 2) * 30 + 29}.mp3"
        if i != 5:  # clip 5's file is missing
            _wav((tmp_path / rel).with_suffix(".mp3").with_suffix(".mp3"), seed=i)
        row = [i % 2, 1, int(i % 3 == 0), int(i == 0)]
        lines.append("\t".join([f'"{i}"', *[f'"{v}"' for v in row], f'"{rel}"']))
    f = tmp_path / "annotations_final.csv"
    f.write_text("\n".join(lines) + "\n")
    return f


def test_mtt_top_tags_groups_and_missing(tmp_path):
    f = _mtt(tmp_path)
    m = read_mtt(f, top_tags=2)
    assert m.task == "multi"
    assert m.labels == ["classical", "guitar"]  # the two most frequent
    assert any(p.endswith("song-30-59.mp3") and r == "file not found" for p, r in m.errors)
    assert len(m) == 11
    # the two 30-s clips of one song share a group
    groups = {it.group for it in m.items}
    assert len(groups) == 6 and all(g.startswith("artist-album-") for g in groups)
    Y = m.targets()
    assert Y.shape == (11, 2) and Y[:, 0].all()
    # auto-detection picks the MTT reader and its default of 50 tags keeps all four
    assert read_dataset(f).labels == ["classical", "guitar", "rare", "slow"]


def test_table_multi_valued_with_category(tmp_path):
    for i in range(4):
        _wav(tmp_path / "a" / f"{i}.wav", seed=i)
    (tmp_path / "meta.tsv").write_text(
        "file\tartist\tinstrument\n"
        "a/0.wav\tAnn\tinstrument=Piano|strings\n"
        "a/1.wav\tAnn\tinstrument=piano\n"
        "a/2.wav\tBob\tinstrument=strings|voice\n"
        "a/3.wav\tBob\t\n"
        "a/missing.wav\tBob\tinstrument=piano\n")
    m = read_table(tmp_path / "meta.tsv", label_column="instrument", group_column="artist")
    assert m.task == "multi" and m.label_category == "instrument"
    assert m.labels == ["piano", "strings", "voice"]
    assert [it.labels for it in m.items] == [("piano", "strings"), ("piano",), ("strings", "voice")]
    assert [it.group for it in m.items] == ["Ann", "Ann", "Bob"]
    reasons = dict((p.rsplit("/", 1)[-1], r) for p, r in m.errors)
    assert reasons == {"missing.wav": "file not found", "3.wav": "no labels"}
    with pytest.raises(DatasetError, match="several labels"):
        read_table(tmp_path / "meta.tsv", label_column="instrument", task="single")


def test_table_single_label_csv_auto(tmp_path):
    for i in range(3):
        _wav(tmp_path / f"{i}.wav", seed=i)
    (tmp_path / "labels.csv").write_text("path,genre\n0.wav,Jazz\n1.wav,rock\n2.wav,jazz\n")
    m = read_dataset(tmp_path / "labels.csv")
    assert m.task == "single" and m.label_category == "genre" and m.labels == ["jazz", "rock"]
    with pytest.raises(DatasetError, match="no label column 'mood'"):
        read_table(tmp_path / "labels.csv", label_column="mood")


def test_manifest_round_trip(tmp_path):
    for i in range(2):
        _wav(tmp_path / "l" / f"{i}.wav", seed=i)
    m = read_folders(tmp_path)
    m.errors.append(("/x.wav", "file not found"))
    m.save(tmp_path / "m.json")
    m2 = Manifest.load(tmp_path / "m.json")
    assert m2 == m


def test_catalog_labels(tmp_path):
    from soundalike.catalog.store import Catalog, Tag

    paths = [_wav(tmp_path / f"t{i}.wav", seed=i) for i in range(4)]
    with Catalog.open(tmp_path / "cat.sqlite") as cat:
        for i, p in enumerate(paths):
            tid = cat.upsert_track(path=str(p), content_hash=f"h{i}", size=1, mtime=0.0,
                                   artist=f"artist{i % 2}")
            if i < 3:
                cat.set_tags(tid, [Tag(["jazz", "rock", "jazz"][i], "genre", "file", 1.0, None)], source="file")
            cat.set_tags(tid, [Tag("calm", "mood", "user", 1.0, None)], source="user")
            cat.set_tags(tid, [Tag("pop", "genre", "model", 0.9, "m1")], source="model", model_id="m1")
    m = read_dataset(f"catalog:{tmp_path / 'cat.sqlite'}", category="genre", group_by="artist")
    assert m.labels == ["jazz", "rock"]  # model tags are not ground truth
    assert len(m) == 3 and [it.group for it in m.items] == ["artist0", "artist1", "artist0"]
    moods = read_dataset(tmp_path / "cat.sqlite", category="mood")
    assert moods.labels == ["calm"] and len(moods) == 4


def test_undecodable_files_are_reported_not_fatal(tmp_path):
    from soundalike.data.cache import FeatureCache
    from soundalike.models.families import make_config
    from soundalike.train.fit import prepare_tracks

    for i in range(3):
        _wav(tmp_path / "d" / "ok" / f"{i}.wav", seed=i)
    (tmp_path / "d" / "ok" / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (tmp_path / "d" / "ok" / "empty.mp3").write_bytes(b"")
    m = read_folders(tmp_path / "d")
    assert len(m) == 5
    cfg = make_config("mel-cnn", n_labels=1, sample_rate=SR)
    tracks = prepare_tracks(m, config=cfg, max_duration_s=10, cache=FeatureCache(tmp_path / "c"))
    assert len(tracks.data) == 3 and len(tracks.manifest) == 3
    bad = {p.rsplit("/", 1)[-1]: r for p, r in tracks.errors}
    assert set(bad) == {"broken.wav", "empty.mp3"} and "zero bytes" in bad["empty.mp3"]
