"""Synthetic catalogs for the search, query and web tests (helpers, plus sanity tests).

A catalog of demo-style tracks (``audio.synth.demo_track``) written as wav files,
with file tags from the style's genre/mood/instrument -- some categories left out on
purpose -- and ``mfcc-stats`` embeddings, built with the Catalog API directly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundalike.audio.synth import DEMO_STYLES, demo_track
from soundalike.catalog.store import Catalog, Tag
from soundalike.models.zoo import load_analyzer

from conftest import BACKENDS

STYLES = sorted(DEMO_STYLES)
SR = 22050


@dataclass
class Built:
    path: Path | str  # catalog file, or a PostgreSQL URL
    audio_dir: Path
    ids: dict[str, list[int]]  # style -> track ids
    model_id: str
    untagged_genre: list[int]  # tracks whose genre tag was left out


def build_catalog(root: Path, *, per_style: int = 4, duration_s: float = 2.0,
                  drop_genre_every: int = 4, target: Path | str | None = None,
                  durations: tuple[float, ...] | None = None) -> Built:
    """Write ``per_style`` tracks of each demo style under ``root`` and catalog them
    (into ``target``: a file or a database URL; default ``root/catalog.sqlite``;
    ``durations``: the length of seed ``i`` is ``durations[i % len]``, else ``duration_s``)."""
    target = target if target is not None else root / "catalog.sqlite"
    audio_dir = root / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    analyzer = load_analyzer("mfcc-stats")
    cat = Catalog.open(target)
    cat.register_model(model_id=analyzer.model_id, name=analyzer.name, dim=analyzer.embedding_dim,
                       labels=list(analyzer.labels), label_category=analyzer.label_category)
    ids: dict[str, list[int]] = {s: [] for s in STYLES}
    untagged: list[int] = []
    n = 0
    for seed in range(per_style):
        for style in STYLES:
            length = durations[seed % len(durations)] if durations else duration_s
            y = demo_track(style, seed=seed, duration_s=length, sr=SR)
            p = audio_dir / f"{style}-{seed}.wav"
            sf.write(p, y, SR)
            data = p.read_bytes()
            tid = cat.upsert_track(path=str(p.resolve()), content_hash=hashlib.sha256(data).hexdigest(),
                                   size=len(data), mtime=p.stat().st_mtime, duration_s=len(y) / SR, sr=SR,
                                   channels=1, format="wav", title=f"{style} {seed}",
                                   artist=f"artist {seed % 2}", year=1990 + n)
            meta = DEMO_STYLES[style]
            tags = [Tag(meta["mood"], "mood", "file"), Tag(meta["instrument"], "instrument", "file")]
            if n % drop_genre_every == drop_genre_every - 1:
                untagged.append(tid)
            else:
                tags.append(Tag(meta["genre"], "genre", "file"))
            cat.set_tags(tid, tags, source="file")
            a = analyzer.analyze(y, SR)
            cat.put_analysis(tid, analyzer.model_id, a.embedding, a.predictions)
            ids[style].append(tid)
            n += 1
    cat.close()
    return Built(target, audio_dir, ids, analyzer.model_id, untagged)


@pytest.fixture(scope="session", params=BACKENDS)
def demo_catalog(request, tmp_path_factory) -> Built:
    """A 20-track catalog shared by tests that only read it, on each backend."""
    root = tmp_path_factory.mktemp("democat")
    target = None if request.param == "sqlite" else request.getfixturevalue("pg_server").new_database("demo")
    return build_catalog(root, target=target)


def test_fixture_catalog_is_consistent(tmp_path, catalog_target):
    b = build_catalog(tmp_path, per_style=1, duration_s=1.0, drop_genre_every=2, target=catalog_target)
    with Catalog.open(b.path) as cat:
        assert cat.count_tracks("ok") == len(STYLES)
        ids, X = cat.embeddings(b.model_id)
        assert X.shape == (len(STYLES), 40) and np.isfinite(X).all()
        assert all(not any(t.category == "genre" for t in cat.track_tags(i)) for i in b.untagged_genre)
