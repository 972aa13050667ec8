"""Catalog adaptation: the projections, their storage, `index adapt`, and every place that
uses an adapted model (similar on catalog tracks and outside files, ingest of new tracks)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from soundalike.audio import synth
from soundalike.catalog.store import Catalog
from soundalike.errors import CatalogError, ConfigError
from soundalike.models import adapt
from soundalike.search.adapt import adapt_catalog, maybe_auto_adapt

SR = 22050


def _clustered(n_tracks: int = 30, per_track: int = 4, d: int = 24, seed: int = 0):
    """Segments of tracks: a strong shared nuisance direction, a track offset, noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_tracks, d))
    nuisance = rng.normal(size=d) * 6
    owner = np.repeat(np.arange(n_tracks), per_track)
    S = centres[owner] + rng.normal(size=(len(owner), 1)) * nuisance + 0.3 * rng.normal(size=(len(owner), d))
    return S.astype(np.float32), owner


def _nn_same_owner(X: np.ndarray, owner: np.ndarray) -> float:
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    return float((owner[S.argmax(1)] == owner).mean())


# --------------------------------------------------------------------------- projections


@pytest.mark.parametrize("method", ["lda", "contrastive"])
def test_segment_methods_learn_to_ignore_within_track_change(method):
    S, owner = _clustered()
    kw = {"epochs": 40, "batch": 16} if method == "contrastive" else {}
    a = adapt.fit(S, owner, base_model_id="m-1", method=method, dim=12, seed=3, **kw)
    assert a.apply(S).shape == (len(S), a.dim) and a.dim <= 12
    # the nuisance direction dominates raw cosine; the adapted space tells tracks apart
    assert _nn_same_owner(a.apply(S), owner) > _nn_same_owner(S, owner) + 0.15


def test_contrastive_is_reproducible_by_seed():
    S, owner = _clustered(n_tracks=12)
    kw = dict(base_model_id="m-1", method="contrastive", dim=6, epochs=3, batch=8)
    a, b, c = (adapt.fit(S, owner, seed=s, **kw) for s in (1, 1, 2))
    assert np.array_equal(a.W, b.W) and a.model_id == b.model_id
    assert not np.array_equal(a.W, c.W) and a.model_id != c.model_id


def test_normalize_blocks_pca_and_round_trip():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(5, 1, (40, 3)), rng.normal(0, 100, (40, 5))], axis=1).astype(np.float32)
    a = adapt.fit(X, base_model_id="m-1", dim=4, blocks=(3, 5))
    assert a.method == "normalize" and a.dim == 4 and a.model_id.startswith("m-1+adapt-")
    # before the PCA each block is unit length: a huge-valued block no longer dominates
    Z = adapt._block_normalize((X - a.mean) * a.scale, a.blocks)
    assert np.allclose(np.linalg.norm(Z[:, :3], axis=1), 1 / np.sqrt(2), atol=1e-5)
    assert np.allclose(np.linalg.norm(Z[:, 3:], axis=1), 1 / np.sqrt(2), atol=1e-5)
    again = adapt.Adaptation.from_bytes(a.to_bytes())
    assert again.model_id == a.model_id and np.array_equal(again.apply(X), a.apply(X))
    assert adapt.fit(X, base_model_id="m-1", dim=4, blocks=(3, 5)).model_id == a.model_id  # deterministic
    assert adapt.fit(X, base_model_id="m-1", dim=40).dim == 8  # at most d (and n - 1)
    assert adapt.base_model_id_of(a.model_id) == "m-1" and adapt.base_model_id_of("m-1") is None


