"""The four trainable model families, each usable single-label or multi-label.

Every family is a ``torch.nn.Module`` with the same interface:

``forward(x)``  logits ``(batch, n_labels)``; softmax + cross-entropy for single-label
                tasks, sigmoid + BCE-with-logits for multi-label (the loss lives in
                :mod:`soundalike.train.fit`, so one network serves both)
``embed(x)``    the penultimate layer ``(batch, embedding_dim)``: the embedding a
                trained run gives ingest and similarity search
``input_kind``  ``"waveform"``: ``x`` is float32 ``(batch, n_samples)`` mono audio at
                ``sample_rate``; ``"embedding"``: ``x`` is float32 ``(batch, input_dim)``
                frozen backbone embeddings (the probe)

The spectral front-ends (log-mel, MFCC) run inside ``forward`` on the batch, in torch,
so augmentation can work on audio and a checkpoint carries its feature parameters.

Families
--------
``mfcc-mlp``      mean/std of MFCCs and their deltas over the window's non-silent
                  frames -> dense network (GTZAN-style genre classifier)
``waveform-cnn``  strided 1-D conv front-end on raw samples, conv/pool blocks,
                  global max+mean pooling (MagnaTagATune-style tagger)
``mel-cnn``       short-chunk 2-D CNN on log-mel (3x3 conv, batch-norm, max-pool blocks),
                  max+mean pooled over time only, so the frequency position survives
``probe``         linear or one-hidden-layer head on frozen pretrained embeddings
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from soundalike.errors import ConfigError

Family = Literal["mfcc-mlp", "waveform-cnn", "mel-cnn", "probe"]
FAMILIES: tuple[str, ...] = ("mfcc-mlp", "waveform-cnn", "mel-cnn", "probe")


@dataclass(frozen=True)
class FamilyConfig:
    """Hyper-parameters of one family (unused fields are ignored by the others).

    Attributes
    ----------
    family : one of :data:`FAMILIES`
    n_labels : output size
    sample_rate : input rate in Hz (waveform families)
    window_s : training/inference window length in seconds
    n_mels, n_fft, hop_length : spectral front-end (mfcc-mlp, mel-cnn)
    n_mfcc : MFCC count (mfcc-mlp)
    channels : conv widths (waveform-cnn, mel-cnn)
    hidden : hidden width (mfcc-mlp; probe: 0 means a linear probe)
    embedding_dim : penultimate width
    dropout : before the output layer
    input_dim : backbone embedding size (probe)
    freq_mask, time_mask : SpecAugment (mel-cnn, training only): widest band of mel bins
        and of frames set to the spectrogram's mean, one of each per window (0: off)
    hop_fraction : hop between a track's inference windows, as a fraction of the window
        (1.0: back to back; 0.5: half-overlapping); the last window always ends at the
        track's end, so no window is mostly padding
    resnorm : residual normalisation (mel-cnn, training and inference; Kim et al. 2021):
        the globally batch-normalised log-mel ``h`` becomes ``resnorm * h + FreqNorm(h)``,
        ``FreqNorm`` normalising each item's mel bands over time (its recording chain's
        spectral colour); 0: off
    """

    family: str
    n_labels: int
    sample_rate: int = 16000
    window_s: float = 3.0
    n_mels: int = 64
    n_fft: int = 1024
    hop_length: int = 256
    n_mfcc: int = 20
    channels: tuple[int, ...] = (16, 32, 64, 128)
    hidden: int = 256
    embedding_dim: int = 128
    dropout: float = 0.3
    input_dim: int = 0
    freq_mask: int = 0
    time_mask: int = 0
    hop_fraction: float = 1.0
    resnorm: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"unknown model family {self.family!r}: choose one of {', '.join(FAMILIES)}")
        if self.n_labels < 1:
            raise ConfigError("n_labels must be at least 1")
        if self.family == "probe" and self.input_dim <= 0:
            raise ConfigError("probe needs input_dim (the backbone's embedding size)")
        if not 0.0 < self.hop_fraction <= 1.0:
            raise ConfigError(f"hop_fraction must be in (0, 1], got {self.hop_fraction}")
        if self.resnorm < 0.0:
            raise ConfigError(f"resnorm must be at least 0 (0: off), got {self.resnorm}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))

    @property
    def hop_samples(self) -> int:
        """Hop between inference windows in samples."""
        return max(1, int(round(self.window_samples * self.hop_fraction)))

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def input_kind(self) -> str:
        return "embedding" if self.family == "probe" else "waveform"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        if not d["resnorm"]:  # off: left out, so runs from before it keep their config and model id
            del d["resnorm"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FamilyConfig:
        return cls(**{**d, "channels": tuple(d.get("channels", (16, 32, 64, 128)))})

    def mel_config(self):
        from soundalike.config import MelConfig

        return MelConfig(sample_rate=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length,
                         n_mels=self.n_mels, compression="db", top_db=80.0)


#: Defaults per family that differ from the dataclass defaults.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "mfcc-mlp": {"hop_length": 512, "n_mels": 64, "hidden": 256, "embedding_dim": 128},
    "waveform-cnn": {"channels": (16, 16, 32, 64, 128)},
    "mel-cnn": {"channels": (16, 32, 64, 64), "hop_length": 512},
    "probe": {"hidden": 256, "embedding_dim": 256, "dropout": 0.2},
}


def make_config(family: str, *, n_labels: int, **overrides: Any) -> FamilyConfig:
    """A :class:`FamilyConfig` with the family's defaults, then ``overrides``."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}: choose one of {', '.join(FAMILIES)}")
    params = {**FAMILY_DEFAULTS[family], **{k: v for k, v in overrides.items() if v is not None}}
    if family == "probe" and params.get("hidden", 0) == 0:
        params["embedding_dim"] = params.get("input_dim", 0)
    return FamilyConfig(family=family, n_labels=n_labels, **params)


