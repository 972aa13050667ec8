"""Huge integers and huge filters never reach SQLite raw: a clear 4xx / QueryError instead."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from soundalike.catalog.query import parse
from soundalike.errors import QueryError
from soundalike.web.app import create_app
from test_search_fixtures import demo_catalog  # noqa: F401 - fixture

BIG = str(2**63)
HUGE = "99999999999999999999"
MANY_ALTERNATIVES = "genre:" + "|".join(f"g{i}" for i in range(330))
MANY_TERMS = " ".join(f"g{i}" for i in range(988))


@pytest.fixture(scope="module")
def client(demo_catalog):  # noqa: F811
    with TestClient(create_app(demo_catalog.path), raise_server_exceptions=False,
                    base_url="http://127.0.0.1") as c:
        yield c


@pytest.mark.parametrize("url", [f"/api/tracks/{BIG}", f"/api/tracks/{HUGE}", f"/api/tracks/{BIG}/audio",
                                 f"/api/tracks/{HUGE}/spectrogram.png", f"/api/similar?id={BIG}",
                                 f"/api/similar?id={HUGE}", f"/api/tracks?offset={BIG}",
                                 f"/api/tracks?offset={HUGE}"])
def test_huge_integers_are_4xx(client, url):
    r = client.get(url)
    assert 400 <= r.status_code < 500, (url, r.status_code, r.text)
    assert "internal error" not in r.text


@pytest.mark.parametrize("where", [MANY_ALTERNATIVES, MANY_TERMS,
                                   "title:" + "|".join(f"t{i}" for i in range(330))])
def test_huge_filters_are_400(client, where):
    for url in ("/api/tracks", "/api/facets", "/api/similar?id=1"):
        r = client.get(url, params={"where": where[:2000]})
        assert r.status_code in (400, 422), (url, r.text)
        assert "internal error" not in r.text


def test_parse_bounds_and_positions():
    from soundalike.catalog.query import MAX_TERMS, MAX_VALUES

    parse(" ".join(f"g{i}" for i in range(MAX_TERMS)))
    parse("genre:" + "|".join(f"g{i}" for i in range(MAX_VALUES)))
    with pytest.raises(QueryError, match=f"at most {MAX_TERMS} terms"):
        parse(MANY_TERMS)
    with pytest.raises(QueryError, match=f"position 1: a term may join at most {MAX_VALUES} values"):
        parse(MANY_ALTERNATIVES)


@pytest.mark.parametrize("args", [["similar", HUGE], ["info", HUGE], ["catalog", "tag", HUGE, "mood:calm"],
                                  ["similar", "1", "--where", MANY_TERMS],
                                  ["similar", "1", "--where", MANY_ALTERNATIVES]])
def test_cli_says_one_line_instead_of_a_traceback(demo_catalog, args):  # noqa: F811
    p = subprocess.run([sys.executable, "-m", "soundalike", *args, "--catalog", str(demo_catalog.path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