def test_power_normalisation_per_block_its_id_and_round_trip():
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(0, 1, (40, 3)), rng.exponential(1, (40, 5)) ** 3], axis=1).astype(np.float32)
    plain = adapt.fit(X, base_model_id="m-1", dim=4, blocks=(3, 5))
    a = adapt.fit(X, base_model_id="m-1", dim=4, blocks=(3, 5), power=(1.0, 0.5))
    # the first block as it is, the second through sign(x) |x|^0.5, before the z-scoring
    assert np.array_equal(a.power, np.array([1, 1, 1, .5, .5, .5, .5, .5], np.float32))
    P = X.copy()
    P[:, 3:] = np.sign(X[:, 3:]) * np.sqrt(np.abs(X[:, 3:]))
    ref = adapt.fit(P, base_model_id="m-1", dim=4, blocks=(3, 5))
    assert np.allclose(a.apply(X), ref.apply(P), atol=1e-5)
    assert np.allclose(adapt.signed_power(np.array([-4.0, 0.0, 9.0]), np.float32(0.5)), [-2, 0, 3])
    # its own id; no power (None, 1 or all ones) keeps the id adaptations had before the step
    assert a.model_id != plain.model_id and a.params["power"] == [1.0, 0.5]
    assert adapt.fit(X, base_model_id="m-1", dim=4, blocks=(3, 5), power=(1.0, 1.0)).model_id == plain.model_id
    assert adapt.fit(X, base_model_id="m-1", dim=4, blocks=(3, 5), power=1.0).power is None
    again = adapt.Adaptation.from_bytes(a.to_bytes())
    assert again.model_id == a.model_id and np.array_equal(again.apply(X), a.apply(X))
    assert adapt.Adaptation.from_bytes(plain.to_bytes()).power is None
    with pytest.raises(ConfigError, match="block powers"):
        adapt.fit(X, base_model_id="m-1", blocks=(3, 5), power=(0.5,))
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        adapt.fit(X, base_model_id="m-1", power=1.5)


def test_mutual_neighbours_match_brute_force():
    rng = np.random.default_rng(3)
    Y = rng.normal(size=(57, 6)).astype(np.float32)
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    S = Yn @ Yn.T
    np.fill_diagonal(S, -np.inf)
    nn = [set(np.argsort(-S[i])[:4]) for i in range(len(Y))]
    want = {(i, j) for i in range(len(Y)) for j in nn[i] if i < j and i in nn[j]}
    got = adapt.mutual_neighbours(Y, 4, chunk=10)  # chunks smaller than n: the seams must not matter
    assert {tuple(p) for p in got.tolist()} == want and len(got) == len(want) > 0


def test_neighbour_step_pulls_agreed_neighbours_together():
    rng = np.random.default_rng(0)
    # 8 loose groups in 30-d: which tracks belong together is in the vectors, never given
    centres = rng.normal(size=(8, 30))
    X = (np.repeat(centres, 12, axis=0) + 1.2 * rng.normal(size=(96, 30))).astype(np.float32)
    plain = adapt.fit(X, base_model_id="m-1", dim=20)
    a = adapt.fit(X, base_model_id="m-1", dim=20, neighbours=5)
    assert plain.lpp_W is None and a.dim == 20 + 10 and a.params["pairs"] > 0
    assert a.model_id != plain.model_id
    again = adapt.Adaptation.from_bytes(a.to_bytes())  # stored and read back: the same space
    assert again.model_id == a.model_id and np.array_equal(again.apply(X), a.apply(X))
    assert adapt.fit(X, base_model_id="m-1", dim=20, neighbours=5).model_id == a.model_id  # deterministic
    assert a.apply(X[0]).shape == (30,)  # one vector (an outside clip) maps like many

    def group_precision(Y, k=5):
        Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
        S = Yn @ Yn.T
        np.fill_diagonal(S, -np.inf)
        g = np.repeat(np.arange(8), 12)
        return float((g[np.argsort(-S, axis=1)[:, :k]] == g[:, None]).mean())

    assert group_precision(a.apply(X)) > group_precision(plain.apply(X))


def test_bad_input_is_refused():
    with pytest.raises(ConfigError, match="3 track vectors"):
        adapt.fit(np.zeros((2, 4), np.float32), base_model_id="m")
    with pytest.raises(ConfigError, match="unknown adaptation method"):
        adapt.fit(np.zeros((5, 4), np.float32), np.arange(5), base_model_id="m", method="magic")
    with pytest.raises(ConfigError, match="at least 3 tracks"):
        adapt.fit(np.zeros((4, 4), np.float32), np.array([0, 1, 2, 3]), base_model_id="m", method="lda")
    a = adapt.fit(np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32), base_model_id="m")
    with pytest.raises(ConfigError, match="4-d vectors"):
        a.apply(np.zeros(5, np.float32))


# --------------------------------------------------------------------------- catalog