def band_stats(S, eps: float = 1e-6):
    """Per-item, per-band mean and standard deviation of spectrograms ``(B, C, M, T)`` over
    channels and time: ``(mean, std)``, each ``(B, 1, M, 1)`` (population std, ``eps`` added
    to the variance)."""
    mu = S.mean(dim=(1, 3), keepdim=True)
    var = S.var(dim=(1, 3), keepdim=True, unbiased=False)
    return mu, (var + eps).sqrt()


def freq_mixstyle(S, *, p: float, alpha: float, rng: np.random.Generator, own: float = 0.0,
                  eps: float = 1e-6):
    """Freq-MixStyle (Schmid et al., DCASE 2022): other recording chains on the spectrogram.

    With probability ``p`` (one draw per batch from ``rng``) every item of ``S`` ``(B, C, M,
    T)`` is normalised per mel band (mean and std over channels and time) and re-scaled with a
    convex mix of its own and another item's band statistics, ``lam * own + (1 - lam) *
    other``, ``lam ~ Beta(alpha, alpha)`` per item, the other item a random permutation of the
    batch.  The band statistics (a microphone's, a room's, a soundfont's spectral colour) move;
    the pattern within each band (the note) stays.  The statistics are not differentiated
    through.  ``rng`` (numpy) makes it reproducible: seed it with the run, epoch and batch.
    Otherwise (and for a batch of one) ``S`` is returned unchanged.

    ``own`` is the least share of an item's own statistics: ``lam = own + (1 - own) * Beta``
    (0: the published method, where ``lam`` near 0 hands an item another's band statistics
    whole -- for instruments, whose band levels are much of their timbre, another
    instrument's envelope under this one's label).
    """
    import torch

    if p <= 0.0 or len(S) < 2 or rng.random() >= p:
        return S
    B = len(S)
    lam = own + (1.0 - own) * rng.beta(alpha, alpha, size=B)
    lam = torch.from_numpy(lam.astype(np.float32)).to(S).view(B, 1, 1, 1)
    perm = torch.from_numpy(rng.permutation(B))
    mu, sig = (t.detach() for t in band_stats(S, eps))
    mu_mix = lam * mu + (1.0 - lam) * mu[perm]
    sig_mix = lam * sig + (1.0 - lam) * sig[perm]
    return (S - mu) / sig * sig_mix + mu_mix


# The classes are defined lazily so importing this module does not import torch.
def __getattr__(name: str):
    if name in ("MfccMLP", "WaveformCNN", "MelCNN", "Probe"):
        return _define()[name]
    raise AttributeError(name)


_DEFINED: dict[str, type] = {}


