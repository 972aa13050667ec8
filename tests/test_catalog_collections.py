"""Peaks, favourites, saved playlists, page orders and file-name search in the catalog,
on each backend (SQLite and PostgreSQL), through the named Catalog methods."""

from __future__ import annotations

import numpy as np
import pytest

from soundalike.audio.peaks import Peaks
from soundalike.catalog.store import Catalog
from soundalike.errors import CatalogError, TrackNotFoundError


def _tracks(cat: Catalog) -> list[int]:
    rows = [("/m/Lounge/a_banjo_tune.mp3", "Sunny Road", 30.0), ("/m/banjo/b.mp3", "395", 200.0),
            ("/m/x/c.flac", "Road Trip", 95.5), ("/m/x/d.ogg", None, 12.0)]
    return [cat.upsert_track(path=p, content_hash=f"h{i}", size=1, mtime=1.0, duration_s=d, title=t)
            for i, (p, t, d) in enumerate(rows)]


def test_peaks_are_stored_and_go_stale_with_the_file(catalog_target):
    with Catalog.open(catalog_target) as cat:
        a, b, *_ = _tracks(cat)
        assert set(cat.ids_without_peaks()) == set(_tracks(cat))
        p = Peaks(min=np.array([-3, -127], np.int8), max=np.array([5, 127], np.int8), duration_s=30.0)
        cat.put_peaks(a, p)
        got = cat.get_peaks(a)
        assert got.min.tolist() == [-3, -127] and got.max.tolist() == [5, 127] and got.duration_s == 30.0
        assert a not in cat.ids_without_peaks() and cat.get_peaks(b) is None
        cat.put_peaks(a, Peaks(min=np.array([0], np.int8), max=np.array([1], np.int8), duration_s=30.0))
        assert cat.get_peaks(a).max.tolist() == [1]  # replaced
        cat.upsert_track(path="/m/Lounge/a_banjo_tune.mp3", content_hash="new", size=1, mtime=2.0)
        assert cat.get_peaks(a) is None and a in cat.ids_without_peaks()  # the file changed
        with pytest.raises(TrackNotFoundError):
            cat.put_peaks(99999, p)


def test_favourites(catalog_target):
    with Catalog.open(catalog_target) as cat:
        a, b, c, d = _tracks(cat)
        for t in (b, a, c):
            cat.set_favourite(t, True)
        cat.set_favourite(b, True)  # again: keeps its first time
        assert cat.favourite_ids() == [c, a, b]
        cat.set_favourite(a, False)
        cat.set_favourite(d, False)  # never was one
        assert cat.favourite_ids() == [c, b]
        cat.mark_missing([c])
        assert cat.favourite_ids() == [b]  # a missing file is not offered


def test_playlists(catalog_target):
    with Catalog.open(catalog_target) as cat:
        a, b, c, d = _tracks(cat)
        p = cat.create_playlist("  Road   trip ")
        assert p.name == "Road trip" and p.n_tracks == 0
        with pytest.raises(CatalogError, match="exists already"):
            cat.create_playlist("road TRIP")
        with pytest.raises(CatalogError):
            cat.create_playlist("   ")
        assert cat.add_to_playlist(p.id, [c, a, c]) == 2
        assert cat.add_to_playlist(p.id, [a, d]) == 1
        assert cat.playlist_track_ids(p.id) == [c, a, d]
        assert cat.remove_from_playlist(p.id, a) == 1 and cat.remove_from_playlist(p.id, a) == 0
        assert cat.add_to_playlist(p.id, [a]) == 1  # back at the end
        assert cat.playlist_track_ids(p.id) == [c, d, a]
        q = cat.create_playlist("other")
        cat.add_to_playlist(q.id, [b])
        assert [x.name for x in cat.playlists()] == ["other", "Road trip"]  # last changed first
        assert cat.playlist(p.id).n_tracks == 3 and cat.playlist_by_name("ROAD TRIP").id == p.id
        cat.delete_playlist(p.id)
        assert cat.playlist(p.id) is None and cat.playlist_track_ids(p.id) == []
        assert [x.name for x in cat.playlists()] == ["other"]


def test_orders_and_file_name_search(catalog_target):
    with Catalog.open(catalog_target) as cat:
        a, b, c, d = _tracks(cat)

        def page(**kw):
            return cat.page(limit=10, **kw)[1]

        assert page(order="length") == [d, a, c, b]
        assert page(order="added") == [d, c, b, a]
        # titles A-Z, a missing title sorts by its file name ("d.ogg")
        assert page(order="title") == [b, d, c, a]
        # the file name matches a bare word; its folders do not
        assert set(page(text="banjo")) == {a}
        assert page(where="file:c.fla") == [c]
        assert page(text="lounge") == []
        # relevance: a title starting with the words, then one containing them
        assert page(text="road", order="relevance") == [c, a]
        assert cat.duration_range() == (12.0, 200.0)
        with pytest.raises(CatalogError, match="unknown track order"):
            cat.page(order="loudest")


def test_facets_from_the_in_memory_table_equal_a_brute_force_count(catalog_target):
    import random
    from collections import Counter

    from soundalike.catalog.store import Tag

    rng = random.Random(0)
    with Catalog.open(catalog_target) as cat:
        truth: dict[int, set[tuple[str, str]]] = {}
        for i in range(60):
            tid = cat.upsert_track(path=f"/m/{i}.wav", content_hash=f"h{i}", size=1, mtime=1.0,
                                   duration_s=float(i))
            file_tags = [Tag(rng.choice("abcd"), rng.choice(["genre", "mood"]), "file") for _ in range(3)]
            model_tags = [Tag(rng.choice("abcd"), "genre", "model", 0.5, "m") for _ in range(2)]
            cat.set_tags(tid, file_tags, source="file")
            cat.set_tags(tid, model_tags, source="model", model_id="m")
            truth[tid] = {(t.category, t.tag) for t in file_tags + model_tags}
        cat.mark_missing([1, 2])
        for where in (None, "duration:10..40", "genre:a|b -mood:c"):
            ids = set(cat.match(where).tolist())
            want = Counter(lab for t in ids for lab in truth[t])
            got = cat.facets(where=where, limit_per_category=100)
            assert {(c, t): n for c, v in got.items() for t, n in v} == dict(want), where
            for c, v in got.items():
                assert [n for _, n in v] == sorted((n for _, n in v), reverse=True)
        assert set(cat.facets(categories=["mood"])) <= {"mood"}
        # a tag edit is seen at once (the table follows the change token) ...
        token = cat.change_token()
        cat.add_tag(3, Tag("zzz", "mood", "user"))
        assert ("zzz", 1) in cat.facets()["mood"] and cat.change_token() > token
        # ... while favourites, playlists and peaks leave the token (and so the caches) alone
        token = cat.change_token()
        cat.set_favourite(3, True)
        cat.add_to_playlist(cat.create_playlist("p").id, [3, 4])
        cat.put_peaks(3, Peaks(min=np.zeros(2, np.int8), max=np.ones(2, np.int8), duration_s=1.0))
        assert cat.change_token() == token
