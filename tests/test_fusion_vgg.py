"""``musicnn-vgg-fusion``: the default fusion's blocks plus MTT_vgg's penultimate layer,
a stored model of its own beside ``musicnn-fusion`` (whose vectors and id stay as they were)."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

import soundalike
from soundalike.audio import synth
from soundalike.catalog.store import Catalog
from soundalike.ingest import ingest
from soundalike.models.fusion import FUSION_NAME, FUSION_VGG_NAME, LAYOUTS, block_dims, load_fusion_analyzer
from soundalike.models.pretrained import load
from soundalike.models.zoo import DEFAULT_ANALYZER, load_analyzer, split_precision

SR = 16000


def test_vgg_fusion_is_the_default_fusion_plus_one_block():
    y = synth.demo_track("piano-arpeggio", seed=4, duration_s=12.0, sr=SR)
    old, new = load_fusion_analyzer(), load_analyzer(FUSION_VGG_NAME)
    assert new is load_fusion_analyzer(name=FUSION_VGG_NAME) and new.name == FUSION_VGG_NAME
    assert LAYOUTS[FUSION_VGG_NAME][:4] == LAYOUTS[FUSION_NAME]
    assert block_dims(FUSION_VGG_NAME) == (200, 200, 753, 753, 256) == tuple(new.block_dims)
    assert new.embedding_dim == 2162 and old.embedding_dim == 1906
    assert new.model_id.startswith(f"{FUSION_VGG_NAME}-") and new.model_id != old.model_id
    assert split_precision(DEFAULT_ANALYZER)[0] == FUSION_NAME  # not the ingest default
    a, b = old.analyze(y, SR), new.analyze(y, SR)
    # five unit blocks over sqrt(5) instead of four over 2: the musicnn part is the old vector rescaled
    np.testing.assert_allclose(b.embedding[:1906] * np.sqrt(5), a.embedding * 2, rtol=0, atol=1e-5)
    pen = load("MTT_vgg").run_patches(load("MTT_vgg").patches(y, SR))["penultimate"].mean(axis=0)
    np.testing.assert_allclose(b.embedding[1906:] * np.sqrt(5), pen / np.linalg.norm(pen), rtol=0, atol=1e-5)
    assert abs(float(np.linalg.norm(b.embedding)) - 1.0) < 1e-5
    assert b.patch_embeddings.shape[1] == 2162 and b.predictions == a.predictions


def test_both_fusions_live_side_by_side_in_one_catalog(tmp_path, capsys):
    music = tmp_path / "m"
    music.mkdir()
    for i, style in enumerate(sorted(synth.DEMO_STYLES)[:3]):
        sf.write(music / f"t{i}.flac", synth.demo_track(style, seed=i, duration_s=20.0, sr=SR), SR)
    db = tmp_path / "c.sqlite"
    s_old = ingest([music], catalog=db, workers=1)
    s_new = ingest([music], catalog=db, model=FUSION_VGG_NAME, workers=1)
    assert (s_old.ingested, s_new.ingested) == (3, 3) and s_old.model_id != s_new.model_id
    with Catalog.open(db) as cat:
        tracks = {t.path: t for t in cat.iter_tracks()}
        q = tracks[str(music / "t0.flac")].id  # three styles: no near-duplicates hidden
        for mid, dim in ((s_old.model_id, 1906), (s_new.model_id, 2162)):
            assert cat.model(mid).dim == dim
            hits = soundalike.similar(q, k=2, model=mid, catalog=cat)
            assert len(hits) == 2 and q not in {h.track.id for h in hits}
    from soundalike.cli import main

    assert main(["model", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[FUSION_VGG_NAME]["embedding_dims"] == {"embedding": 2162}
    assert not rows[FUSION_VGG_NAME]["default"] and rows[FUSION_NAME]["default"]
    assert rows[FUSION_NAME]["default_precision"] == "mixed-ef" and rows[FUSION_VGG_NAME]["default_precision"] is None


def test_adapt_and_tag_refiling_know_every_fused_layout():
    """``index adapt`` normalises a fused vector block by block, and ``ingest --refresh tags``
    refiles a fused model's tags: for the vgg fusion as for the default one."""
    from soundalike.search.adapt import _blocks_of

    assert _blocks_of(FUSION_VGG_NAME) == block_dims(FUSION_VGG_NAME) == (200, 200, 753, 753, 256)
    assert _blocks_of(FUSION_NAME) == block_dims(FUSION_NAME)
    assert _blocks_of("MTT_musicnn") == ()


def _catalog_of(path, name: str, dim: int, n: int = 12, predictions: dict[str, float] | None = None):
    """A real catalog whose one model is registered under ``name`` (as ingest names it) with
    ``n`` random ``dim``-d vectors (and the same predictions for every track)."""
    import numpy as np

    from soundalike.catalog.store import Catalog

    cat = Catalog.open(path)
    cat.register_model(model_id=f"{name}-1", name=name, dim=dim)
    rng = np.random.default_rng(0)
    for i in range(n):
        tid = cat.upsert_track(path=f"/music/{i}.ogg", content_hash=str(i), size=1, mtime=0.0)
        cat.put_analysis(tid, f"{name}-1", rng.normal(size=dim).astype(np.float32), predictions)
    return cat


def test_the_default_precision_is_adapted_block_by_block(tmp_path):
    """The ingest default is ``musicnn-fusion@mixed-ef``: a precision suffix must not hide the
    fused layout (it did: ``index adapt`` then normalised the 1906-d vector as one block)."""
    from soundalike.models.adapt import Adaptation
    from soundalike.search.adapt import _blocks_of, adapt_catalog

    assert _blocks_of(f"{FUSION_NAME}@mixed-ef") == _blocks_of(f"{FUSION_NAME}@bf16") == block_dims(FUSION_NAME)
    assert _blocks_of(f"{FUSION_VGG_NAME}@bf16") == block_dims(FUSION_VGG_NAME)
    assert _blocks_of("MTT_musicnn@bf16") == ()
    with _catalog_of(tmp_path / "c.sqlite", f"{FUSION_NAME}@mixed-ef", sum(block_dims(FUSION_NAME))) as cat:
        rep = adapt_catalog(cat)
        stored = Adaptation.from_bytes(cat.get_adaptation(rep.model_id).data)
        assert stored.blocks == (200, 200, 753, 753)


def test_tags_of_a_precision_model_are_refiled(tmp_path):
    """``ingest --refresh tags`` refiles the tags of ``MTT_musicnn@bf16`` in MTT's vocabulary
    (it refiled nothing for a model with a precision in its name)."""
    from soundalike.ingest.refresh import refresh

    preds = {"guitar": 0.9, "rock": 0.7, "slow": 0.6, "female": 0.1}
    with _catalog_of(tmp_path / "c.sqlite", "MTT_musicnn@bf16", 200, n=3, predictions=preds) as cat:
        summary = refresh(["tags"], catalog=cat, top_tags=3)
        assert summary.tags == 3
        tags = {(t.category, t.tag) for t in cat.track_tags(1, sources=["model"])}
        assert ("instrument", "guitar") in tags and ("genre", "rock") in tags and len(tags) == 3