def _catalog_with_vectors(path, n: int = 30, d: int = 16, name: str = "toy") -> tuple[Catalog, np.ndarray]:
    S, owner = _clustered(n_tracks=n, per_track=1, d=d)
    cat = Catalog.open(path)
    cat.register_model(model_id=f"{name}-1", name=name, dim=d)
    for i, x in enumerate(S):
        tid = cat.upsert_track(path=f"/music/{i}.wav", content_hash=str(i), size=1, mtime=0.0)
        cat.put_analysis(tid, f"{name}-1", x)
    return cat, S


def test_index_adapt_makes_a_model_of_its_own_and_becomes_the_default(tmp_path):
    import soundalike
    from soundalike.search.sync import default_model_id, model_info

    cat, S = _catalog_with_vectors(tmp_path / "c.sqlite")
    with cat:
        rep = adapt_catalog(cat, dim=8)
        assert rep.base_model_id == "toy-1" and rep.model_id.startswith("toy-1+adapt-") and rep.tracks == 30
        assert default_model_id(cat) == rep.model_id
        assert model_info(cat, "toy").model_id == "toy-1"  # the base stays reachable by name ...
        assert model_info(cat, "toy+adapt").model_id == rep.model_id  # ... and so does the adaptation
        ids, Y = cat.embeddings(rep.model_id)
        stored = adapt.Adaptation.from_bytes(cat.get_adaptation(rep.model_id).data)
        assert np.allclose(Y, stored.apply(S), atol=1e-5)
        hits = soundalike.similar(1, k=5, catalog=cat, rerank=False)  # default: the adapted vectors (cosine order)
        Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
        expect = ids[np.argsort(-(Yn @ Yn[0]))[1:6]]
        assert [h.track.id for h in hits] == list(expect)
        base = soundalike.similar(1, k=5, model="toy", catalog=cat)
        assert len(base) == 5 and all(-1.0 <= h.score <= 1.0 for h in base)
        with pytest.raises(CatalogError, match="itself an adaptation"):
            adapt_catalog(cat, model=rep.model_id)


def test_adapt_refuses_tiny_catalogs_and_auto_adapts_past_the_threshold(tmp_path):
    cat, _ = _catalog_with_vectors(tmp_path / "c.sqlite", n=2)
    with cat, pytest.raises(CatalogError, match="at least 3"):
        adapt_catalog(cat)
    cat, _ = _catalog_with_vectors(tmp_path / "d.sqlite", n=12)
    with cat:
        assert maybe_auto_adapt(cat, model_id="toy-1", min_tracks=13) is None
        assert not cat.adaptations()
        rep = maybe_auto_adapt(cat, model_id="toy-1", min_tracks=12)
        assert rep is not None and len(cat.adaptations("toy-1")) == 1
        assert maybe_auto_adapt(cat, model_id="toy-1", min_tracks=12) is None  # once



def _add_tracks(cat, S, start: int, name: str = "toy", segments: bool = True) -> None:
    rng = np.random.default_rng(start)
    for i, x in enumerate(S, start=start):
        tid = cat.upsert_track(path=f"/music/{i}.wav", content_hash=str(i), size=1, mtime=0.0)
        cat.put_analysis(tid, f"{name}-1", x)
        if segments:  # three segments a track near its vector, in the base model's space
            cat.put_segments(tid, f"{name}-1", np.array([0.0, 3.0, 6.0]),
                             x + 0.2 * rng.normal(size=(3, len(x))).astype(np.float32))


