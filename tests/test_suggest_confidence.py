"""Tag suggestions from sparse user tags: confidence reflects how many neighbours agree
and how close they are; single-valued categories never get two confident values."""

from __future__ import annotations

from collections import defaultdict

import pytest

from soundalike.catalog.store import Catalog, Tag
from soundalike.search import sync as ix
from soundalike.search.suggest import suggest_tags
from test_search_fixtures import build_catalog


@pytest.fixture()
def sparse(tmp_path):
    """20 demo tracks, no file tags; 6 user tags on 3 tracks (as a new user tags by hand)."""
    b = build_catalog(tmp_path, per_style=4, duration_s=1.5)
    ix.forget_cached(b.path)
    picked = {b.ids["piano-arpeggio"][0]: [("mood", "calm"), ("genre", "classical")],
              b.ids["drum-loop"][0]: [("mood", "upbeat"), ("genre", "electronic")],
              b.ids["bass-groove"][0]: [("mood", "calm"), ("genre", "jazz")]}
    with Catalog.open(b.path) as cat:
        for t in cat.iter_tracks():
            cat.set_tags(t.id, [], source="file")
        for tid, tags in picked.items():
            for category, tag in tags:
                cat.add_tag(tid, Tag(tag, category, "user"))
    yield b, picked
    ix.forget_cached()


def test_few_neighbours_never_give_full_confidence(sparse):
    b, picked = sparse
    with Catalog.open(b.path) as cat:
        sugg = suggest_tags(cat, min_confidence=0.0)
    assert sugg and not {s.track_id for s in sugg} & set(picked)
    assert max(s.confidence for s in sugg) < 0.7  # at most 3 neighbours: never near 1.0
    for s in sugg:
        assert s.n_consulted == 3 and 0 <= s.n_neighbors <= 2
        assert s.why.startswith(f"from {s.n_neighbors} of 3 neighbours") or s.evidence == "model"
    # a single-valued category: one track's values share one total, below 1
    per = defaultdict(float)
    for s in sugg:
        per[(s.track_id, s.category)] += s.confidence
    assert max(per.values()) < 1.0
    for (tid, category), total in per.items():
        confident = [s for s in sugg if s.track_id == tid and s.category == category and s.confidence >= 0.5]
        assert len(confident) <= 1, confident


def test_closer_and_more_neighbours_mean_more_confidence(sparse):
    b, picked = sparse
    calm_piano = b.ids["piano-arpeggio"][1]  # same style as the calm/classical piano track
    with Catalog.open(b.path) as cat:
        sugg = [s for s in suggest_tags(cat, min_confidence=0.0, track_ids=[calm_piano]) if s.category == "mood"]
    by_tag = {s.tag: s for s in sugg}
    # calm: the nearest neighbour (same style) and one more agree; upbeat: one far neighbour
    assert by_tag["calm"].n_neighbors == 2 and by_tag["upbeat"].n_neighbors == 1
    assert by_tag["calm"].confidence > 3 * by_tag["upbeat"].confidence
    assert by_tag["upbeat"].confidence < 0.1


def test_cli_says_from_how_many_neighbours(sparse):
    import subprocess
    import sys

    b, _ = sparse
    p = subprocess.run([sys.executable, "-m", "soundalike", "tags", "suggest", "--catalog", str(b.path),
                        "--min-confidence", "0.2"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = [x for x in p.stdout.splitlines() if ":" in x and "suggestions for" not in x]
    assert lines and all("of 3 neighbours" in x for x in lines)
