"""``musicnn-fusion``: the default similarity embedding, MTT and MSD musicnn side by side.

One tagger's penultimate layer is what soundalike compared first; measured on real
music (``benchmarks/bench_similarity.py``: 117 game-soundtrack tracks, 2,328
Philharmonia notes) it is beaten by fusing both musicnn models (MagnaTagATune: instruments,
moods; Million Song Dataset: genres, eras) and both of their summaries of a patch: the
200-d penultimate layer (what the tags are read from) and the 753-d mean over time of
the front-end and mid-end features (timbre and rhythm before they are squeezed into tags).

The embedding is four blocks, each the mean over patches L2-normalised so each block
weighs the same, concatenated and scaled to unit length::

    [MTT penultimate 200 | MSD penultimate 200 | MTT mean_pool 753 | MSD mean_pool 753] / 2

Both models read the same log-mel patches (one front end, computed once); the cost is
two networks per patch instead of one.  Predictions are the MagnaTagATune tags plus the
Million Song Dataset tags MTT does not have (genres, eras), each stored in its
vocabulary category (:mod:`soundalike.models.vocabulary`).
A catalog-level normalisation fitted on the catalog's own vectors (``soundalike index
adapt``, :mod:`soundalike.models.adapt`) improves it further.
"""

from __future__ import annotations

import functools
import hashlib
import threading

import numpy as np

from soundalike.errors import ModelError
from soundalike.models.base import Analysis

#: The analyzer's name everywhere (``--model``, the catalog's models table).
FUSION_NAME = "musicnn-fusion"
#: (model, layer) blocks in embedding order.
BLOCKS: tuple[tuple[str, str], ...] = (
    ("MTT_musicnn", "penultimate"),
    ("MSD_musicnn", "penultimate"),
    ("MTT_musicnn", "mean_pool"),
    ("MSD_musicnn", "mean_pool"),
)
#: Bumped whenever the fused vector is computed differently (part of the model id).
FUSION_VERSION = "1"
#: ``musicnn-vgg-fusion``: the same four blocks and MTT_vgg's 256-d penultimate layer
#: (a stored model of its own, not the ingest default; README "Similarity", VGG rows).
FUSION_VGG_NAME = "musicnn-vgg-fusion"
#: Every fused analyzer: name -> (model, layer) blocks in embedding order.
LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    FUSION_NAME: BLOCKS,
    FUSION_VGG_NAME: BLOCKS + (("MTT_vgg", "penultimate"),),
}


def block_dims(name: str = FUSION_NAME) -> tuple[int, ...]:
    """Lengths of fused analyzer ``name``'s blocks in embedding order, known without
    loading any weights."""
    from soundalike.models.pretrained import SPECS

    return tuple(SPECS[m].embedding_dims[layer] for m, layer in LAYOUTS[name])


def fuse(blocks: list[np.ndarray]) -> np.ndarray:
    """Concatenate pooled blocks ``[(..., d_i)]`` each L2-normalised, scaled to unit length.

    Returns float32 ``(..., sum d_i)``.  A zero block stays zero.
    """
    parts = []
    for b in blocks:
        b = np.asarray(b, np.float32)
        n = np.linalg.norm(b, axis=-1, keepdims=True).astype(np.float32)
        parts.append(np.divide(b, n, out=np.zeros_like(b), where=n > 0))
    return (np.concatenate(parts, axis=-1) / np.float32(np.sqrt(len(parts)))).astype(np.float32)