def test_auto_adaptation_is_refitted_as_the_catalog_grows(catalog_target):
    """Past twice the tracks it was fitted on, ingest's automatic adaptation is fitted again
    with the same settings: the new one is the default, has every track's vector and
    segments, and the superseded automatic fit is gone (model, vectors, segments, index);
    on both backends."""
    from soundalike.search.sync import default_model_id, index_dir, model_info, open_index

    S, _ = _clustered(n_tracks=40, per_track=1, d=16)
    db = catalog_target
    with Catalog.open(db) as cat:
        cat.register_model(model_id="toy-1", name="toy", dim=16)
        _add_tracks(cat, S[:12], 0)
        first = maybe_auto_adapt(cat, model_id="toy-1", min_tracks=12)
        assert first is not None and first.auto and first.tracks == 12 and not first.refit_from_tracks
        assert cat.count_segments("toy-1") == 0 and cat.count_segments(first.model_id) == 36
        open_index(cat, first.model_id)  # a saved index of the first fit
        assert (index_dir(cat) / (first.model_id.replace("+", "_") + ".faiss")).exists()
        _add_tracks(cat, S[12:23], 12)  # 23 < 2 x 12: not yet
        assert maybe_auto_adapt(cat, model_id="toy-1", min_tracks=12) is None
        assert maybe_auto_adapt(cat, model_id="toy-1", min_tracks=12, growth=0) is None
        _add_tracks(cat, S[23:24], 23)  # 24 = 2 x 12
        second = maybe_auto_adapt(cat, model_id="toy-1", min_tracks=12)
        assert second is not None and second.model_id != first.model_id
        assert second.tracks == 24 and second.refit_from_tracks == 12 and second.replaced == first.model_id
        assert cat.get_adaptation(first.model_id) is None and cat.find_model(first.model_id) is None
        assert len(cat.embeddings(first.model_id)[0]) == 0 and cat.count_segments(first.model_id) == 0
        assert not list(index_dir(cat).glob(first.model_id.replace("+", "_") + ".*"))
        assert default_model_id(cat) == second.model_id == model_info(cat, "toy+adapt").model_id
        ids, Y = cat.embeddings(second.model_id)
        a2 = adapt.Adaptation.from_bytes(cat.get_adaptation(second.model_id).data)
        assert len(ids) == 24 and np.allclose(Y, a2.apply(S[:24]), atol=1e-5)
        assert a2.params["auto"] and a2.params["settings"] == {"dim": 256, "neighbours": 5, "power": 1.0, "seed": 0}
        # the segments came over from the first fit: every track has them, each near its own vector
        rows = {r[0]: r[3] for r in cat.segment_rows(second.model_id)}
        assert len(rows) == 24 and all(len(v) == 3 for v in rows.values())
        Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
        own = [float(np.mean(rows[int(t)] @ Yn[i])) for i, t in enumerate(ids)]
        others = [float(np.mean(rows[int(t)] @ np.delete(Yn, i, 0).T)) for i, t in enumerate(ids)]
        assert np.mean(own) > np.mean(others) + 0.3


def test_adapted_vectors_say_how_much_of_each_track_their_base_analysis_looked_at(tmp_path):
    """An adapted vector is made from its base model's: it carries that analysis budget
    (``info`` and the catalog say ``spread:6``, not ``full``), at the fit as after it."""
    S, _ = _clustered(n_tracks=12, per_track=1, d=16)
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        cat.register_model(model_id="toy-1", name="toy", dim=16)
        for i, x in enumerate(S):
            tid = cat.upsert_track(path=f"/music/{i}.wav", content_hash=str(i), size=1, mtime=0.0)
            cat.put_analysis(tid, "toy-1", x, analysis="full" if i == 0 else "spread:6")
        rep = adapt_catalog(cat, dim=4, neighbours=0)
        assert cat.analysis_settings(rep.model_id) == cat.analysis_settings("toy-1")
        assert sorted(set(cat.analysis_settings(rep.model_id).values())) == ["full", "spread:6"]


