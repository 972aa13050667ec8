"""Pretrained music taggers out of the box: musicnn and VGG, trained on MTT and MSD.

``load("MTT_musicnn")`` returns a :class:`PretrainedModel` (loaded once per process)
that tags audio with 50 MagnaTagATune tags (instruments, moods, vocals, tempo) or,
for the ``MSD_*`` models, 50 Million Song Dataset tags (genres, eras, moods), and
gives embeddings for similarity.  The weights are the original authors' TF1
checkpoints, read from the installed ``musicnn`` wheel without importing its code or
TensorFlow; the networks are the PyTorch ports in :mod:`soundalike.models.musicnn`.

Input pipeline (what the checkpoints were trained on): mono audio resampled to
16 kHz, Hann STFT with ``n_fft=512``, ``hop_length=256``, 96 Slaney mel bands up to
8 kHz, ``log10(1 + 10000 * mel_power)`` in float32, cut into non-overlapping patches
of 187 frames (3 s).  Audio shorter than one patch is repeat-padded.

Examples
--------
>>> from soundalike.models import load
>>> from soundalike.audio.synth import drum_pattern
>>> m = load("MTT_musicnn")                                     # doctest: +SKIP
>>> p = m.predict(drum_pattern(sr=16000, duration_s=6.0), 16000)  # doctest: +SKIP
>>> p.top(3)                                                    # doctest: +SKIP
[('drums', 0.6...), ('beat', 0.5...), ('techno', 0.3...)]
"""

from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np

from soundalike.config import MelConfig
from soundalike.errors import CheckpointError, ModelError
from soundalike.models.base import Analysis

Layer = Literal["penultimate", "max_pool", "mean_pool"]
#: Arithmetic of the network (``--precision``): ``fp32`` is the reference the parity tests
#: pin; ``bf16`` runs under bfloat16 autocast (oneDNN's AVX-512 BF16 kernels where the CPU
#: has them); ``int8`` quantizes the dense layers' weights dynamically (the convolutions,
#: most of the work, stay fp32: torch quantizes only Linear/RNN layers dynamically).
#: ``mixed`` (musicnn only) runs the front end -- the five convolutions over the log-mel
#: patch, most of the work -- in bfloat16 on input centred per patch (the offset the log-mel
#: sits on is what bf16 rounding loses most detail to; see ``FreqMaxBlock.forward``), and
#: the mid-end and dense layers in fp32 (:data:`MIXED_PARTS`).  ``mixed-ef`` (musicnn only)
#: is ``mixed`` with three changes that keep the bf16 numbers nearer fp32 at the same cost
#: (:data:`MIXED_EF_PARTS`, ``FreqMaxBlock.forward_bf16``): each frame of the input is
#: centred on its own mean (not the patch on one), each convolution's bias is added in
#: fp32 after the max over frequency, and its filters are rounded to bf16 with error
#: feedback (``musicnn.round_bf16_ef``) instead of each weight to its nearest.
Precision = Literal["fp32", "bf16", "int8", "mixed", "mixed-ef"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8", "mixed", "mixed-ef")
#: The parts of a musicnn network that ``mixed`` runs in bf16 (``Musicnn.bf16_parts``).
MIXED_PARTS = frozenset({"timbral", "temporal", "center"})
#: ... and ``mixed-ef``.
MIXED_EF_PARTS = frozenset({"timbral", "temporal", "bias", "ef", "frames"})
#: The musicnn-only precisions and the front-end parts they run in bf16.
FRONT_END_PARTS = {"mixed": MIXED_PARTS, "mixed-ef": MIXED_EF_PARTS}

#: The exact front end the musicnn checkpoints expect.
MUSICNN_MEL = MelConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96, fmin=0.0,
                        fmax=8000.0, compression="log10", log_c=10000.0, top_db=None)
