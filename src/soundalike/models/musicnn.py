"""PyTorch re-implementations of the musicnn and VGG music taggers (Pons & Serra, 2019).

The networks take log-mel patches ``(batch, n_mels=96, n_frames=187)`` (3 s at
16 kHz, hop 256, ``log10(1 + 10000 * mel_power)``), float32, and return tag logits
plus the intermediate layers used as embeddings.  Weights come from the TF1
checkpoints shipped in the musicnn wheel (:mod:`soundalike.models.tfbundle`), mapped
by TensorFlow variable name; everything runs in float32 in eval mode (batch
normalisation uses the stored moving statistics, dropout is off).

musicnn
    front-end: batch-normalised input; *timbral* convolutions spanning 7 frames x 38
    and x 67 mel bands (204 filters each) and *temporal* convolutions spanning
    128, 64 and 32 frames x 1 band (51 filters each), each followed by ReLU, batch
    norm and a max over frequency -> 561 channels per frame;
    mid-end: three 7-frame convolutions to 64 channels with residual connections,
    densely concatenated with the front-end -> 753 channels per frame;
    back-end: max- and mean-pooling over time (interleaved per channel, 1506 values),
    batch norm, a 200-unit dense layer with ReLU and batch norm (the *penultimate*
    embedding), and the 50 tag logits.
vgg
    batch-normalised input and five blocks of 3x3 convolution (128 filters), ReLU,
    batch norm and max pooling; the flattened last pool (2 x 128 = 256 values) is the
    *penultimate* embedding that the 50 tag logits are computed from.

TensorFlow's layouts (NHWC with height = time, kernels ``(h, w, in, out)``) are
converted once at load time.  Two arithmetic shortcuts keep the outputs identical:
a max over frequency commutes with ReLU and, channel by channel, with the following
batch-norm affine map (taking the min instead where its scale is negative).
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Literal

import numpy as np

from soundalike.errors import CheckpointError

if TYPE_CHECKING:
    import torch

Arch = Literal["musicnn", "vgg"]

#: TF1 ``batch_normalization`` default epsilon.
BN_EPS = 1e-3
#: Input patch geometry the checkpoints were trained on.
N_MELS = 96
N_FRAMES = 187


def _torch():
    import torch

    return torch


def _param(weights: dict[str, np.ndarray], name: str, shape: tuple[int, ...] | None = None):
    torch = _torch()
    if name not in weights:
        raise CheckpointError(f"checkpoint has no tensor {name!r}")
    a = np.asarray(weights[name], dtype=np.float32)
    if shape is not None and a.shape != shape:
        raise CheckpointError(f"checkpoint tensor {name!r} has shape {a.shape}, expected {shape}")
    return torch.from_numpy(a.copy())


def _bn(weights: dict[str, np.ndarray], name: str, n: int):
    """Inference-mode batch norm as ``(scale, shift)`` float32 tensors ``(n,)``."""
    torch = _torch()
    gamma = _param(weights, f"{name}/gamma", (n,))
    beta = _param(weights, f"{name}/beta", (n,))
    mean = _param(weights, f"{name}/moving_mean", (n,))
    var = _param(weights, f"{name}/moving_variance", (n,))
    scale = gamma * torch.rsqrt(var + BN_EPS)
    return scale, beta - mean * scale


def _conv2d_weight(weights: dict[str, np.ndarray], name: str):
    """TF kernel ``(h, w, in, out)`` -> torch ``(out, in, h, w)``."""
    return _param(weights, f"{name}/kernel").permute(3, 2, 0, 1).contiguous()


#: Error feedback of :func:`round_bf16_ef`: the filters' inputs are taken as correlated
#: 0.9 from one frame (and one mel band) to the next, on a shared offset of weight 1.
EF_CORRELATION = 0.9
EF_OFFSET = 1.0
EF_DAMP = 0.02


def round_bf16_ef(w, shape: tuple[int, int]):
    """Round filters ``(out, kt * kf)`` (each a ``kt x kf`` window, time-major) to bfloat16
    values so that their error on smooth inputs is small, not each weight's.

    Rounding each weight to its nearest bf16 value leaves errors that a log-mel window,
    smooth over time and frequency and on an offset, sums coherently: on 640 Philharmonia
    notes those errors moved tag probabilities more than the input's and the outputs'
    rounding.  Here the weights are rounded one after another and each one's error is
    fed forward onto the weights not yet rounded, weighted by how correlated their inputs
    are (the optimal-brain-surgeon update of GPTQ, Frantar et al. 2022), under a prior of
    the input instead of data: correlation :data:`EF_CORRELATION` per frame and per band
    (separable) plus a common offset (:data:`EF_OFFSET`).  Nothing is fitted; the same
    weights in give the same bf16 weights out.  Returns float64 ``(out, kt * kf)`` whose
    every value is a bfloat16 number.
    """
    torch = _torch()
    kt, kf = shape
    W = w.detach().to(torch.float64).clone()
    d = W.shape[1]
    if d != kt * kf:
        raise ValueError(f"filters of {d} weights are not {kt} x {kf} windows")
    it, jf = torch.arange(kt, dtype=torch.float64), torch.arange(kf, dtype=torch.float64)
    H = torch.kron(EF_CORRELATION ** (it[:, None] - it).abs(), EF_CORRELATION ** (jf[:, None] - jf).abs())
    H += EF_OFFSET + EF_DAMP * torch.eye(d, dtype=torch.float64)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.empty_like(W)
    for i in range(d):
        Q[:, i] = W[:, i].to(torch.bfloat16).to(torch.float64)
        W[:, i + 1 :] -= ((W[:, i] - Q[:, i]) / U[i, i])[:, None] * U[i, i + 1 :]
    return Q


#: ``SOUNDALIKE_BF16=native`` or ``emulated`` overrides :func:`native_bf16` (to compare the two).
BF16_ENV = "SOUNDALIKE_BF16"


def native_bf16() -> bool:
    """Whether this CPU runs oneDNN's bfloat16 convolutions natively (any AVX-512 CPU;
    fastest with AVX512_BF16 or AMX).

    Without them (an AVX2-only CPU: many laptops, AMD Zen 2/3), PyTorch computes a bf16
    convolution in a reference loop: mixed-ef's front end measured ~7x slower than fp32
    on such a CPU (a track's 6 patches through the fusion: 5.2 s against 0.72 s); the bf16 front
    end of ``mixed-ef`` (the default analyzer's) is then emulated in fp32 at fp32 speed
    (``FreqMaxBlock._emulated_bf16``), with the same numbers but for the summation order.
    ``SOUNDALIKE_BF16`` (``native`` / ``emulated``) overrides the check.
    """
    forced = _forced(BF16_ENV, ("native", "emulated"))
    return _mkldnn_bf16() if forced is None else forced == "native"


def _forced(env: str, choices: tuple[str, str]) -> str | None:
    """The override ``env`` names (one of ``choices``), None when unset or empty.

    Raises
    ------
    ConfigError
        Any other value."""
    import os

    from soundalike.errors import ConfigError

    value = os.environ.get(env, "").strip().lower()
    if not value:
        return None
    if value not in choices:
        raise ConfigError(f"{env}={os.environ[env]!r}: use {choices[0]} or {choices[1]} (or leave it unset)")
    return value


#: ``SOUNDALIKE_CONV_LAYOUT=nhwc`` or ``nchw`` overrides :func:`front_end_nchw`.
LAYOUT_ENV = "SOUNDALIKE_CONV_LAYOUT"


def check_overrides() -> None:
    """Raise :class:`~soundalike.errors.ConfigError` for a mistyped ``SOUNDALIKE_BF16`` or
    ``SOUNDALIKE_CONV_LAYOUT`` now (ingest calls it before it opens or creates a catalog)."""
    _forced(BF16_ENV, ("native", "emulated"))
    _forced(LAYOUT_ENV, ("nchw", "nhwc"))


def front_end_nchw() -> bool:
    """Whether the front-end convolutions run on NCHW maps instead of channels-last ones.

    On AVX-512 oneDNN's channels-last (brgemm) kernels run them 1.7-2.5x faster than
    NCHW; on an AVX2-only CPU it is the other way round (the five front-end convolutions
    of a 2-patch pass: 112 ms NCHW against 170 ms channels-last, measured on an AMD EPYC),
    so NCHW there.  The numbers are the same but for fp32 summation order (~1e-5).
    ``SOUNDALIKE_CONV_LAYOUT`` (``nchw`` / ``nhwc``) overrides the choice.
    """
    forced = _forced(LAYOUT_ENV, ("nchw", "nhwc"))
    return _cpu_capability() == "AVX2" if forced is None else forced == "nchw"


@functools.lru_cache(maxsize=1)
def _cpu_capability() -> str:
    try:
        return str(_torch().backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # pragma: no cover - an older or stripped build
        return ""


@functools.lru_cache(maxsize=1)
def _mkldnn_bf16() -> bool:
    torch = _torch()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - an older or stripped build
        return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


def _build_modules():
    """Define the nn.Module classes lazily so that importing this file needs no torch."""
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class Affine(nn.Module):
        """Per-channel ``x * scale + shift`` along dim 1 (frozen batch norm)."""

        def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
            super().__init__()
            self.register_buffer("scale", scale)
            self.register_buffer("shift", shift)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            return x * self.scale.view(shape) + self.shift.view(shape)

    def _cl_weight(weight: torch.Tensor) -> torch.Tensor:
        """``(out, in, h, w)`` with explicit channels-last strides ``(h*w*in, 1, w*in, in)``.

        With a single input channel both layouts are "contiguous", and torch then picks
        NCHW: oneDNN computes in its blocked layout and reorders the big output back
        (a third of the time of the timbral convolutions).  Spelling out channels-last
        strides makes it write NHWC directly (brgemm kernels, measured 1.7-2.5x faster).
        """
        return weight.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)

    def _nchw(t: torch.Tensor) -> torch.Tensor:
        """A one-channel ``(N, 1, H, W)`` map or filter bank with plain NCHW strides.

        With one channel both layouts are "contiguous", and torch reads the strides to
        choose (see ``_cl_weight``); a stride of ``H * W`` on the channel says NCHW."""
        return t.contiguous().squeeze(1).contiguous().unsqueeze(1)

    class FreqMaxBlock(nn.Module):
        """conv -> ReLU -> batch norm -> max over frequency, computed as
        conv -> max (or min, where the BN scale is negative) over frequency -> ReLU -> BN.

        The min is a max of the negated filter: filters and biases of negative-scale
        channels are stored negated and the max is negated back, so one reduction
        serves all channels.  Works time-major: ``(B, T + pad, F)`` in, ``(B, T, C)`` out.
        """

        def __init__(self, weight: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor,
                     shift: torch.Tensor, pad_time: tuple[int, int]):
            super().__init__()
            sign = torch.where(scale < 0, -1.0, 1.0).to(torch.float32)
            self.out_channels = int(weight.shape[0])
            self.kernel_time = int(weight.shape[2])
            self.register_buffer("weight", _cl_weight(weight * sign.view(-1, 1, 1, 1)))
            self.register_buffer("bias", (bias * sign).contiguous())
            self.register_buffer("sign", sign)
            self.pad_time = pad_time
            self.register_buffer("scale", scale)
            self.register_buffer("shift", shift)
            # each filter's sum: conv(x) = conv(x - c) + c * sum(w) for a constant c
            self.register_buffer("weight_sum", self.weight.sum(dim=(1, 2, 3)).contiguous())

        def nchw_weight(self) -> torch.Tensor:
            """The filters with NCHW strides (:func:`front_end_nchw`), made once."""
            w = self.__dict__.get("_nchw_weight")
            if w is None:
                w = self.__dict__["_nchw_weight"] = _nchw(self.weight)
            return w

        def bf16_filters(self, ef: bool) -> tuple[torch.Tensor, torch.Tensor]:
            """The filters in bfloat16 as ``(W_hi, W_lo)``, channels-last, made once per kind:
            ``W_hi`` rounded to nearest (``ef=False``) or with error feedback
            (:func:`round_bf16_ef`), and ``W_lo = bf16(W - W_hi)`` (``W_hi + W_lo`` carries
            ~16 bits of each weight's mantissa)."""
            cache = self.__dict__.setdefault("_bf16", {})
            if ef not in cache:
                out, _, kt, kf = self.weight.shape
                if ef:
                    q = round_bf16_ef(self.weight.reshape(out, kt * kf), (kt, kf)).reshape(out, 1, kt, kf)
                    hi = _cl_weight(q.float()).to(torch.bfloat16)
                else:
                    hi = self.weight.to(torch.bfloat16)
                cache[ef] = hi, (self.weight - hi.float()).to(torch.bfloat16)
            return cache[ef]

        def forward_bf16(self, x: torch.Tensor, *, ef: bool = False, split: bool = False,
                         fused: bool = False, frames: bool = False) -> torch.Tensor:
            """The block with its convolution in bfloat16 on the centred input (as
            ``forward(center=True)``; ``frames``: each frame centred on its own mean), with
            the bias and the centre's share added in fp32 after the max over frequency
            (max_f(conv + b) = max_f(conv) + b; the frames' share is constant over frequency
            too), so the bf16 outputs hold only what the centred filters make; exact but for
            bf16's rounding.  ``ef``: the filters rounded with error feedback; ``split``:
            ``conv(x_c, W_hi) + conv(x_c, W_lo)`` (two convolutions, summed in fp32, or by
            oneDNN's post-op into bf16 with ``fused``)."""
            if frames:
                # each frame centred on its own mean: the share of the means is a 1-d
                # convolution over time of the means with the filters summed over frequency
                c = x.float().mean(dim=2, keepdim=True)  # (B, T', 1)
                w_t = self.weight.sum(dim=3)  # (C, 1, kt)
                k = F.conv1d(c.transpose(1, 2), w_t).transpose(1, 2) + self.bias.view(1, 1, -1)  # (B, T, C)
            else:
                c = x.float().mean(dim=(1, 2), keepdim=True)  # (B, 1, 1)
                k = c * self.weight_sum.view(1, 1, -1) + self.bias.view(1, 1, -1)
            xb = (x - c).to(torch.bfloat16).contiguous().unsqueeze(3).permute(0, 3, 1, 2)
            hi, lo = self.bf16_filters(ef)
            if not native_bf16():
                m = self._emulated_bf16(xb, hi, lo, split=split)
            else:
                out = F.conv2d(xb, hi)
                if split and fused:
                    out = torch.ops.mkldnn._convolution_pointwise.binary(
                        xb, out, lo, None, [0, 0], [1, 1], [1, 1], 1, "add", None, None, [], None)
                elif split:
                    out = out.float() + F.conv2d(xb, lo).float()
                m = F.max_pool2d(out, (1, out.shape[3]))
            m = m.permute(0, 2, 3, 1).flatten(2).float() + k
            return F.relu(m * self.sign) * self.scale + self.shift

        def _emulated_bf16(self, xb: torch.Tensor, hi: torch.Tensor, lo: torch.Tensor, *,
                           split: bool) -> torch.Tensor:
            """:meth:`forward_bf16`'s bfloat16 convolution and max over frequency, computed in
            fp32 for a CPU without native bf16 kernels (:func:`native_bf16`).

            The inputs and filters are bf16 numbers, so each product is exact in fp32 and
            the sums are fp32 as oneDNN's bf16 kernels accumulate; the output is rounded
            to bf16 as theirs is.  Rounding to nearest never reverses an order, so the max
            over frequency is taken first and only the max is rounded (the same numbers,
            one value per frame instead of per band).  Only the summation order differs
            from the native kernels: an output now and then one bf16 step away.
            """
            cache = self.__dict__.setdefault("_bf16_as_f32", {})
            nchw = front_end_nchw()
            key = (hi.data_ptr(), lo.data_ptr(), nchw)
            if key not in cache:  # at most four: two roundings, two layouts
                cache[key] = tuple(_nchw(w.float()) if nchw else w.float() for w in (hi, lo))
            hi32, lo32 = cache[key]
            x32 = _nchw(xb.float()) if nchw else xb.float()

            def fmax(t: torch.Tensor) -> torch.Tensor:  # the max over frequency, kept as (B, C, T, 1)
                return t.amax(dim=3, keepdim=True) if nchw else F.max_pool2d(t, (1, t.shape[3]))

            out = F.conv2d(x32, hi32)
            if split:  # two bf16 outputs, summed in fp32: each is rounded before the max
                return fmax(out.to(torch.bfloat16).float() + F.conv2d(x32, lo32).to(torch.bfloat16).float())
            return fmax(out).to(torch.bfloat16)

        def forward(self, x: torch.Tensor, center: bool = False) -> torch.Tensor:
            """``center``: convolve ``x`` minus its per-patch mean and add the mean's share
            back after the max over frequency (exact in fp32, by linearity: the convolution
            has no padding of its own).  For bf16: the log-mel input sits on an offset that
            bfloat16's 8-bit mantissa rounds away most of the detail of; centred, its
            rounding error on the tag probabilities drops ~6x (measured)."""
            k = None
            if center:
                c = x.float().mean(dim=(1, 2), keepdim=True)  # (B, 1, 1)
                x = x - c
                k = c * self.weight_sum.view(1, 1, -1)  # (B, 1, C): constant over time and frequency
            if front_end_nchw():  # an AVX2-only CPU: NCHW maps, the max over a contiguous axis
                c = F.conv2d(_nchw(x.unsqueeze(1)), self.nchw_weight(), self.bias)  # (B, C, T, F')
                m = c.amax(dim=3).transpose(1, 2)  # (B, T, C)
            else:
                # x: (B, T + kernel_time - 1, F) -> NCHW view (B, 1, T', F) with NHWC strides
                # strides (T'F, 1, F, 1): torch reads this, not an unsqueeze(1), as channels-last
                x = x.contiguous().unsqueeze(3).permute(0, 3, 1, 2)
                c = F.conv2d(x, self.weight, self.bias)  # (B, C, T, F'), channels-last memory
                # max over frequency as a (1, F') max pool: on channels-last maps it runs 2-6x
                # faster than amax (measured), which reduces a strided axis element by element
                m = F.max_pool2d(c, (1, c.shape[3])).permute(0, 2, 3, 1).flatten(2)  # (B, T, C)
            if k is not None:
                m = m.float() + k  # max_f(conv + k) = max_f(conv) + k
            return F.relu(m * self.sign) * self.scale + self.shift

    class Musicnn(nn.Module):
        """musicnn: ``forward(x)`` with x ``(B, 96, T)`` -> dict of ``logits (B, n)``,
        ``penultimate (B, 200)``, ``max_pool (B, 753)``, ``mean_pool (B, 753)``."""

        def __init__(self, w: dict[str, np.ndarray], n_classes: int):
            super().__init__()
            self.bn_in = Affine(*_bn(w, "batch_normalization", 1))
            n_mels = N_MELS
            blocks = []
            # (conv name, bn name, kernel height, time padding)
            timbral = [("conv2d", "batch_normalization_1"), ("conv2d_1", "batch_normalization_2")]
            for conv, bn in timbral:
                k = _conv2d_weight(w, conv)
                if k.shape[1] != 1 or k.shape[2] != 7 or k.shape[3] > n_mels:
                    raise CheckpointError(f"{conv}/kernel has unexpected shape {tuple(k.shape)}")
                blocks.append(FreqMaxBlock(k, _param(w, f"{conv}/bias"), *_bn(w, bn, k.shape[0]),
                                           pad_time=(3, 3)))
            for conv, bn in [("conv2d_2", "batch_normalization_3"), ("conv2d_3", "batch_normalization_4"),
                             ("conv2d_4", "batch_normalization_5")]:
                k = _conv2d_weight(w, conv)
                kh = k.shape[2]
                # TF 'same' padding: the extra row of an even kernel goes after.
                blocks.append(FreqMaxBlock(k, _param(w, f"{conv}/bias"), *_bn(w, bn, k.shape[0]),
                                           pad_time=((kh - 1) // 2, kh - 1 - (kh - 1) // 2)))
            self.frontend = nn.ModuleList(blocks)
            self.pad_time = max(b.pad_time[0] for b in blocks), max(b.pad_time[1] for b in blocks)
            n_front = sum(b.out_channels for b in blocks)

            self.mid = nn.ModuleList()
            self.mid_bn = nn.ModuleList()
            n_in = n_front
            for conv, bn in [("conv2d_5", "batch_normalization_6"), ("conv2d_6", "batch_normalization_7"),
                             ("conv2d_7", "batch_normalization_8")]:
                k = _param(w, f"{conv}/kernel")  # (7, n_in, 1, n_out): width spans all channels
                if k.shape[1] != n_in or k.shape[2] != 1:
                    raise CheckpointError(f"{conv}/kernel has shape {k.shape}, expected (7, {n_in}, 1, n)")
                # conv over time only, as a channels-last conv2d on (B, C, T, 1)
                layer = nn.Conv2d(n_in, k.shape[3], (k.shape[0], 1), padding=(k.shape[0] // 2, 0))
                layer.weight.data = _cl_weight(k[:, :, 0, :].permute(2, 1, 0).unsqueeze(3))
                layer.bias.data.copy_(_param(w, f"{conv}/bias"))
                self.mid.append(layer)
                self.mid_bn.append(Affine(*_bn(w, bn, k.shape[3])))
                n_in = k.shape[3]
            n_mid = n_front + sum(m.out_channels for m in self.mid)
            self.pool_dim = n_mid

            self.bn_pool = Affine(*_bn(w, "batch_normalization_9", 2 * n_mid))
            dk = _param(w, "dense/kernel")
            self.dense = nn.Linear(dk.shape[0], dk.shape[1])
            self.dense.weight.data.copy_(dk.T)
            self.dense.bias.data.copy_(_param(w, "dense/bias"))
            self.bn_dense = Affine(*_bn(w, "batch_normalization_10", dk.shape[1]))
            ok = _param(w, "dense_1/kernel", (dk.shape[1], n_classes))
            self.out = nn.Linear(dk.shape[1], n_classes)
            self.out.weight.data.copy_(ok.T)
            self.out.bias.data.copy_(_param(w, "dense_1/bias", (n_classes,)))
            self.embedding_dims = {"penultimate": dk.shape[1], "max_pool": n_mid, "mean_pool": n_mid}

        def _mid(self, i: int, h: torch.Tensor) -> torch.Tensor:
            """Mid-end layer ``i`` on time-major ``(B, T, C)``: conv -> ReLU -> BN."""
            c = self.mid[i](h.transpose(1, 2).unsqueeze(3))  # (B, C', T, 1), channels-last
            bn = self.mid_bn[i]
            return F.relu(c.squeeze(3).transpose(1, 2)) * bn.scale + bn.shift

        #: Parts run in bfloat16 while the rest stays fp32 (mixed precision; empty: the
        #: caller's autocast, if any, decides for all): "timbral" (the two front-end
        #: convolutions over time x frequency), "temporal" (the three over time), "mid"
        #: (the mid-end convolutions), "dense" (the dense layers); "center": the front-end
        #: parts in bf16 convolve their input centred (FreqMaxBlock.forward); "bias": they
        #: run FreqMaxBlock.forward_bf16 instead (centred, bias after the max), with
        #: "frames" each frame centred, with "ef" the filters rounded with error feedback,
        #: with "split" a second convolution for the filters' rounding error ("fused":
        #: summed by oneDNN).
        bf16_parts: frozenset = frozenset()

        def _part(self, name: str):
            if not self.bf16_parts:
                return contextlib.nullcontext()
            return torch.autocast("cpu", dtype=torch.bfloat16, enabled=name in self.bf16_parts)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            # (B, 96, T) -> TF's image with time as height, kept time-major (B, T, 96)
            # throughout; the front-end blocks run NHWC convolutions on it.
            T = x.shape[-1]
            x = self.bn_in(x.unsqueeze(1)).squeeze(1).transpose(1, 2)
            lo, hi = self.pad_time
            x = F.pad(x, (0, 0, lo, hi))
            # a mixed network hands fp32 on between its parts (a bf16 part's output is cast
            # back); the all-bf16 one (the caller's autocast) stays as it always ran
            f32 = (lambda t: t.float()) if self.bf16_parts else (lambda t: t)
            fronts = []
            for i, b in enumerate(self.frontend):
                part = "timbral" if i < 2 else "temporal"
                xi = x[:, lo - b.pad_time[0] : lo + T + b.pad_time[1]]
                sp = self.bf16_parts
                if part in sp and "bias" in sp:
                    fronts.append(b.forward_bf16(xi, ef="ef" in sp, split="split" in sp, fused="fused" in sp,
                                                 frames="frames" in sp))
                    continue
                with self._part(part):
                    fronts.append(f32(b(xi, center=part in self.bf16_parts and "center" in self.bf16_parts)))
            front = torch.cat(fronts, dim=2)  # (B, T, 561)
            with self._part("mid"):
                h1 = f32(self._mid(0, front))
                h2 = f32(self._mid(1, h1)) + h1
                h3 = f32(self._mid(2, h2)) + h2
            feats = torch.cat([front, h1, h2, h3], dim=2)  # (B, T, 753)
            max_pool = feats.amax(dim=1)
            mean_pool = feats.mean(dim=1)
            # TF flattens (753, 2) row-major: max and mean interleave per channel.
            pooled = torch.stack([max_pool, mean_pool], dim=2).flatten(1)
            with self._part("dense"):
                pen = f32(self.bn_dense(F.relu(self.dense(self.bn_pool(pooled)))))
                logits = f32(self.out(pen))
            return {"logits": logits, "penultimate": pen, "max_pool": max_pool,
                    "mean_pool": mean_pool}

    class VGG(nn.Module):
        """vgg: ``forward(x)`` with x ``(B, 96, 187)`` -> dict of ``logits (B, n)``,
        ``penultimate (B, 256)`` (flattened last pool) and, with :attr:`with_extras`, the
        summaries :attr:`extra_dims` names:
        ``block{3,4,5}_{mean,max}`` ``(B, 128)`` (each block's output over time and frequency)
        and ``block4_time_mean`` ``(B, 768)`` (block 4 over time, per frequency band, band-major)."""

        pools = [((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4))]

        def __init__(self, w: dict[str, np.ndarray], n_classes: int):
            super().__init__()
            self.bn_in = Affine(*_bn(w, "batch_normalization", 1))
            self.convs = nn.ModuleList()
            self.bns = nn.ModuleList()
            self.pool_args: list[tuple[tuple[int, int], tuple[int, int]]] = []
            for i in range(5):
                k = _conv2d_weight(w, f"{i + 1}CNN")
                if k.shape[2:] != (3, 3):
                    raise CheckpointError(f"{i + 1}CNN/kernel has unexpected shape {tuple(k.shape)}")
                (ph, pw), (sh, sw) = self.pools[i]
                # a pool one column wide that strides over frequency only reads every
                # sw-th conv column: the conv computes just those (stride), exactly the same values
                conv_stride = (1, sw) if pw == 1 else (1, 1)
                self.pool_args.append(((ph, pw), (sh, 1) if pw == 1 else (sh, sw)))
                conv = nn.Conv2d(k.shape[1], k.shape[0], 3, padding=1, stride=conv_stride)
                bn = Affine(*_bn(w, f"batch_normalization_{i + 1}", k.shape[0]))
                # pool(BN(ReLU(conv))) = BN(ReLU(pool(conv))) channel by channel, with a
                # max pool of the negated filter (negated back) where the BN scale is < 0:
                # the elementwise work then runs on the pooled, 4-8x smaller maps.
                sign = torch.where(bn.scale < 0, -1.0, 1.0).to(torch.float32)
                conv.weight.data = _cl_weight(k * sign.view(-1, 1, 1, 1))
                conv.bias.data.copy_(_param(w, f"{i + 1}CNN/bias") * sign)
                self.register_buffer(f"sign{i}", sign.view(1, -1, 1, 1))
                self.convs.append(conv)
                self.bns.append(bn)
            dk = _param(w, "dense/kernel")
            if dk.shape[1] != n_classes:
                raise CheckpointError(f"dense/kernel has shape {tuple(dk.shape)}, expected (n, {n_classes})")
            self.out = nn.Linear(dk.shape[0], n_classes)
            self.out.weight.data.copy_(dk.T)
            self.out.bias.data.copy_(_param(w, "dense/bias", (n_classes,)))
            self.embedding_dims = {"penultimate": dk.shape[0]}
            #: the further per-patch summaries ``forward`` returns when :attr:`with_extras` is
            #: set (names -> lengths), read by ``benchmarks/simcache.py``; not analyzer layers
            #: (PretrainedModel keeps its three), so off by default: inference pays nothing for them
            self.with_extras = False
            n_c = k.shape[0]
            self.extra_dims = {**{f"block{b}_{s}": n_c for b in (3, 4, 5) for s in ("mean", "max")},
                               "block4_time_mean": n_c * (N_MELS // 16)}
            # first block as a (T*F', 9) @ (9, 128) matmul plus a max over time-row slices:
            # as fast as oneDNN's 1-channel conv + max_pool2d at 1-2 patches per pass, and
            # less sensitive to pass size (whole vgg, 8 patches per pass: 111 vs 88-94 patches/s)
            c0 = self.convs[0]
            if c0.in_channels != 1 or self.pool_args[0] != ((4, 1), (2, 1)):
                raise CheckpointError("vgg: unexpected first block")
            self.register_buffer("w0", c0.weight.reshape(c0.out_channels, 9).t().contiguous())
            self.register_buffer("b0", c0.bias.detach().clone())

        def _block0_conv_pool(self, x: torch.Tensor) -> torch.Tensor:
            """conv 3x3 ('same', columns 0, 2, 4, ...) + max pool (4, 1) stride 2 over time:
            ``(B, T, F)`` -> ``(B, C, T', F // 2)`` in channels-last memory."""
            B, T, n_f = x.shape
            xp = F.pad(x, (1, 1, 1, 1))
            cols = torch.stack([xp[:, dt : dt + T, df : df + n_f : 2] for dt in range(3) for df in range(3)],
                               dim=-1)  # (B, T, F/2, 9)
            y = torch.addmm(self.b0, cols.view(-1, 9), self.w0).view(B, T, cols.shape[2], -1)
            a = torch.maximum(y[:, :-1], y[:, 1:])  # max of rows t, t+1
            n_out = (T - 4) // 2 + 1
            p = torch.maximum(a[:, 0 : 2 * n_out - 1 : 2], a[:, 2 : 2 * n_out + 1 : 2])  # rows 2i .. 2i+3
            return p.permute(0, 3, 1, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            if x.shape[-1] != N_FRAMES:
                raise ValueError(f"vgg needs patches of exactly {N_FRAMES} frames, got {x.shape[-1]}")
            # time-major (B, T, F); block 0 returns channels-last maps, so every later
            # convolution runs NHWC without layout reorders.
            h = self.bn_in(x.unsqueeze(1)).squeeze(1).transpose(1, 2).contiguous()  # (B, T, F)
            outs: dict[str, torch.Tensor] = {}
            for i, (conv, bn, (k, s)) in enumerate(zip(self.convs, self.bns, self.pool_args)):
                h = self._block0_conv_pool(h) if i == 0 else F.max_pool2d(conv(h), k, s)
                h = bn(F.relu(h * getattr(self, f"sign{i}")))
                if i >= 2 and self.with_extras:
                    # each block's map summarised over time and frequency (128 values each),
                    # and block 4's over time only, band by band (6 x 128): the similarity
                    # bench's VGG layers; the penultimate and the logits do not depend on them
                    outs[f"block{i + 1}_mean"] = h.mean(dim=(2, 3))
                    outs[f"block{i + 1}_max"] = h.amax(dim=(2, 3))
                    if i == 3:
                        outs["block4_time_mean"] = h.mean(dim=2).permute(0, 2, 1).flatten(1)
            # TF flattens NHWC: (B, T', F', C) row-major.
            pen = h.permute(0, 2, 3, 1).flatten(1)
            return {"logits": self.out(pen), "penultimate": pen, **outs}

    return Musicnn, VGG


_MODULES: tuple | None = None


def build_network(arch: Arch, weights: dict[str, np.ndarray], *, n_classes: int):
    """Build an eval-mode network with the given TF-named weights.

    Parameters
    ----------
    arch : ``"musicnn"`` or ``"vgg"``
    weights : TF variable name -> array, as :func:`~soundalike.models.tfbundle.read_bundle` returns
    n_classes : number of output tags (50 for the MTT and MSD checkpoints)

    Returns
    -------
    torch.nn.Module
        ``forward(x)`` takes float32 ``(batch, 96, n_frames)`` log-mel patches and returns
        a dict with ``"logits"`` ``(batch, n_classes)``, ``"penultimate"`` and (musicnn)
        ``"max_pool"`` / ``"mean_pool"`` embeddings; ``.embedding_dims`` names their sizes.

    Raises
    ------
    CheckpointError
        A tensor is missing or has an unexpected shape.
    """
    global _MODULES
    if _MODULES is None:
        _MODULES = _build_modules()
    Musicnn, VGG = _MODULES
    if arch == "musicnn":
        net = Musicnn(weights, n_classes)
    elif arch == "vgg":
        net = VGG(weights, n_classes)
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose 'musicnn' or 'vgg'")
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