def test_a_running_server_follows_a_refit_committed_by_another_process(tmp_path):
    """serve without --model compares the catalog's default model as it is now, serve
    --model NAME the newest model of that name, and serve --model ID of an automatic fit
    that fit's successor once it is gone: after an ingest elsewhere refits (and removes the
    automatic fit the server started on), track pages and similar answer with the new fit,
    not with vectors that are gone."""
    from fastapi.testclient import TestClient

    from soundalike.web.app import create_app

    S, _ = _clustered(n_tracks=40, per_track=1, d=16)
    db = tmp_path / "c.sqlite"
    with Catalog.open(db) as cat:
        cat.register_model(model_id="toy-1", name="toy", dim=16, labels=["a", "b"])
        _add_tracks(cat, S[:12], 0)
        q = cat.track_by_path("/music/0.wav").id
        cat.put_analysis(q, "toy-1", S[0], {"a": 0.25, "b": 0.75})
        first = maybe_auto_adapt(cat, model_id="toy-1", min_tracks=12)
    # the default; a model by name; the automatic fit pinned by its id (a refit replaces it)
    servers = [create_app(db), create_app(db, model="toy+adapt"), create_app(db, model=first.model_id)]
    for app in servers:
        with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as c:
            assert c.get(f"/api/tracks/{q}").json()["model_id"] == first.model_id
    with TestClient(servers[0], raise_server_exceptions=False, base_url="http://127.0.0.1") as c, \
            TestClient(servers[1], raise_server_exceptions=False, base_url="http://127.0.0.1") as named, \
            TestClient(servers[2], raise_server_exceptions=False, base_url="http://127.0.0.1") as pinned:
        d = c.get(f"/api/tracks/{q}").json()
        assert d["model_id"] == first.model_id
        assert [p["label"] for p in d["predictions"]] == ["b", "a"]  # the base model's tags
        assert len(c.get("/api/similar", params={"id": q, "k": 30}).json()["hits"]) == 11
        subprocess.run([sys.executable, "-c", f"""
import numpy as np, sys
sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
from test_adapt import _add_tracks, _clustered
from soundalike.catalog.store import Catalog
from soundalike.search.adapt import maybe_auto_adapt
S, _ = _clustered(n_tracks=40, per_track=1, d=16)
with Catalog.open({str(db)!r}) as cat:
    _add_tracks(cat, S[12:24], 12)
    print(maybe_auto_adapt(cat, model_id="toy-1", min_tracks=12).model_id)
"""], check=True, capture_output=True, text=True)
        with Catalog.open(db) as cat:
            second = cat.default_model_id(adapted=True)
            assert second != first.model_id and cat.get_adaptation(first.model_id) is None
        assert c.get(f"/api/tracks/{q}").json()["model_id"] == second
        r = c.get("/api/similar", params={"id": q, "k": 30})
        assert r.status_code == 200 and len(r.json()["hits"]) == 23  # the new fit has all 24
        assert named.get(f"/api/tracks/{q}").json()["model_id"] == second
        assert len(named.get("/api/similar", params={"id": q, "k": 30}).json()["hits"]) == 23
        # the pinned id is gone: its successor answers (it was a 500, "unknown model")
        r = pinned.get("/api/similar", params={"id": q, "k": 30})
        assert r.status_code == 200 and len(r.json()["hits"]) == 23
        assert pinned.get(f"/api/tracks/{q}").json()["model_id"] == second


def test_two_ingests_refitting_at_once_both_finish(tmp_path, monkeypatch):
    """Two ingests (two machines on one PostgreSQL catalog) may both refit: the one that
    finds the superseded automatic fit already removed by the other still finishes."""
    import soundalike.search.adapt as sa

    S, _ = _clustered(n_tracks=40, per_track=1, d=16)
    db = tmp_path / "c.sqlite"
    with Catalog.open(db) as cat:
        cat.register_model(model_id="toy-1", name="toy", dim=16)
        _add_tracks(cat, S[:10], 0, segments=False)
        first = maybe_auto_adapt(cat, model_id="toy-1", min_tracks=10)
        _add_tracks(cat, S[10:20], 10, segments=False)
    real = sa.adapt_catalog

    def other_ingest_removes_it_meanwhile(cat, **kw):
        rep = real(cat, **kw)
        with Catalog.open(db) as other:
            other.delete_adaptation(first.model_id)
        return rep

    monkeypatch.setattr(sa, "adapt_catalog", other_ingest_removes_it_meanwhile)
    with Catalog.open(db) as cat:
        rep = maybe_auto_adapt(cat, model_id="toy-1", min_tracks=10)
        assert rep is not None and rep.replaced is None and rep.refit_from_tracks == 10
        assert cat.get_adaptation(first.model_id) is None and cat.default_model_id(adapted=True) == rep.model_id