def _define() -> dict[str, type]:
    if _DEFINED:
        return _DEFINED
    import torch
    from torch import nn

    from soundalike.audio.features import _dct_matrix_t, logmel

    class _Base(nn.Module):
        input_kind = "waveform"

        def __init__(self, config: FamilyConfig):
            super().__init__()
            self.config = config
            self.head = nn.Sequential(nn.Dropout(config.dropout),
                                      nn.Linear(config.embedding_dim, config.n_labels))

        def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
            raise NotImplementedError

        def embed(self, x: torch.Tensor) -> torch.Tensor:
            """Penultimate activations ``(batch, embedding_dim)``."""
            return self.features(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x))

        def example_input(self, batch: int = 2) -> torch.Tensor:
            return torch.zeros(batch, self.config.window_samples)

    class MfccMLP(_Base):
        """MFCC statistics -> dense network."""

        def __init__(self, config: FamilyConfig):
            super().__init__(config)
            m = config.n_mfcc
            self.register_buffer("dct", _dct_matrix_t(m, config.n_mels).clone(), persistent=False)
            self.norm = nn.BatchNorm1d(4 * m)
            self.body = nn.Sequential(
                nn.Linear(4 * m, config.hidden), nn.ReLU(), nn.Dropout(config.dropout),
                nn.Linear(config.hidden, config.embedding_dim), nn.ReLU())

        def stats(self, x: torch.Tensor) -> torch.Tensor:
            """``(batch, n)`` audio -> ``(batch, 4*n_mfcc)`` mean/std of MFCCs and deltas."""
            with torch.no_grad():
                S_db = logmel(x, self.config.mel_config())  # (B, M, T)
                c = torch.matmul(self.dct, S_db)  # (B, m, T)
                energy = S_db.amax(dim=1)  # (B, T)
                # Statistics over frames within 60 dB of the window's loudest: a short note
                # padded with silence describes the note, not the padding.
                w = (energy > energy.amax(dim=1, keepdim=True) - 60.0).float().unsqueeze(1)
                d = torch.diff(c, dim=2, prepend=c[:, :, :1])
                out = []
                for f in (c, d):
                    n = w.sum(dim=2).clamp_min(1.0)
                    mean = (f * w).sum(dim=2) / n
                    var = ((f - mean.unsqueeze(2)) ** 2 * w).sum(dim=2) / n
                    out += [mean, var.clamp_min(1e-6).sqrt()]
                return torch.cat(out, dim=1)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(self.norm(self.stats(x)))

    class WaveformCNN(_Base):
        """Strided 1-D conv front-end on samples, then conv/BN/ReLU/max-pool blocks."""

        def __init__(self, config: FamilyConfig):
            super().__init__(config)
            ch = config.channels
            layers: list[nn.Module] = [nn.Conv1d(1, ch[0], kernel_size=64, stride=16, padding=24),
                                       nn.BatchNorm1d(ch[0]), nn.ReLU()]
            pools = [4, 4, 4, 3] + [2] * 8
            for i, (a, b) in enumerate(zip(ch[:-1], ch[1:])):
                layers += [nn.Conv1d(a, b, kernel_size=3, padding=1), nn.BatchNorm1d(b), nn.ReLU(),
                           nn.MaxPool1d(pools[i], ceil_mode=True)]
            self.conv = nn.Sequential(*layers)
            self.proj = nn.Sequential(nn.Linear(2 * ch[-1], config.embedding_dim), nn.ReLU())

        def features(self, x: torch.Tensor) -> torch.Tensor:
            h = self.conv(x.unsqueeze(1))
            return self.proj(torch.cat([h.amax(dim=2), h.mean(dim=2)], dim=1))

    class MelCNN(_Base):
        """Short-chunk 2-D CNN on log-mel: 3x3 conv + BN + ReLU + 2x2 max-pool blocks."""

        def __init__(self, config: FamilyConfig):
            super().__init__(config)
            ch = (1, *config.channels)
            layers: list[nn.Module] = [nn.BatchNorm2d(1)]
            for a, b in zip(ch[:-1], ch[1:]):
                layers += [nn.Conv2d(a, b, kernel_size=3, padding=1), nn.BatchNorm2d(b), nn.ReLU(),
                           nn.MaxPool2d(2, ceil_mode=True)]
            self.conv = nn.Sequential(*layers)
            n_freq = config.n_mels
            for _ in config.channels:
                n_freq = -(-n_freq // 2)
            # Pool over time only: an instrument's register (where in frequency) matters.
            self.proj = nn.Sequential(nn.Linear(2 * ch[-1] * n_freq, config.embedding_dim), nn.ReLU())

        def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                S = logmel(x, self.config.mel_config()).unsqueeze(1)  # (B, 1, M, T)
                if self.training and (self.config.freq_mask or self.config.time_mask):
                    S = self._mask(S)
                return S

        def _mask(self, S: torch.Tensor) -> torch.Tensor:
            """SpecAugment: one random band of mel bins and one of frames per item -> the item's mean."""
            B, _, M, T = S.shape
            fill = S.mean(dim=(1, 2, 3), keepdim=True)
            keep = torch.ones_like(S, dtype=torch.bool)
            for size, axis, n in ((self.config.freq_mask, 2, M), (self.config.time_mask, 3, T)):
                if size <= 0:
                    continue
                width = torch.randint(0, min(size, n) + 1, (B,))
                start = (torch.rand(B) * (n - width + 1).float()).long()
                pos = torch.arange(n)
                band = (pos[None, :] >= start[:, None]) & (pos[None, :] < (start + width)[:, None])
                shape = (B, 1, n, 1) if axis == 2 else (B, 1, 1, n)
                keep &= ~band.view(shape)
            return torch.where(keep, S, fill)

        def from_spectrogram(self, S: torch.Tensor) -> torch.Tensor:
            """Embeddings from log-mel ``(B, 1, M, T)`` (training hooks such as Freq-MixStyle
            act between :meth:`spectrogram` and this)."""
            h = self.conv[0](S)  # the input batch norm
            if self.config.resnorm > 0:
                mu, sig = band_stats(h, 1e-5)
                h = self.config.resnorm * h + (h - mu) / sig
            h = self.conv[1:](h)  # (B, C, F', T')
            return self.proj(torch.cat([h.amax(dim=3), h.mean(dim=3)], dim=1).flatten(1))

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.from_spectrogram(self.spectrogram(x))

    class Probe(_Base):
        """Linear (``hidden=0``) or one-hidden-layer head on frozen embeddings."""

        input_kind = "embedding"

        def __init__(self, config: FamilyConfig):
            super().__init__(config)
            self.norm = nn.BatchNorm1d(config.input_dim)
            if config.hidden > 0:
                self.body: nn.Module = nn.Sequential(nn.Linear(config.input_dim, config.embedding_dim),
                                                     nn.ReLU())
            else:
                self.body = nn.Identity()

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(self.norm(x))

        def example_input(self, batch: int = 2) -> torch.Tensor:
            return torch.zeros(batch, self.config.input_dim)

    _DEFINED.update(MfccMLP=MfccMLP, WaveformCNN=WaveformCNN, MelCNN=MelCNN, Probe=Probe)
    return _DEFINED


def build(config: FamilyConfig):
    """Instantiate the network for ``config`` (random weights)."""
    classes = _define()
    name = {"mfcc-mlp": "MfccMLP", "waveform-cnn": "WaveformCNN", "mel-cnn": "MelCNN",
            "probe": "Probe"}[config.family]
    return classes[name](config)


def summary(model, *, batch: int = 2) -> list[dict[str, Any]]:
    """Layers with output shapes and parameter counts, from one forward pass on zeros.

    Returns
    -------
    rows : ``{"layer", "type", "output_shape", "params"}`` per leaf module, in call order,
        then a ``"total"`` row
    """
    import torch

    rows: list[dict[str, Any]] = []
    hooks = []
    for name, mod in model.named_modules():
        if name and not list(mod.children()):
            def hook(m, inp, out, name=name):
                shape = list(out.shape) if isinstance(out, torch.Tensor) else None
                rows.append({"layer": name, "type": type(m).__name__, "output_shape": shape,
                             "params": sum(p.numel() for p in m.parameters())})
            hooks.append(mod.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = model.example_input(batch)
            if model.input_kind == "waveform":
                rows.append({"layer": "input", "type": "waveform", "output_shape": list(x.shape),
                             "params": 0})
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rows.append({"layer": "total", "type": "", "output_shape": None, "params": total,
                 "trainable": trainable})
    return rows
