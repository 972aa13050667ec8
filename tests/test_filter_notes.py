"""A filter naming a category or value the catalog does not have says so, and lists
what exists (the README's genre:/mood: examples on a catalog of model tags)."""

from __future__ import annotations

import json
import subprocess
import sys

from fastapi.testclient import TestClient

from soundalike.catalog.store import Catalog, Tag
from soundalike.web.app import create_app
from test_search_fixtures import build_catalog


def _model_tag_catalog(tmp_path):
    """A fresh catalog as ingest with a pretrained tagger leaves it: only model tags, category 'tag'."""
    b = build_catalog(tmp_path, per_style=1, duration_s=1.0)
    with Catalog.open(b.path) as cat:
        for t in cat.iter_tracks():
            cat.set_tags(t.id, [], source="file")
            cat.set_tags(t.id, [Tag("piano", "tag", "model", 0.8, b.model_id), Tag("slow", "tag", "model", 0.6, b.model_id)],
                         source="model", model_id=b.model_id)
    return b


def test_notes_name_the_missing_category_and_value(tmp_path):
    b = _model_tag_catalog(tmp_path)
    with Catalog.open(b.path) as cat:
        notes = cat.filter_notes("genre:rock mood:calm|sad tag:piano|guitar -year:..1990")
    assert notes == ["no track has a tag in category 'genre' (categories here: tag)",
                     "no track has a tag in category 'mood' (categories here: tag)",
                     "no tag tag is guitar (tag has: piano, slow)"]
    with Catalog.open(b.path) as cat:
        assert cat.filter_notes("tag:piano -tag:slow year:1990.. moon") == []


def test_web_and_cli_pass_the_notes_on(tmp_path):
    b = _model_tag_catalog(tmp_path)
    with TestClient(create_app(b.path), base_url="http://127.0.0.1") as c:
        r = c.get("/api/tracks", params={"where": "genre:rock"}).json()
        assert r["total"] == 0 and r["notes"] == ["no track has a tag in category 'genre' (categories here: tag)"]
        tid = r and c.get("/api/tracks").json()["tracks"][0]["id"]
        s = c.get("/api/similar", params={"id": tid, "where": "mood:calm"}).json()
        assert s["hits"] == [] and "category 'mood'" in s["notes"][0]
    p = subprocess.run([sys.executable, "-m", "soundalike", "similar", str(tid), "--where", "genre:rock",
                        "--catalog", str(b.path), "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["notes"] and p.stderr.startswith("note: no track has a tag in category 'genre'")
