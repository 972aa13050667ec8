"""The diffusion re-rank of similar(): equal to a brute-force computation, on by default,
switched off by the keyword, the environment and the CLI flag, and doing what it is for on
a constructed neighbourhood (real catalog files, both backends)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import soundalike
from soundalike.catalog.store import Catalog
from soundalike.search import rerank
from soundalike.search.sync import forget_cached


def _unit(X):
    X = np.asarray(X, np.float64)
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


def _brute_force_order(q: np.ndarray, C: np.ndarray, *, neighbours: int, alpha: float, power: int) -> list[int]:
    """The re-rank spelled out loop by loop: neighbour lists, mutual edges, the normalised
    graph, and the diffusion as its power series (no linear solve)."""
    V = _unit(np.vstack([q, C]))
    m = len(V)
    sim = [[float(V[i] @ V[j]) for j in range(m)] for i in range(m)]
    near = []
    for i in range(m):
        others = sorted((j for j in range(m) if j != i), key=lambda j: (-sim[i][j], j))
        near.append(set(others[:min(neighbours, m - 1)]))
    W = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            if j in near[i] and i in near[j]:
                W[i, j] = max(sim[i][j], 0.0) ** power
    deg = W.sum(1)
    Wn = np.zeros_like(W)
    for i in range(m):
        for j in range(m):
            if deg[i] > 0 and deg[j] > 0:
                Wn[i, j] = W[i, j] / np.sqrt(deg[i] * deg[j])
    f = np.zeros(m)
    term = np.zeros(m)
    term[0] = 1.0
    for _ in range(600):  # sum of alpha^t Wn^t e_0 (alpha 0.9: 0.9^600 is nothing)
        f += term
        term = alpha * (Wn @ term)
    cos = [sim[0][j] for j in range(1, m)]
    return sorted(range(m - 1), key=lambda j: (-round(f[j + 1], 9), -cos[j], j))


def test_diffusion_order_equals_brute_force():
    rng = np.random.default_rng(3)
    centres = _unit(rng.normal(size=(4, 12)))
    C = _unit(centres[rng.integers(0, 4, 40)] + 0.5 * rng.normal(size=(40, 12)))
    q = _unit(centres[0] + 0.5 * rng.normal(size=12))
    for neighbours, alpha in ((10, 0.9), (4, 0.5), (60, 0.8)):
        got = rerank.rerank_order(query=q, candidates=C, cosines=C @ q, neighbours=neighbours, alpha=alpha)
        assert got.tolist() == _brute_force_order(q, C, neighbours=neighbours, alpha=alpha, power=3)


def test_no_mutual_neighbour_gives_cosine_order_and_bad_alpha_is_refused():
    # one candidate per corner: with one neighbour each, nobody's nearest is the query
    q = np.array([1.0, 0.0, 0.0])
    C = np.array([[0.6, 0.8, 0.0], [0.5, 0.0, 0.866], [0.55, 0.835, 0.0]])
    f = rerank.diffusion_scores(query=q, candidates=C, neighbours=1)
    assert f.tolist() == [0.0, 0.0, 0.0]
    assert rerank.rerank_order(query=q, candidates=C, cosines=C @ q, neighbours=1).tolist() == [0, 2, 1]
    assert rerank.diffusion_scores(query=q, candidates=np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="alpha"):
        rerank.diffusion_scores(query=q, candidates=C, alpha=1.0)


def _clustered_catalog(target, *, n: int = 70, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(5, d)))
    X = _unit(centres[rng.integers(0, 5, n)] + 0.6 * rng.normal(size=(n, d))).astype(np.float32)
    cat = Catalog.open(target)
    cat.register_model(model_id="toy-1", name="toy", dim=d)
    ids = []
    with cat.transaction():
        for i, x in enumerate(X):
            # lengths far apart: no hit is ever a near-duplicate of the query
            tid = cat.upsert_track(path=f"/music/{i}.wav", content_hash=str(i), size=1, mtime=0.0,
                                   duration_s=60.0 + 17.0 * i)
            cat.put_analysis(tid, "toy-1", x)
            ids.append(tid)
    return cat, np.asarray(ids), X


def test_similar_is_the_brute_force_rerank_of_its_pool(catalog_target):
    cat, ids, X = _clustered_catalog(catalog_target)
    try:
        Xn = _unit(X)
        changed = 0
        for qi in (0, 7, 33):
            cos = Xn @ Xn[qi]
            others = [j for j in np.argsort(-cos, kind="stable") if j != qi][:rerank.POOL]
            order = _brute_force_order(Xn[qi], Xn[others], neighbours=rerank.NEIGHBOURS,
                                       alpha=rerank.ALPHA, power=rerank.POWER)
            expect = [int(ids[others[j]]) for j in order][:10]
            hits = soundalike.similar(int(ids[qi]), k=10, catalog=cat)  # the default: on
            assert [h.track.id for h in hits] == expect
            assert [h.rank for h in hits] == list(range(1, 11))
            for h in hits:  # scores stay the cosine to the query
                assert h.score == pytest.approx(float(cos[list(ids).index(h.track.id)]), abs=1e-5)
            plain = soundalike.similar(int(ids[qi]), k=10, catalog=cat, rerank=False)
            assert [h.track.id for h in plain] == [int(ids[j]) for j in others[:10]]
            changed += expect != [h.track.id for h in plain]
        assert changed  # the re-rank changed some list, so this test can tell it is on
    finally:
        cat.close()
        forget_cached(catalog_target)


def _neighbourhood_catalog(target):
    """A query, five tracks of its group (close to it and to each other), one stranger
    closer to the query than any of them but whose own neighbours are a crowd elsewhere,
    and that crowd."""
    rng = np.random.default_rng(1)
    d = 8
    e = np.eye(d)
    q = e[0]
    group = _unit(e[0] + e[1] + 0.05 * rng.normal(size=(5, d)))  # cos to q ~ 0.71
    stranger = _unit(e[0] + 0.9 * e[2])  # cos to q 0.74, to the group ~ 0.53
    crowd = _unit(0.5 * e[0] + 0.9 * e[2] + 0.4 * e[3] + 0.05 * rng.normal(size=(14, d)))  # around the stranger
    rest = _unit(rng.normal(size=(10, d)) * np.r_[0, 0, 0, 0, 1, 1, 1, 1])  # far from all of them
    cat = Catalog.open(target)
    cat.register_model(model_id="toy-1", name="toy", dim=d)
    names = {}
    with cat.transaction():
        for i, (name, x) in enumerate([("query", q), *(("group", g) for g in group), ("stranger", stranger),
                                       *(("crowd", c) for c in crowd), *(("rest", r) for r in rest)]):
            tid = cat.upsert_track(path=f"/music/{name}{i}.wav", content_hash=str(i), size=1, mtime=0.0,
                                   duration_s=60.0 + 13.0 * i)
            cat.put_analysis(tid, "toy-1", np.asarray(x, np.float32))
            names[tid] = name
    return cat, names


def test_the_rerank_lifts_the_querys_neighbourhood_over_a_chance_neighbour(catalog_target, monkeypatch):
    cat, names = _neighbourhood_catalog(catalog_target)
    q = next(t for t, n in names.items() if n == "query")
    try:
        plain = [names[h.track.id] for h in soundalike.similar(q, k=3, catalog=cat, rerank=False)]
        assert plain[0] == "stranger"  # by cosine the stranger is nearest
        on = [names[h.track.id] for h in soundalike.similar(q, k=5, catalog=cat)]
        assert on == ["group"] * 5  # through the graph the query's group comes first
        monkeypatch.setenv(rerank.ENV, "0")  # the environment switch
        assert [names[h.track.id] for h in soundalike.similar(q, k=3, catalog=cat)][0] == "stranger"
        assert [names[h.track.id] for h in soundalike.similar(q, k=5, catalog=cat, rerank=True)] == ["group"] * 5
    finally:
        cat.close()
        forget_cached(catalog_target)


def test_cli_no_rerank_flag(tmp_path):
    db = tmp_path / "catalog.sqlite"
    cat, names = _neighbourhood_catalog(db)
    cat.close()
    q = next(t for t, n in names.items() if n == "query")
    env = {k: v for k, v in os.environ.items() if k != rerank.ENV}

    def first(*flags):
        p = subprocess.run([sys.executable, "-m", "soundalike", "similar", str(q), "-k", "3", "--json",
                            "--catalog", str(db), *flags], capture_output=True, text=True, timeout=120, env=env)
        assert p.returncode == 0, p.stderr
        return names[json.loads(p.stdout)["hits"][0]["id"]]

    assert first() == "group"
    assert first("--no-rerank") == "stranger"

    def table(*flags):
        p = subprocess.run([sys.executable, "-m", "soundalike", "similar", str(q), "-k", "8", "--catalog", str(db),
                            *flags], capture_output=True, text=True, timeout=120, env={**env, "COLUMNS": "200"})
        assert p.returncode == 0, p.stderr
        return p.stdout

    # the stranger's higher cosine now sits below the group's: the table says why
    assert "cosine" in table() and "order: re-ranked" in table()
    assert "order: re-ranked" not in table("--no-rerank")


def test_neighbour_lists_pick_ties_as_a_stable_sort_does():
    """Duplicate tracks give equal cosines: the k nearest must be the ones a stable sort
    by descending similarity picks (the lower position first), with or without ties."""
    rng = np.random.default_rng(5)
    for ties in (False, True):
        T = np.round(rng.normal(size=(30, 30)), 1 if ties else 12)
        np.fill_diagonal(T, -np.inf)
        for k in (1, 4, 10, 29):
            want = np.zeros_like(T, dtype=bool)
            np.put_along_axis(want, np.argsort(-T, axis=1, kind="stable")[:, :k], True, axis=1)
            assert (rerank._top_k_members(T, k) == want).all(), (ties, k)