def test_a_refit_removes_every_earlier_automatic_fit(tmp_path):
    """Two ingests that each fitted the first adaptation leave two automatic fits; the
    refit supersedes both (and keeps index adapt's)."""
    import time

    S, _ = _clustered(n_tracks=40, per_track=1, d=16)
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        cat.register_model(model_id="toy-1", name="toy", dim=16)
        _add_tracks(cat, S[:10], 0, segments=False)
        mine = adapt_catalog(cat, dim=5)
        time.sleep(0.01)
        a = adapt_catalog(cat, dim=6, auto=True)
        _add_tracks(cat, S[10:11], 10, segments=False)
        time.sleep(0.01)
        b = adapt_catalog(cat, dim=6, auto=True)  # the other machine's, one track later
        assert len({mine.model_id, a.model_id, b.model_id}) == 3
        _add_tracks(cat, S[11:22], 11, segments=False)
        rep = maybe_auto_adapt(cat, model_id="toy-1", min_tracks=5)
        assert rep is not None and rep.replaced == b.model_id and rep.refit_from_tracks == 11
        assert {x.model_id for x in cat.adaptations("toy-1")} == {mine.model_id, rep.model_id}


def test_refit_keeps_what_index_adapt_was_asked_and_never_removes_it(tmp_path):
    S, _ = _clustered(n_tracks=40, per_track=1, d=16)
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        cat.register_model(model_id="toy-1", name="toy", dim=16)
        _add_tracks(cat, S[:10], 0, segments=False)
        mine = adapt_catalog(cat, dim=6, neighbours=0)  # asked for: 6-d, no neighbour step
        assert not mine.auto
        _add_tracks(cat, S[10:20], 10, segments=False)
        refit = maybe_auto_adapt(cat, model_id="toy-1", min_tracks=5)
        assert refit is not None and refit.replaced is None and refit.refit_from_tracks == 10
        assert refit.dim == 6  # the same settings: 6-d, no neighbour step appended
        a = adapt.Adaptation.from_bytes(cat.get_adaptation(refit.model_id).data)
        assert a.lpp_W is None and a.params["settings"]["dim"] == 6 and a.params["auto"]
        assert cat.get_adaptation(mine.model_id) is not None  # index adapt's own stays
        assert len(cat.embeddings(mine.model_id)[0]) == 10


def _write_tracks(folder, n, offset=0):
    folder.mkdir(parents=True, exist_ok=True)
    styles = ["drum-loop", "piano-arpeggio", "ambient-drone", "noise-texture", "bass-groove"]
    for i in range(offset, offset + n):
        y = synth.demo_track(styles[i % len(styles)], seed=i, duration_s=2.0, sr=SR)
        sf.write(folder / f"t{i:03d}.flac", y, SR)


def test_ingest_keeps_new_tracks_adapted_and_outside_clips_are_mapped(tmp_path):
    import soundalike
    from soundalike.ingest import ingest
    from soundalike.models.zoo import load_analyzer
    from soundalike.search.sync import analyzer_for

    _write_tracks(tmp_path / "m", 8)
    db = tmp_path / "c.sqlite"
    ingest([tmp_path / "m"], catalog=db, model="mfcc-stats", workers=1)
    base = load_analyzer("mfcc-stats")
    with Catalog.open(db) as cat:
        rep = adapt_catalog(cat, dim=5)
    _write_tracks(tmp_path / "m", 2, offset=8)
    s = ingest([tmp_path / "m"], catalog=db, model="mfcc-stats", workers=1)
    assert s.ingested == 2 and s.unchanged == 8
    with Catalog.open(db) as cat:
        a = adapt.Adaptation.from_bytes(cat.get_adaptation(rep.model_id).data)
        ids_base, X = cat.embeddings(base.model_id)
        ids_ad, Y = cat.embeddings(rep.model_id)
        assert list(ids_ad) == list(ids_base) and len(ids_ad) == 10  # new tracks got adapted vectors
        assert np.allclose(Y, a.apply(X), atol=1e-5)
        an = analyzer_for(cat, rep.model_id)
        assert an.model_id == rep.model_id and an.name == "mfcc-stats+adapt" and an.embedding_dim == rep.dim
        clip = tmp_path / "clip.wav"
        y = synth.demo_track("drum-loop", seed=99, duration_s=2.0, sr=SR)
        sf.write(clip, y, SR)
        assert np.allclose(an.analyze(y, SR).embedding, a.apply(base.analyze(y, SR).embedding), atol=1e-5)
        hits = soundalike.similar(clip, k=3, catalog=cat)  # an outside file, default = adapted model
        assert len(hits) == 3


