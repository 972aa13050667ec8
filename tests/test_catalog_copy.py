"""``soundalike catalog copy``: every backend to every backend, verified, refusing a non-empty DST."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from soundalike.catalog.copy import copy_catalog
from soundalike.catalog.store import Catalog
from soundalike.errors import CatalogError

from conftest import BACKENDS, new_catalog_target
from test_search_fixtures import build_catalog


def _snapshot(target) -> dict:
    """Everything a user can see in a catalog, in a comparable form."""
    with Catalog.open(target, create=False) as cat:
        mid = cat.default_model_id()
        ids, X = cat.embeddings(mid)
        tracks = [t.to_dict() for t in cat.iter_tracks(status=None)]
        return {"tracks": tracks, "ids": ids.tolist(), "X": X, "models": cat.models(),
                "tags": cat.tag_lists([t["id"] for t in tracks]), "errors": [(e.path, e.reason) for e in cat.errors()],
                "versions": cat.analysis_versions(mid)[1].tolist(),
                "similar": cat.match("genre:rock|jazz -mood:sad").tolist()}


@pytest.mark.parametrize("dst_backend", BACKENDS)
@pytest.mark.parametrize("src_backend", BACKENDS)
def test_copy_between_backends_keeps_everything(tmp_path, request, src_backend, dst_backend):
    src = new_catalog_target(src_backend, tmp_path / "src", request)
    (tmp_path / "src").mkdir(exist_ok=True)
    b = build_catalog(tmp_path / "src", per_style=2, duration_s=1.0, target=src)
    with Catalog.open(src) as cat:
        cat.mark_missing([b.ids["drum-loop"][0]])
        cat.record_error(path="/gone/bad.mp3", reason="not audio", error_type="AudioDecodeError")
    (tmp_path / "dst").mkdir()
    dst = new_catalog_target(dst_backend, tmp_path / "dst", request)
    seen = []
    rep = copy_catalog(src, dst, batch=7, on_progress=lambda t, d, n: seen.append((t, d, n)))
    assert rep.rows["tracks"] == 10 and rep.rows["analyses"] == 10 and rep.embeddings == 10
    assert [t for t, *_ in seen].index("tracks") < [t for t, *_ in seen].index("analyses")  # parents first
    a, c = _snapshot(src), _snapshot(dst)
    np.testing.assert_array_equal(a.pop("X"), c.pop("X"))
    assert a == c
    with Catalog.open(dst) as cat:  # the copy is a working catalog: new ids follow the copied ones
        tid = cat.upsert_track(path="/new.wav", content_hash="x", size=1, mtime=0.0)
        assert tid > max(t["id"] for t in c["tracks"])
    with pytest.raises(CatalogError, match="not empty"):
        copy_catalog(src, dst)


def test_cli_copy_refuses_a_non_empty_destination_and_reports_json(tmp_path):
    b = build_catalog(tmp_path, per_style=1, duration_s=1.0)
    dst = tmp_path / "copy.sqlite"
    run = [sys.executable, "-m", "soundalike", "catalog", "copy", str(b.path), str(dst), "--json"]
    ok = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    rep = json.loads(ok.stdout)
    assert rep["rows"]["tracks"] == 5 and len(rep["embeddings_sha256"]) == 64
    again = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "not empty" in again.stderr and "Traceback" not in again.stderr
    missing = subprocess.run([*run[:5], str(tmp_path / "nope.sqlite"), str(tmp_path / "x.sqlite")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "no catalog here" in missing.stderr