#: Frames per patch: 3 s at 16 kHz, hop 256 (``1 + (48000 - 256) // 256``).
PATCH_FRAMES = 187
#: Patches handed to the network at a time by default (``predict``/``embed``/``analyze``,
#: and so ingest and tag).  Any batch is split into micro-batches over the worker threads.
DEFAULT_BATCH = 16
#: Most patches one forward pass gets.  A pass's activation maps are ~5-9 MB per patch;
#: past ~2 patches glibc hands such buffers back to the kernel on free (mmap threshold),
#: so every pass page-faults and zero-fills them again, and they fall out of cache.
#: Single-threaded patches/s at 1/2/4/8 patches per pass: vgg 107/71/71/59 as is,
#: 103/109/107/102 with glibc told to keep the memory (M_MMAP_THRESHOLD 32 MiB,
#: M_TRIM_THRESHOLD 256 MiB); musicnn 56/56/56/41.  Passes of <= 2 patches run at full
#: speed without touching the process's malloc settings.
MICRO_BATCH = 2


def default_threads() -> int:
    """Patch-parallel inference threads: ``$SOUNDALIKE_THREADS`` or the number of CPUs.

    Inference runs each chunk of patches on torch with one intra-op thread and spreads
    chunks over this many Python threads itself.  torch's own OpenMP parallelism
    spin-waits and collapses when the CPUs are shared: on a busy 2-core machine two
    OpenMP threads ran 10-20x slower than one (benchmarks/bench_models.py); blocking
    worker threads degrade gracefully instead, as TensorFlow's thread pool does.
    """
    import os

    env = os.environ.get("SOUNDALIKE_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, os.cpu_count() or 1)


_thread_state = threading.local()


def _single_threaded() -> None:
    """One torch intra-op thread for the calling thread (OpenMP settings are per thread)."""
    if not getattr(_thread_state, "single", False):
        import torch

        torch.set_num_threads(1)
        _thread_state.single = True


#: Bumped whenever the port's arithmetic changes in a way that could move outputs.
PORT_VERSION = "1"

#: MagnaTagATune tags, in the checkpoints' output order.
MTT_LABELS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice",
    "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice",
    "weird", "country", "metal", "female voice", "choral",
)
#: Million Song Dataset (last.fm) tags, in output order, lower-cased as catalog tags are.
MSD_LABELS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "mellow", "electronica", "80s", "folk", "90s", "chill",
    "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "hip-hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "progressive rock",
    "60s", "rnb", "indie pop", "sad", "house", "happy",
)


def _warn_if_bf16_is_slow(precision: str) -> None:
    """Say so when ``precision`` runs bf16 kernels this CPU has no native support for
    (``mixed-ef``, the default analyzer's, emulates its bf16 in fp32 there instead)."""
    from soundalike.errors import SoundalikeWarning
    from soundalike.models.musicnn import native_bf16

    if not native_bf16():
        import warnings

        warnings.warn(f"precision {precision}: this CPU has no native bfloat16 kernels (no AVX-512), "
                      "so it runs many times slower than fp32 here; use fp32 or mixed-ef",
                      SoundalikeWarning, stacklevel=3)


@dataclass(frozen=True)
class ModelSpec:
    """One pretrained model: its name in the wheel, architecture and tag set.

    Attributes
    ----------
    name : folder name in the musicnn wheel, e.g. ``"MTT_musicnn"``
    arch : ``"musicnn"`` or ``"vgg"``
    dataset : ``"MTT"`` (MagnaTagATune) or ``"MSD"`` (Million Song Dataset)
    labels : tag names in output order
    roc_auc, pr_auc : published test scores (``experiment.result`` in the wheel)
    """

    name: str
    arch: Literal["musicnn", "vgg"]
    dataset: Literal["MTT", "MSD"]
    labels: tuple[str, ...]
    roc_auc: float
    pr_auc: float

    @property
    def embedding_dims(self) -> dict[str, int]:
        """Layer name -> embedding length, known without loading the weights."""
        return dict(ARCH_EMBEDDING_DIMS[self.arch])