def test_after_a_python_ingest_maybe_auto_adapt_does_what_the_cli_does(tmp_path):
    """The README's recipe: ``ingest()`` (layer ingest) never adapts; ``maybe_auto_adapt``
    after it (layer search) fits at ``min_tracks`` and again when they double, and says so
    through ``on_fit`` before each fit."""
    from soundalike.ingest import ingest

    db = tmp_path / "c.sqlite"
    said: list[tuple[int, int]] = []

    def step(n_new: int, offset: int):
        _write_tracks(tmp_path / "m", n_new, offset=offset)
        s = ingest([tmp_path / "m"], catalog=db, model="mfcc-stats", workers=1)
        with Catalog.open(db) as cat:
            assert len(cat.adaptations(s.model_id)) == min(len(said), 1)  # ingest itself fitted nothing
            return maybe_auto_adapt(cat, model_id=s.model_id, min_tracks=5, on_fit=lambda n, last: said.append((n, last)))

    assert step(4, 0) is None and said == []
    rep = step(2, 4)
    assert rep is not None and rep.tracks == 6 and said == [(6, 0)]
    assert step(5, 6) is None and said == [(6, 0)]  # 11 < 2 x 6
    rep = step(1, 11)
    assert rep.tracks == 12 and rep.refit_from_tracks == 6 and said == [(6, 0), (12, 6)]


def test_index_adapt_power_takes_the_fused_mean_pool_blocks(tmp_path):
    """``index adapt --power`` on the default fused model: the mean-pool blocks, not the
    penultimate ones; on a single model's vectors it changes nothing."""
    from soundalike.models.fusion import FUSION_NAME, block_dims

    d = sum(block_dims(FUSION_NAME))
    cat = Catalog.open(tmp_path / "c.sqlite")
    cat.register_model(model_id="fz-1", name=f"{FUSION_NAME}@mixed-ef", dim=d)
    rng = np.random.default_rng(0)
    for i in range(10):
        tid = cat.upsert_track(path=f"/music/{i}.ogg", content_hash=str(i), size=1, mtime=0.0)
        cat.put_analysis(tid, "fz-1", np.abs(rng.normal(size=d)).astype(np.float32))
    with cat:
        rep = adapt_catalog(cat, power=0.5)
        assert rep.power == 0.5
        a = adapt.Adaptation.from_bytes(cat.get_adaptation(rep.model_id).data)
        assert np.array_equal(a.power, np.r_[np.ones(400), np.full(1506, 0.5)].astype(np.float32))
    cat2, _ = _catalog_with_vectors(tmp_path / "d.sqlite")
    with cat2:
        assert adapt.Adaptation.from_bytes(cat2.get_adaptation(adapt_catalog(cat2, dim=8, power=0.5).model_id)
                                           .data).power is None