class FusionAnalyzer:
    """The :class:`~soundalike.models.base.Analyzer` for ``musicnn-fusion``.

    Attributes
    ----------
    name : ``"musicnn-fusion"`` (``"musicnn-fusion@bf16"`` in another precision)
    model_id : ``NAME-<12 hex>``: a hash of both models' ids (which carry their precision)
        and the block layout
    precision : both networks' arithmetic, ``"fp32"`` (the reference), ``"bf16"`` or ``"int8"``
    patch_grid : where its patches sit (the musicnn grid, shared by both networks)
    block_dims : lengths of the four blocks (200, 200, 753, 753)
    embedding_dim : 1906
    labels : MTT tags, then the MSD tags MTT lacks
    """

    name = FUSION_NAME
    label_category = "tag"
    multi_label = True
    #: Ingest's analysis budget for this analyzer when none is asked (ingest/plan.py): with
    #: 6 spread patches same-soundtrack P@10 stays within 0.01 of the full analysis (117
    #: gamemusic tracks: 0.5795 vs 0.5786; Philharmonia unchanged; every spread vector's
    #: nearest full vector is its own) -- README "Analysis budget".
    default_analysis = "spread:6"

    def __init__(self, precision: str = "fp32", name: str = FUSION_NAME) -> None:
        from soundalike.models.base import PatchGrid
        from soundalike.models.pretrained import PRECISIONS, load

        if precision not in PRECISIONS:
            raise ModelError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if name not in LAYOUTS:
            raise ModelError(f"unknown fused model {name!r}; choose one of {', '.join(LAYOUTS)}")
        self.precision = precision
        self.blocks = LAYOUTS[name]
        self.name = name if precision == "fp32" else f"{name}@{precision}"
        self.models = {m: load(m, precision=precision) for m in dict.fromkeys(m for m, _ in self.blocks)}
        first = next(iter(self.models.values()))
        for m in self.models.values():
            if m.mel_config != first.mel_config or m.patch_frames != first.patch_frames:
                raise ModelError(f"{name}: {m.name} reads other patches than {first.name}")
        self.sample_rate = first.sample_rate
        self.min_duration_s = first.patch_frames * first.mel_config.hop_length / first.sample_rate
        self.block_dims = [self.models[m].embedding_dims[layer] for m, layer in self.blocks]
        self.embedding_dim = int(sum(self.block_dims))
        # the layout is part of the id (musicnn-fusion's ids are what they always were)
        h = hashlib.sha256(f"{FUSION_VERSION};{self.blocks}".encode())
        for m in self.models.values():
            h.update(m.model_id.encode())
        self.model_id = f"{self.name}-{h.hexdigest()[:12]}"
        # Both networks read the same patches: patch k of a full analysis is log-mel frames
        # [187k, 187k + 187) of the centred STFT, i.e. an excerpt of 187 * hop + n_fft / 2
        # samples starting n_fft / 2 early (see PretrainedAnalyzer.patch_grid), so a spread
        # analysis's patches are exactly the full analysis's patches.
        hop, lead = first.mel_config.hop_length, first.mel_config.n_fft // 2
        self.patch_grid = PatchGrid(first.sample_rate, first.patch_frames * hop,
                                    first.patch_frames * hop + lead, lead)
        self._lead_frames = lead // hop
        self._sources: list[tuple[str, int]] = []  # (model, column) per label
        seen: set[str] = set()
        self.labels: list[str] = []
        for name, m in self.models.items():
            for j, lab in enumerate(m.labels):
                if lab not in seen:
                    seen.add(lab)
                    self.labels.append(lab)
                    self._sources.append((name, j))
        from soundalike.models.vocabulary import category_of

        # each label's catalog category (genre, mood, instrument ...): MTT's table first,
        # as the labels are MTT's first (models/vocabulary.py)
        self.label_categories = {lab: category_of(lab) for lab in self.labels}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FusionAnalyzer(model_id={self.model_id!r})"

    def analyze(self, y: np.ndarray, sr: int) -> Analysis:
        """Analyze mono float32 ``y`` at ``sr`` Hz.

        ``patch_embeddings`` are the fused vectors of each patch ``(n_patches, 1906)``
        (so a probe can sit on this analyzer); ``embedding`` fuses the per-block means.
        """
        y = np.asarray(y, np.float32)
        if y.ndim != 1:
            raise ModelError(f"{self.name}: analyze() takes mono samples (n,), got shape {y.shape}")
        first = next(iter(self.models.values()))
        return self._analysis(first.patches(y, sr))  # (n_patches, 96, 187), shared by both networks

    def analyze_excerpts(self, excerpts: list[np.ndarray], sr: int) -> Analysis:
        """Analyze excerpts cut on :attr:`patch_grid` in one batched pass per network.

        An excerpt of exactly ``patch_grid.length`` samples at ``patch_grid.sr`` is one
        patch whose log-mel frames equal the full analysis's frames of that patch; any
        other excerpt is cut into patches as a whole signal is.  The result is what
        :meth:`analyze` gives for those patches.
        """
        if not excerpts:
            raise ModelError(f"{self.name}: no excerpts to analyze")
        g, first = self.patch_grid, next(iter(self.models.values()))
        on_grid = [i for i, y in enumerate(excerpts) if sr == g.sr and len(y) == g.length]
        parts: list[np.ndarray | None] = [None] * len(excerpts)
        if on_grid:
            mel = first.logmel(np.stack([np.asarray(excerpts[i], np.float32) for i in on_grid]), sr)
            mel = mel[:, :, self._lead_frames : self._lead_frames + first.patch_frames]
            for j, i in enumerate(on_grid):
                parts[i] = mel[j : j + 1]
        for i, y in enumerate(excerpts):
            if parts[i] is None:
                parts[i] = first.patches(np.asarray(y, np.float32), sr)
        return self._analysis(np.concatenate(parts))

    def _analysis(self, patches: np.ndarray) -> Analysis:
        outs = {name: m.run_patches(patches) for name, m in self.models.items()}
        per_patch = [outs[m][layer] for m, layer in self.blocks]
        embedding = fuse([p.mean(axis=0) for p in per_patch])
        probs = {name: o["probs"] for name, o in outs.items()}
        track_probs = {name: p.mean(axis=0) for name, p in probs.items()}
        predictions = {lab: float(track_probs[m][j]) for lab, (m, j) in zip(self.labels, self._sources)}
        patch_predictions = np.stack([probs[m][:, j] for m, j in self._sources], axis=1).astype(np.float32)
        return Analysis(embedding=embedding, predictions=predictions,
                        patch_embeddings=fuse(per_patch), patch_predictions=patch_predictions)


@functools.lru_cache(maxsize=8)
def load_fusion_analyzer(precision: str = "fp32", name: str = FUSION_NAME) -> FusionAnalyzer:
    """The fused analyzer ``name`` (:data:`LAYOUTS`) in ``precision`` (built once per process;
    the networks are shared with :func:`soundalike.models.pretrained.load`)."""
    return FusionAnalyzer(precision, name)
