"""NCSN++: the 2-D U-Net of score-based generative models (Song et al., "Score-Based Generative Modeling through
Stochastic Differential Equations", ICLR 2021), as SGMSE+ (Richter et al. 2023) runs it on complex spectrograms
and DDTSE uses it, with FiLM speaker conditioning, as its "conditionalncsnpp" backbone.

Feature maps are (B, C, F, T): real/imag parts of spectrograms stacked as channels, frequency first.

What is kept from NCSN++ (the configuration SGMSE+ publishes, "ncsnpp" with BigGAN blocks):

* ``len(ch_mult)`` resolutions with ``nf * ch_mult[i]`` channels at level i; a 3x3 input conv to ``nf`` channels;
  ``num_res_blocks`` residual blocks per level on the way down and ``num_res_blocks + 1`` on the way up, each of
  the latter fed the concatenation of its input and one stored skip (every down-path output, the input conv's
  included, is consumed exactly once); a middle block res-attention-res at the bottom.
* BigGAN residual blocks: GroupNorm -> SiLU -> [FIR up/down-sampling] -> conv3x3 -> + time embedding -> GroupNorm
  -> SiLU -> dropout -> conv3x3 -> [FiLM], shortcut through a 1x1 conv when the channels change or the block
  resamples, output (h + shortcut) / sqrt(2) with ``skip_rescale``. Resampling between levels is done by such
  blocks (down=True / up=True), with the FIR filter ``fir_kernel`` (separable, normalised; upfirdn semantics,
  implemented here with depthwise conv2d / conv_transpose2d). GroupNorm uses min(C // 4, 32) groups, eps 1e-6.
* Self-attention (single head over all F*T positions, GroupNorm first, residual, skip rescale) at the levels whose
  nominal frequency size ``resolution / 2**level`` is in ``attn_resolutions``: after every residual block on the
  way down, once per level after its residual blocks on the way up (as in NCSN++).
* Progressive input skips ("input_skip", combined by sum): the input is FIR-downsampled along the levels and added
  through a 1x1 conv after each downsampling block. Progressive output skips ("output_skip"): at every level on
  the way up a GroupNorm-SiLU-conv3x3 head gives an ``out_channels`` image, summed with the FIR-upsampled image of
  the level below; the network's output is that sum.
* Time conditioning (``time_conditioning``, for score models): Gaussian Fourier features (``nf`` random
  frequencies, fixed, scale ``fourier_scale``; sin and cos give 2 * nf features) of log(time), then
  Linear(2nf -> 4nf) - SiLU - Linear(4nf -> 4nf); every residual block adds Linear(4nf -> C)(SiLU(embedding))
  after its first conv. The caller passes a positive scalar per example: NCSN++ embeds log(sigma) of its VE SDE,
  SGMSE+ passes the diffusion time t in (0, 1]; anything positive works, the log just spreads small values.

Added for target speaker extraction, as DDTSE's authors do it (github vivian556123/slt2024-ddtse,
``sgmse/backbones/ncsnpp_utils/layerspp.py``, ``ResnetBlockConditionalFiLMBigGANpp.forward``; their recipe's
``--resblock_type conditional_film_biggan``): FiLM conditioning on a speaker embedding ``cond`` (B, cond_dim) in
every residual block (down, middle, up and resampling blocks), applied to the output of the block's last conv,
before the shortcut is added: h = conv_out(...) * (1 + scale) + shift. The authors write it as
``gammas * h + bias`` added back to h; scale and shift come from two Linear(cond_dim -> C), here one
Linear(cond_dim -> 2C), with PyTorch's default init as theirs (not zero), so the output depends on ``cond`` from
the first step. One departure: their code multiplies ``h.reshape(B, H*W, C)``, a reshape of the (B, C, H, W)
tensor rather than a permute, so entry k of the flattened map is modulated by channel k mod C of the
embedding's scale and shift, a pattern over time frames rather than channels; here each channel gets its own
scale and shift, the FiLM the paper describes.

Initialisation follows NCSN++ as the authors' code has it (``sgmse/backbones/ncsnpp_utils/layers.py``:
``default_init``, ``ddpm_conv3x3``, ``NIN``; ``init_scale=0.`` in ``ConditionalNCSNpp.__init__`` of
``sgmse/backbones/conditional_ncsnpp.py``), see `ddpm_init_`: convs and the time-embedding Linears draw uniform
weights of variance 1 / fan_avg and zero biases; the attention's query/key/value at a tenth of that variance;
and the last conv of every residual block, the attention's output projection and the output heads start at
zero (the authors' ``init_scale`` 0, a variance of 1e-10). So a fresh network outputs exactly zero and every
residual block starts as its shortcut plus the FiLM shift; the U-Net grows away from that.

Simplified compared to Song et al.'s code: only the variant above (BigGAN blocks, FIR resampling, input_skip and
output_skip with sum combination, Fourier time embedding); no DDPM blocks, positional time embedding, "residual"
or "cat" progressive variants, input centering or output scaling by sigma. The Fourier frequencies are a buffer,
not a frozen parameter, so they are not in the parameter count. SGMSE+'s and the authors' final 1x1
``output_layer`` (2 -> 2 channels, after the progressive output sum) is left out: a linear map of the heads'
linear sum, which the heads can learn themselves.

Padding: the U-Net halves F and T ``len(ch_mult) - 1`` times, so `NCSNpp.forward` zero-pads both at their end up
to a multiple of 2**(len(ch_mult) - 1) and crops the output back: any F, T >= 1 works, and the output has the
input's shape. Convs and attention see the padded zeros, so the valid region of the output is not exactly the
output of an unpadded network; F = 256 (n_fft 510, as SGMSE+) and T a multiple of 64 avoid padding altogether.

Sizes (sum of parameter numel, in_channels 2, out_channels 2, cond_dim 256, no time conditioning): the published
configuration (nf 128, ch_mult (1, 1, 2, 2, 2, 2, 2), num_res_blocks 2, attn_resolutions (16,), resolution 256)
has 65,174,798 parameters, 5.6M of them FiLM; with cond_dim 0 and time conditioning, i.e. SGMSE+'s score model,
65,558,158 (65,563,022 with its 4 input channels: the "65M" of the SGMSE+ paper). The mini recipe's configuration
(nf 16, ch_mult (1, 2, 2), num_res_blocks 1, attn_resolutions ()) has 491,798.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """NCSN++'s GroupNorm: min(C // 4, 32) groups (at least one, for the few channels of tiny networks)."""
    return nn.GroupNorm(max(1, min(channels // 4, 32)), channels, eps=1e-6)


def ddpm_init_(layer: nn.Conv2d | nn.Linear, scale: float = 1.0) -> None:
    """NCSN++'s ``default_init`` (module docstring): uniform weights of variance ``scale`` / fan_avg, zero bias.

    That is Xavier's uniform init with gain sqrt(scale); ``scale`` 0 gives all zeros (the authors' 1e-10).
    """
    with torch.no_grad():
        if scale == 0:
            layer.weight.zero_()
        else:
            nn.init.xavier_uniform_(layer.weight, gain=math.sqrt(scale))
        if layer.bias is not None:
            layer.bias.zero_()


def fir_kernel_2d(taps: Sequence[float]) -> torch.Tensor:
    """Separable 2-D FIR kernel (K, K), normalised to sum 1 so that filtering keeps a constant image constant."""
    k = torch.as_tensor(taps, dtype=torch.float32)
    if k.ndim != 1 or k.numel() < 2:
        raise ValueError(f"the FIR kernel needs at least 2 taps, got {list(taps)}")
    k2 = torch.outer(k, k)
    return k2 / k2.sum()


def fir_downsample(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter (B, C, H, W) with the (K, K) ``kernel`` and keep every second sample: (B, C, H / 2, W / 2).

    upfirdn2d with down=2: zero padding ((K - 1) // 2, (K - 2) // 2) on both axes, a true convolution (the kernel
    flipped for conv2d's cross-correlation), depthwise.
    """
    channels, size = x.shape[1], kernel.shape[-1]
    weight = kernel.flip(0, 1).to(x.dtype).expand(channels, 1, size, size)
    pad_lo, pad_hi = (size - 1) // 2, (size - 2) // 2
    return F.conv2d(F.pad(x, (pad_lo, pad_hi, pad_lo, pad_hi)), weight, stride=2, groups=channels)


def fir_upsample(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Insert zeros between samples and filter with 4 * ``kernel`` (gain 4 keeps the level): (B, C, 2H, 2W).

    upfirdn2d with up=2 and padding ((K + 1) // 2, (K - 2) // 2) after the zero insertion, done as a strided
    transposed conv: its (symmetric) padding K - 1 - (K + 1) // 2 = K // 2 - 1 aligns the start, the crop fixes
    the end for odd K.
    """
    channels, size = x.shape[1], kernel.shape[-1]
    height, width = x.shape[-2:]
    weight = (kernel * 4).to(x.dtype).expand(channels, 1, size, size)
    y = F.conv_transpose2d(x, weight, stride=2, padding=size // 2 - 1, groups=channels)
    return y[..., :2 * height, :2 * width]


class GaussianFourierFeatures(nn.Module):
    """Positive scalars (B,) -> (B, 2 * size) sin/cos of log(value) times fixed random frequencies.

    Random frequencies of standard deviation ``scale`` resolve the wide log range of noise levels (NCSN++).
    """

    def __init__(self, size: int, scale: float) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.randn(size) * scale)

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        phase = 2 * math.pi * torch.log(value)[:, None] * self.frequencies[None, :]
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)


class AttentionBlock(nn.Module):
    """Single-head self-attention over all F*T positions of (B, C, F, T); GroupNorm first, residual."""

    def __init__(self, channels: int, skip_rescale: bool = True) -> None:
        super().__init__()
        self.skip_rescale = skip_rescale
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        with torch.no_grad():  # NCSN++'s query, key and value are three C x C layers of init_scale 0.1
            for part in self.qkv.weight.chunk(3, dim=0):
                nn.init.xavier_uniform_(part, gain=math.sqrt(0.1))
            self.qkv.bias.zero_()
        ddpm_init_(self.out, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, freqs, frames = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).unsqueeze(1).chunk(3, dim=-1)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, 1, F*T, C), scale 1 / sqrt(C)
        h = self.out(h.squeeze(1).transpose(1, 2).reshape(batch, channels, freqs, frames))
        return (x + h) / math.sqrt(2) if self.skip_rescale else x + h


class ResBlock(nn.Module):
    """BigGAN residual block of NCSN++, optionally resampling (FIR), with time embedding and FiLM; see module doc."""

    def __init__(self, in_channels: int, out_channels: int, fir_kernel: Sequence[float], dropout: float = 0.0,
                 skip_rescale: bool = True, time_dim: int = 0, cond_dim: int = 0, up: bool = False,
                 down: bool = False) -> None:
        super().__init__()
        if up and down:
            raise ValueError("a residual block resamples up or down, not both")
        self.up, self.down, self.skip_rescale = up, down, skip_rescale
        self.register_buffer("kernel", fir_kernel_2d(fir_kernel), persistent=False)
        self.norm_in = group_norm(in_channels)
        self.conv_in = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(time_dim, out_channels) if time_dim > 0 else None
        self.film = nn.Linear(cond_dim, 2 * out_channels) if cond_dim > 0 else None
        self.norm_out = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv_out = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        resamples = up or down
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1)
                         if in_channels != out_channels or resamples else None)
        for layer in (self.conv_in, self.time, self.shortcut):
            if layer is not None:
                ddpm_init_(layer)
        ddpm_init_(self.conv_out, 0.0)  # the block starts as its shortcut (plus FiLM's shift)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return fir_upsample(x, self.kernel)
        return fir_downsample(x, self.kernel) if self.down else x

    def forward(self, x: torch.Tensor, time: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        """``time``: the SiLU of the network's time embedding (B, time_dim); ``cond``: (B, cond_dim)."""
        h = self.conv_in(self._resample(F.silu(self.norm_in(x))))
        if self.time is not None:
            h = h + self.time(time)[:, :, None, None]
        h = self.conv_out(self.dropout(F.silu(self.norm_out(h))))
        if self.film is not None:
            scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        x = self._resample(x)
        if self.shortcut is not None:
            x = self.shortcut(x)
        return (x + h) / math.sqrt(2) if self.skip_rescale else x + h


class OutputHead(nn.Sequential):
    """GroupNorm - SiLU - conv3x3 to the output channels: one level's term of the progressive output sum."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__(group_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        ddpm_init_(self[-1], 0.0)


class NCSNpp(nn.Module):
    """NCSN++ U-Net with FiLM speaker conditioning: (B, in_channels, F, T) -> (B, out_channels, F, T).

    ``cond`` (B, cond_dim) is required when ``cond_dim`` > 0 and refused otherwise; ``time`` (B,) positive is
    required when ``time_conditioning`` and refused otherwise, so a misuse fails loudly instead of silently
    dropping an input. See the module docstring for the architecture and the padding rule.
    """

    def __init__(self, in_channels: int = 2, out_channels: int = 2, nf: int = 128,
                 ch_mult: Sequence[int] = (1, 1, 2, 2, 2, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), resolution: int = 256, dropout: float = 0.0,
                 fir_kernel: Sequence[int] = (1, 3, 3, 1), skip_rescale: bool = True,
                 cond_dim: int = 256, time_conditioning: bool = False, fourier_scale: float = 16.0) -> None:
        super().__init__()
        if not ch_mult or num_res_blocks < 1 or nf < 1:
            raise ValueError(f"NCSN++ needs at least one level, one residual block per level and nf >= 1, got "
                             f"ch_mult={list(ch_mult)}, num_res_blocks={num_res_blocks}, nf={nf}")
        self.levels, self.num_res_blocks = len(ch_mult), num_res_blocks
        self.cond_dim, self.time_conditioning = cond_dim, time_conditioning
        self.register_buffer("kernel", fir_kernel_2d(fir_kernel), persistent=False)
        time_dim = 4 * nf if time_conditioning else 0
        if time_conditioning:
            self.time_embed = nn.Sequential(GaussianFourierFeatures(nf, fourier_scale), nn.Linear(2 * nf, time_dim),
                                            nn.SiLU(), nn.Linear(time_dim, time_dim))

        def block(cin: int, cout: int, **resample: bool) -> ResBlock:
            return ResBlock(cin, cout, fir_kernel, dropout, skip_rescale, time_dim, cond_dim, **resample)

        def attention(level: int) -> nn.Module:
            if resolution // 2**level in attn_resolutions:
                return AttentionBlock(nf * ch_mult[level], skip_rescale)
            return nn.Identity()

        self.input_conv = nn.Conv2d(in_channels, nf, 3, padding=1)
        skips = [nf]  # channels of the stored down-path outputs, consumed in reverse on the way up
        channels = nf
        self.down_blocks, self.down_attention = nn.ModuleList(), nn.ModuleList()
        self.downsamplers, self.input_skips = nn.ModuleList(), nn.ModuleList()
        for level, mult in enumerate(ch_mult):
            blocks, attentions = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(block(channels, nf * mult))
                channels = nf * mult
                attentions.append(attention(level))
                skips.append(channels)
            self.down_blocks.append(blocks)
            self.down_attention.append(attentions)
            if level < self.levels - 1:
                self.downsamplers.append(block(channels, channels, down=True))
                self.input_skips.append(nn.Conv2d(in_channels, channels, 1))
                skips.append(channels)

        self.middle = nn.ModuleList([block(channels, channels), AttentionBlock(channels, skip_rescale),
                                     block(channels, channels)])

        # indexed by level like the down path; forward walks them from the bottom level up
        up_blocks, up_attention, heads, upsamplers = [], [], [], []
        for level in reversed(range(self.levels)):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(block(channels + skips.pop(), nf * ch_mult[level]))
                channels = nf * ch_mult[level]
            up_blocks.insert(0, blocks)
            up_attention.insert(0, attention(level))
            heads.insert(0, OutputHead(channels, out_channels))
            if level > 0:
                upsamplers.insert(0, block(channels, channels, up=True))
        assert not skips, "every stored skip is consumed once"
        self.up_blocks, self.up_attention = nn.ModuleList(up_blocks), nn.ModuleList(up_attention)
        self.output_heads, self.upsamplers = nn.ModuleList(heads), nn.ModuleList(upsamplers)
        # the blocks, attention and heads init their own layers; these are the rest (module docstring)
        embedding = [m for m in self.time_embed if isinstance(m, nn.Linear)] if time_conditioning else []
        for layer in [self.input_conv, *self.input_skips, *embedding]:
            ddpm_init_(layer)

    def _time_embedding(self, x: torch.Tensor, time: torch.Tensor | None) -> torch.Tensor | None:
        if not self.time_conditioning:
            if time is not None:
                raise ValueError("time given to an NCSNpp built without time_conditioning")
            return None
        if time is None:
            raise ValueError("NCSNpp built with time_conditioning needs a time (B,) per example")
        time = torch.as_tensor(time, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        if not bool((time > 0).all()):
            raise ValueError("NCSNpp embeds log(time): times must be positive")
        return F.silu(self.time_embed(time))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                time: torch.Tensor | None = None) -> torch.Tensor:
        if self.cond_dim > 0 and cond is None:
            raise ValueError(f"NCSNpp built with cond_dim={self.cond_dim} needs cond (B, {self.cond_dim})")
        if self.cond_dim == 0 and cond is not None:
            raise ValueError("cond given to an NCSNpp built with cond_dim=0")
        temb = self._time_embedding(x, time)
        freqs, frames = x.shape[-2:]
        multiple = 2 ** (self.levels - 1)
        x = F.pad(x, (0, -frames % multiple, 0, -freqs % multiple))

        pyramid_in = x
        hs = [self.input_conv(x)]
        for level in range(self.levels):
            for block, attention in zip(self.down_blocks[level], self.down_attention[level], strict=True):
                hs.append(attention(block(hs[-1], temb, cond)))
            if level < self.levels - 1:
                h = self.downsamplers[level](hs[-1], temb, cond)
                pyramid_in = fir_downsample(pyramid_in, self.kernel)
                hs.append(h + self.input_skips[level](pyramid_in))

        first, attention, second = self.middle
        h = second(attention(first(hs[-1], temb, cond)), temb, cond)

        pyramid = None
        for level in reversed(range(self.levels)):
            for block in self.up_blocks[level]:
                h = block(torch.cat([h, hs.pop()], dim=1), temb, cond)
            h = self.up_attention[level](h)
            head = self.output_heads[level](h)
            pyramid = head if pyramid is None else fir_upsample(pyramid, self.kernel) + head
            if level > 0:
                h = self.upsamplers[level - 1](h, temb, cond)
        return pyramid[..., :freqs, :frames]