#: Embedding sizes per architecture (checked against the loaded network at load time).
ARCH_EMBEDDING_DIMS: dict[str, dict[str, int]] = {
    "musicnn": {"penultimate": 200, "max_pool": 753, "mean_pool": 753},
    "vgg": {"penultimate": 256},
}


#: The registry of pretrained models (one source of truth for names, tags and scores).
SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("MTT_musicnn", "musicnn", "MTT", MTT_LABELS, 0.9067, 0.3831),
        ModelSpec("MTT_vgg", "vgg", "MTT", MTT_LABELS, 0.9030, 0.3823),
        ModelSpec("MSD_musicnn", "musicnn", "MSD", MSD_LABELS, 0.8802, 0.2891),
        ModelSpec("MSD_vgg", "vgg", "MSD", MSD_LABELS, 0.8768, 0.2819),
    )
}


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Prediction:
    """Tag probabilities of one signal (or a batch of signals).

    Attributes
    ----------
    labels : tag names, the last axis of both arrays
    patch_probs : float32 ``(..., n_patches, n_labels)``: each 3-s patch's sigmoid outputs
    probs : float32 ``(..., n_labels)``: track level, the mean over patches
    patch_starts_s : float64 ``(n_patches,)``: start time of each patch in seconds
    """

    labels: tuple[str, ...]
    patch_probs: np.ndarray
    probs: np.ndarray
    patch_starts_s: np.ndarray

    def top(self, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` most probable tags of a single (unbatched) signal, highest first."""
        if self.probs.ndim != 1:
            raise ValueError("top() needs an unbatched prediction; index the batch first")
        order = np.argsort(-self.probs, kind="stable")[:n]
        return [(self.labels[i], float(self.probs[i])) for i in order]


@dataclass(frozen=True)
class Embedding:
    """Embeddings of one signal (or a batch of signals).

    Attributes
    ----------
    layer : which layer (``"penultimate"`` or ``"max_pool"``)
    patch_embeddings : float32 ``(..., n_patches, dim)``: each patch's own vector
    embedding : float32 ``(..., dim)``: the track-level mean over patches
    patch_starts_s : float64 ``(n_patches,)``
    """

    layer: str
    patch_embeddings: np.ndarray
    embedding: np.ndarray
    patch_starts_s: np.ndarray


# --------------------------------------------------------------------------- patching


def patches_from_logmel(mel: np.ndarray, *, n_frames: int = PATCH_FRAMES,
                        hop_frames: int | None = None) -> np.ndarray:
    """Cut log-mel spectrograms into fixed-length patches.

    Parameters
    ----------
    mel : float32 ``(..., n_mels, T)``
    n_frames : frames per patch
    hop_frames : frames between patch starts; ``None`` = ``n_frames`` (non-overlapping,
        a trailing remainder shorter than a patch is dropped, as musicnn does)

    Returns
    -------
    float32 ``(..., n_patches, n_mels, n_frames)``; ``T < n_frames`` gives one patch,
    the spectrogram repeated in time until it is long enough (repeat-padding).
    """
    mel = np.asarray(mel, dtype=np.float32)
    T = mel.shape[-1]
    if T == 0:
        raise ValueError("empty spectrogram")
    if T < n_frames:
        reps = -(-n_frames // T)
        mel = np.concatenate([mel] * reps, axis=-1)[..., :n_frames]
        T = n_frames
    hop = hop_frames or n_frames
    starts = range(0, T - n_frames + 1, hop)
    return np.stack([mel[..., s : s + n_frames] for s in starts], axis=-3)


# --------------------------------------------------------------------------- the model


class PretrainedModel:
    """A pretrained tagger: audio in, tag probabilities and embeddings out.

    Get one with :func:`load`; it is loaded once per process and reused.

    Attributes
    ----------
    name : e.g. ``"MTT_musicnn"``
    spec : its :class:`ModelSpec`
    labels : tag names in output order
    sample_rate : 16000 (input is resampled to it)
    mel_config : :data:`MUSICNN_MEL`
    patch_frames : 187
    model_id : ``NAME-<12 hex>``, a hash of the weights, front end, port version and, for
        another precision than fp32, the precision (``MTT_musicnn@bf16-<12 hex>``)
    precision : ``"fp32"``, ``"bf16"``, ``"int8"``, ``"mixed"`` or ``"mixed-ef"`` (musicnn only)
    embedding_dims : layer name -> embedding length (``max_pool`` only for musicnn)
    """

    sample_rate: int = MUSICNN_MEL.sample_rate
    mel_config: MelConfig = MUSICNN_MEL
    patch_frames: int = PATCH_FRAMES

    def __init__(self, spec: ModelSpec, precision: Precision = "fp32"):
        from soundalike.models.musicnn import build_network
        from soundalike.models.tfbundle import musicnn_checkpoint_dir, read_bundle

        if precision not in PRECISIONS:
            raise ModelError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        self.spec = spec
        self.precision = precision
        # Another arithmetic makes other (close, not equal) numbers: another model id, and a
        # name that says so, so that `--model MTT_musicnn@bf16` finds it again.
        self.name = spec.name if precision == "fp32" else f"{spec.name}@{precision}"
        self.labels: list[str] = list(spec.labels)
        ckpt = musicnn_checkpoint_dir(spec.name)
        weights = read_bundle(ckpt)
        self.net = build_network(spec.arch, weights, n_classes=len(spec.labels))
        self.embedding_dims: dict[str, int] = {
            k: v for k, v in self.net.embedding_dims.items() if k in ("penultimate", "max_pool", "mean_pool")
        }
        if self.embedding_dims != spec.embedding_dims:
            raise CheckpointError(f"{ckpt}: embedding sizes {self.embedding_dims} differ from the "
                                  f"expected {spec.embedding_dims}")
        h = hashlib.sha256()
        for k in sorted(weights):
            h.update(k.encode())
            h.update(np.ascontiguousarray(weights[k]).tobytes())
        h.update(self.mel_config.fingerprint().encode())
        h.update(f"patch={self.patch_frames};arch={spec.arch};port={PORT_VERSION}".encode())
        if precision != "fp32":
            h.update(f";precision={precision}".encode())
            if precision == "int8":
                self.net = _quantize_dense(self.net)
            if precision in FRONT_END_PARTS:
                if not hasattr(self.net, "bf16_parts"):
                    raise ModelError(f"precision {precision}: {spec.name} is not a musicnn (it has no front "
                                     "end to run in bf16 alone); use fp32, bf16 or int8")
                self.net.bf16_parts = FRONT_END_PARTS[precision]
                if "ef" in self.net.bf16_parts:  # the error-fed bf16 filters, made once, here
                    for block in self.net.frontend:
                        block.bf16_filters(ef=True)
        if precision in ("bf16", "mixed"):
            _warn_if_bf16_is_slow(precision)
        if spec.arch == "musicnn":  # a mistyped override is an error now, not one mid-ingest
            from soundalike.models.musicnn import front_end_nchw, native_bf16

            native_bf16(), front_end_nchw()
        self.model_id = f"{self.name}-{h.hexdigest()[:12]}"
        self._lock = threading.Lock()
        self.threads = default_threads()
        self._pool = None

    def _executor(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=f"{self.name}-infer")
        return self._pool

    def __repr__(self) -> str:
        return f"PretrainedModel({self.name!r}, model_id={self.model_id!r})"

    # ------------------------------------------------------------------ pipeline

    def logmel(self, y: np.ndarray, sr: int) -> np.ndarray:
        """Log-mel spectrogram the model reads, float32 ``(..., 96, n_frames)``.

        ``y`` is mono float ``(n,)`` or a batch ``(batch, n)`` at ``sr`` Hz.
        """
        from soundalike.audio.features import logmel
        from soundalike.audio.resample import resample

        y = np.asarray(y, dtype=np.float32)
        if y.ndim not in (1, 2):
            raise ModelError(f"{self.name}: expected samples (n,) or (batch, n), got shape {y.shape}")
        if y.shape[-1] == 0:
            raise ModelError(f"{self.name}: empty audio (0 samples)")
        if not np.isfinite(y).all():
            raise ModelError(f"{self.name}: audio contains NaN or infinite samples")
        if sr != self.sample_rate:
            y = resample(y, int(sr), self.sample_rate)
        return logmel(y, self.mel_config)

    def patches(self, y: np.ndarray, sr: int, *, hop_s: float | None = None) -> np.ndarray:
        """Model input patches, float32 ``(..., n_patches, 96, 187)``.

        ``hop_s`` is the time between patch starts (default: one patch, no overlap).
        """
        hop = None if hop_s is None else max(1, int(round(hop_s * self.sample_rate / self.mel_config.hop_length)))
        return patches_from_logmel(self.logmel(y, sr), n_frames=self.patch_frames, hop_frames=hop)

    def run_patches(self, patches: np.ndarray, *, batch_size: int = DEFAULT_BATCH) -> dict[str, np.ndarray]:
        """Run the network on patches ``(N, 96, 187)``, ``batch_size`` at a time.

        Each batch is split into micro-batches of at most :data:`MICRO_BATCH` patches
        (as evenly as possible over the threads) that run in parallel on
        :attr:`threads` worker threads, each with one torch intra-op thread (see
        :func:`default_threads`).  Every patch's outputs depend on that patch alone.

        Returns
        -------
        dict
            ``"probs"`` ``(N, n_labels)``, ``"penultimate"`` ``(N, d)`` and, for musicnn,
            ``"max_pool"`` and ``"mean_pool"`` ``(N, 753)``; float32, every patch its own row.
        """
        import torch

        patches = np.ascontiguousarray(patches, dtype=np.float32)
        if patches.ndim != 3 or patches.shape[1:] != (self.mel_config.n_mels, self.patch_frames):
            raise ModelError(f"{self.name}: patches must be (N, {self.mel_config.n_mels}, "
                             f"{self.patch_frames}), got {patches.shape}")
        keys = ["penultimate", *(k for k in ("max_pool", "mean_pool") if k in self.embedding_dims)]
        outs: dict[str, list[np.ndarray]] = {"probs": [], **{k: [] for k in keys}}
        batch_size = max(1, batch_size)
        chunks = []
        for s in range(0, len(patches), batch_size):
            batch = patches[s : s + batch_size]
            n_parts = max(-(-len(batch) // MICRO_BATCH), min(self.threads, len(batch)))
            chunks += [c for c in np.array_split(batch, n_parts) if len(c)]

        bf16 = self.precision == "bf16"

        def run(chunk: np.ndarray) -> dict[str, np.ndarray]:
            _single_threaded()
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                r = self.net(torch.from_numpy(chunk))
                return {"probs": torch.sigmoid(r["logits"].float()).numpy(),
                        **{k: r[k].float().numpy() for k in keys}}

        with self._lock:
            if len(chunks) > 1 and self.threads > 1:
                results = list(self._executor().map(run, chunks))
            else:
                results = [run(c) for c in chunks]
        for r in results:
            for k in outs:
                outs[k].append(r[k])
        return {k: (np.concatenate(v) if v else np.zeros((0,), np.float32)).astype(np.float32, copy=False)
                for k, v in outs.items()}

    def _run(self, y: np.ndarray, sr: int, hop_s: float | None, batch_size: int):
        p = self.patches(y, sr, hop_s=hop_s)
        lead = p.shape[:-3]  # () or (batch,)
        n_patches = p.shape[-3]
        out = self.run_patches(p.reshape(-1, *p.shape[-2:]), batch_size=batch_size)
        out = {k: v.reshape(*lead, n_patches, v.shape[-1]) for k, v in out.items()}
        hop = hop_s if hop_s is not None else self.patch_frames * self.mel_config.hop_length / self.sample_rate
        starts = np.arange(n_patches, dtype=np.float64) * (
            round(hop * self.sample_rate / self.mel_config.hop_length) * self.mel_config.hop_s)
        return out, starts

    # ------------------------------------------------------------------ public API

    def predict(self, y: np.ndarray, sr: int, *, hop_s: float | None = None,
                batch_size: int = DEFAULT_BATCH) -> Prediction:
        """Tag probabilities per patch and for the whole signal.

        Parameters
        ----------
        y : float ``(n,)`` mono samples, or ``(batch, n)`` signals of equal length
        sr : sample rate of ``y`` in Hz (resampled to 16 kHz)
        hop_s : seconds between patch starts; ``None`` = 3 s (no overlap)
        batch_size : patches per forward pass

        Returns
        -------
        Prediction
            ``patch_probs`` ``(..., n_patches, 50)`` and track-level ``probs`` ``(..., 50)``.

        Raises
        ------
        ModelError
            Empty, non-finite or wrongly shaped input.
        """
        out, starts = self._run(y, sr, hop_s, batch_size)
        pp = out["probs"]
        return Prediction(tuple(self.labels), pp, pp.mean(axis=-2).astype(np.float32), starts)

    def embed(self, y: np.ndarray, sr: int, *, layer: Layer = "penultimate", hop_s: float | None = None,
              batch_size: int = DEFAULT_BATCH) -> Embedding:
        """Per-patch and track-level (mean over patches) embeddings.

        Parameters
        ----------
        y, sr, hop_s, batch_size : as in :meth:`predict`
        layer : ``"penultimate"`` (200-d for musicnn, 256-d for vgg), ``"max_pool"`` or
            ``"mean_pool"`` (musicnn only: 753-d max / mean over time of the front-end and
            mid-end features)

        Returns
        -------
        Embedding
            ``patch_embeddings`` ``(..., n_patches, dim)`` and ``embedding`` ``(..., dim)``.
        """
        if layer not in self.embedding_dims:
            raise ModelError(f"{self.name} has no layer {layer!r}; choose one of {sorted(self.embedding_dims)}")
        out, starts = self._run(y, sr, hop_s, batch_size)
        pe = out[layer]
        return Embedding(layer, pe, pe.mean(axis=-2).astype(np.float32), starts)

    def analyze(self, y: np.ndarray, sr: int) -> Analysis:
        """One pass giving both the track embedding (mean penultimate) and tag probabilities."""
        out, _ = self._run(y, sr, None, DEFAULT_BATCH)
        return self._analysis(out)

    def _analysis(self, out: dict[str, np.ndarray]) -> Analysis:
        probs = out["probs"].mean(axis=0)
        return Analysis(
            embedding=out["penultimate"].mean(axis=0).astype(np.float32),
            predictions={lab: float(p) for lab, p in zip(self.labels, probs)},
            patch_embeddings=out["penultimate"],
            patch_predictions=out["probs"],
        )


_load_lock = threading.Lock()


def available() -> list[str]:
    """Names of the pretrained models."""
    return list(SPECS)


def load(name: str, *, precision: Precision = "fp32") -> PretrainedModel:
    """The pretrained model called ``name``, loaded once per process and then reused.

    ``precision`` picks the network's arithmetic (see :data:`Precision`); fp32 is the
    reference.

    Raises
    ------
    ModelError
        Unknown name.
    CheckpointError
        The musicnn wheel is missing or its files are damaged.
    """
    if name not in SPECS:
        raise ModelError(f"unknown pretrained model {name!r}; choose one of {', '.join(SPECS)}")
    with _load_lock:
        return _load_cached(name, precision)


@functools.lru_cache(maxsize=None)
def _load_cached(name: str, precision: Precision = "fp32") -> PretrainedModel:
    return PretrainedModel(SPECS[name], precision)


def _quantize_dense(net):
    """The network with int8 dynamically quantized Linear layers (weights int8, activations
    quantized per batch); everything else unchanged."""
    import copy
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(net), {torch.nn.Linear},
                                                      dtype=torch.qint8)


class PretrainedAnalyzer:
    """The :class:`~soundalike.models.base.Analyzer` face of a pretrained model.

    ``embedding`` = mean penultimate embedding over patches; ``predictions`` = the
    track-level tag probabilities (independent sigmoids, so ``multi_label``).
    """

    label_category = "tag"
    multi_label = True
    min_duration_s = PATCH_FRAMES * MUSICNN_MEL.hop_length / MUSICNN_MEL.sample_rate

    def __init__(self, model: PretrainedModel):
        from soundalike.models.vocabulary import category_of

        self.model = model
        self.name = model.name
        self.model_id = model.model_id
        self.sample_rate = model.sample_rate
        self.labels = list(model.labels)
        self.embedding_dim = model.embedding_dims["penultimate"]
        from soundalike.models.base import PatchGrid

        hop = model.mel_config.hop_length
        # Patch k of a full analysis is frames [187k, 187k + 187) of the centred STFT;
        # frame t reads samples [t*hop - n_fft/2, t*hop + n_fft/2).  So patch k needs
        # samples [k*187*hop - 256, k*187*hop + 187*hop): an excerpt of 48,128 samples
        # with 256 samples of lead (zeros before the start of the track, as the full
        # analysis pads), whose centred frames 1..187 are exactly the patch's frames.
        lead = model.mel_config.n_fft // 2
        self.patch_grid = PatchGrid(model.sample_rate, PATCH_FRAMES * hop, PATCH_FRAMES * hop + lead, lead)
        self._lead_frames = lead // hop
        #: label -> catalog category (``genre``, ``instrument`` ...), from models/vocabulary.py
        self.label_categories = {lab: category_of(lab, dataset=model.spec.dataset) for lab in self.labels}

    def analyze_excerpts(self, excerpts: list[np.ndarray], sr: int) -> Analysis:
        """Analyze excerpts cut on :attr:`patch_grid` in one batched pass.

        An excerpt of exactly ``patch_grid.length`` samples at ``patch_grid.sr`` is one
        patch, computed so that its log-mel frames (and so its network outputs) equal the
        full analysis's frames of that patch; any other excerpt is cut into patches as a
        whole signal is.  The track embedding and tag probabilities are the means over
        all patches, as in :meth:`analyze`.

        Parameters
        ----------
        excerpts : mono float ``(n_i,)`` arrays at ``sr`` Hz
        sr : their sample rate
        """
        if not excerpts:
            raise ModelError(f"{self.name}: no excerpts to analyze")
        g, m = self.patch_grid, self.model
        on_grid = [i for i, y in enumerate(excerpts) if sr == g.sr and len(y) == g.length]
        parts: list[np.ndarray | None] = [None] * len(excerpts)
        if on_grid:
            mel = m.logmel(np.stack([np.asarray(excerpts[i], np.float32) for i in on_grid]), sr)
            mel = mel[:, :, self._lead_frames : self._lead_frames + m.patch_frames]  # (n, 96, 187)
            for j, i in enumerate(on_grid):
                parts[i] = mel[j : j + 1]
        for i, y in enumerate(excerpts):
            if parts[i] is None:
                parts[i] = m.patches(np.asarray(y, np.float32), sr)
        return m._analysis(m.run_patches(np.concatenate(parts)))

    def analyze(self, y: np.ndarray, sr: int) -> Analysis:
        """Analyze mono float32 ``y`` at ``sr`` Hz."""
        y = np.asarray(y, dtype=np.float32)
        if y.ndim != 1:
            raise ModelError(f"{self.name}: analyze() takes mono samples (n,), got shape {y.shape}")
        return self.model.analyze(y, sr)


def load_pretrained_analyzer(name: str, *, precision: Precision = "fp32") -> PretrainedAnalyzer:
    """An :class:`~soundalike.models.base.Analyzer` over :func:`load` ``(name, precision=...)``."""
    return PretrainedAnalyzer(load(name, precision=precision))