def test_ingest_cli_adapts_at_the_size_asked_and_refits_as_the_catalog_doubles(tmp_path):
    """``ingest --adapt-at N`` (or SOUNDALIKE_ADAPT_AT): the first fit at N tracks, the refit
    at twice the last fit's, each said in the summary; the catalog's default follows."""
    import os
    import re

    from soundalike.search.adapt import AUTO_ADAPT_TRACKS

    db = tmp_path / "c.sqlite"

    def run(*extra, env=None):
        p = subprocess.run([sys.executable, "-m", "soundalike", "ingest", str(tmp_path / "m"), "--catalog",
                            str(db), "--model", "mfcc-stats", "--workers", "1", *extra],
                           capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
        assert p.returncode == 0, p.stderr
        said.append(p.stderr)  # what the fit is doing while it runs
        return p.stdout

    said: list[str] = []

    def stats(*extra):
        p = subprocess.run([sys.executable, "-m", "soundalike", "catalog", "stats", "--catalog", str(db), *extra],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "SOUNDALIKE_ADAPT_AT": "5", "COLUMNS": "250"})
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout) if extra else p.stdout

    _write_tracks(tmp_path / "m", 4)
    assert "adapted" not in run("--adapt-at", "5")
    (st,) = stats("--json")["adaptation"]
    assert st["name"] == "mfcc-stats" and st["tracks"] == 4 and st["adaptations"] == [] and st["next_fit_at"] == 5
    assert "ingest adapts mfcc-stats at 5 tracks (--adapt-at 5; has 4" in stats()
    _write_tracks(tmp_path / "m", 1, offset=4)
    out = run(env={"SOUNDALIKE_ADAPT_AT": "5"})
    assert re.search(r"^  adapted +5 tracks -> mfcc-stats\+adapt", out, re.M) and "re-adapted" not in out
    assert "ingest: adapting the catalog: 5 tracks" in said[-1] and "adapting" not in said[0]
    with Catalog.open(db) as cat:
        first = cat.default_model_id(adapted=True)
    _write_tracks(tmp_path / "m", 4, offset=5)  # 9 < 2 x 5
    assert "adapted" not in run("--adapt-at", "5")
    _write_tracks(tmp_path / "m", 1, offset=9)
    out = run("--adapt-at", "5")
    assert "re-adapted 10 tracks (the last fit had 5)" in out
    assert "ingest: re-adapting the catalog: 10 tracks (the last fit had 5)" in said[-1]
    assert "adapting" not in said[-2]  # 9 tracks: nothing to fit
    with Catalog.open(db) as cat:
        second = cat.default_model_id(adapted=True)
        assert second != first and cat.get_adaptation(first) is None  # the automatic fit replaced
        assert len(cat.embeddings(second)[0]) == 10
    got = stats("--json")
    (st,) = got["adaptation"]
    assert got["default_model_id"] == second and st["next_fit_at"] == 20
    assert [(f["model_id"], f["tracks"], f["auto"]) for f in st["adaptations"]] == [(second, 10, True)]
    text = stats()
    assert "fitted on 10 tracks by ingest  <- similar's default" in text
    base = next(m for m in got["models"] if m["name"] == "mfcc-stats")
    assert base["analyses"] == {"full": 10}  # 2-s tracks: fewer patches than the budget
    assert "10 tracks (full 10)" in text
    assert "ingest refits mfcc-stats at 20 tracks (twice the 10 of the last fit, at least --adapt-at 5; has 10" in text
    p = subprocess.run([sys.executable, "-m", "soundalike", "catalog", "stats", "--catalog", str(db)],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "SOUNDALIKE_ADAPT_AT": "two"})
    assert p.returncode == 0 and "SOUNDALIKE_ADAPT_AT='two' is not a whole number >= 3" in p.stderr
    assert f"at least --adapt-at {AUTO_ADAPT_TRACKS}" in p.stdout
    p = subprocess.run([sys.executable, "-m", "soundalike", "ingest", "--help"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "200"})
    assert "--adapt-at" in p.stdout and f"default: {AUTO_ADAPT_TRACKS}" in p.stdout.replace("[", "").replace("]", "")


def test_index_adapt_cli(tmp_path):
    _write_tracks(tmp_path / "m", 6)
    db = tmp_path / "c.sqlite"
    from soundalike.ingest import ingest

    ingest([tmp_path / "m"], catalog=db, model="mfcc-stats", workers=1)
    p = subprocess.run([sys.executable, "-m", "soundalike", "index", "adapt", "--catalog", str(db), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    # 6 tracks: 5 principal directions, then the neighbour step's 5 // 2 = 2
    assert out["name"] == "mfcc-stats+adapt" and out["tracks"] == 6 and out["dim"] == 7
    assert out["catalog_bytes_after"] >= out["catalog_bytes_before"] > 0
    p = subprocess.run([sys.executable, "-m", "soundalike", "similar", "1", "--k", "2", "--catalog", str(db),
                        "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["query"]["model_id"] == out["model_id"]
    # --power reaches the fit: a single model's vectors have no mean-pool blocks, so the
    # adaptation is the plain one again (same id as the first)
    p = subprocess.run([sys.executable, "-m", "soundalike", "index", "adapt", "--catalog", str(db), "--power", "0.5",
                        "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    again = json.loads(p.stdout)
    assert again["model_id"] == out["model_id"] and again["power"] == 1.0 == out["power"]
    p = subprocess.run([sys.executable, "-m", "soundalike", "index", "adapt", "--catalog", str(db), "--power", "2"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "power" in p.stderr
