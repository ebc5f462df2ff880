"""TF-GridNet building blocks (Wang et al., "TF-GridNet: Integrating Full- and Sub-Band Modeling for Speech
Separation", IEEE/ACM TASLP 2023), written once for every TF-GridNet based system.

Feature maps are (B, D, frames, freqs) throughout.

* `STFT`: centred frames (1 + T // hop of them), periodic Hann window, zero padding at the signal edges (reflect
  padding, the torch default, fails on inputs shorter than half a window). The C input channels give 2C feature
  channels: the real parts of all channels, then the imaginary parts.
* `ConvFrontEnd` / `DeconvBackEnd`: the paper's 3x3 Conv2d from real/imag to D channels followed by global layer
  norm, and the 3x3 transposed conv back to real/imag. With ``causal`` the time axis is padded on the left only and
  the utterance-level norm is dropped (as in causal TF-GridNet variants such as LookOnceToHear), so a frame sees
  no future frame.
* `GridNetBlock`: the three sub-layers of the paper, each with a residual connection:
    intra-frame full-band module: per frame, layer norm over channels, windows of I frequencies every J bins
      (unfold), a BLSTM over the windows, a ConvTranspose1d back to D channels;
    inter-frame sub-band module: the same along time for every frequency; bidirectional, or uni-directional with
      ``causal``;
    full-band self-attention across frames: per head, 1x1 convs to query/key (E channels) and value (D / L
      channels), each followed by PReLU and layer norm over (channels, freqs) of the frame; a frame's query and key
      are its whole (E x F) map, so attention weighs frames with all frequencies at once; the heads' outputs are
      concatenated and projected back (1x1 conv, PReLU, layer norm). With ``causal`` a causal mask lets a frame
      attend only to itself and earlier frames (the simplest correct form of the paper's chunked causal attention);
      ``attention_context`` > 0 limits it further to the last that-many frames (LookOnceToHear attends to the last
      50 frames).
  Sizes: embedding D, LSTM hidden H, heads L, attention dim E (per head and frequency; ESPnet derives it as
  ceil(512 / F) = 8 for 65 bins), unfold kernel I and stride J (ESPnet's defaults are I = 4, J = 1).
  The inter-frame windows with ``causal`` and I > 1: the time axis is padded by I - 1 frames on the left and
  output frame t collects the windows that END at or before t, so the lookahead stays zero for any I.

Padding: `TFGridNetEncoder` and `GridNetBlock` take optional valid frame counts (B,) for zero-padded batches. The
padded frames are then zeroed in the spectrum and before the inter-frame windowing, the inter-frame LSTM runs on
packed sequences, attention masks them as keys and the global norm counts valid frames only, so the features of
the valid frames equal those of the unpadded input (the padded frames themselves hold garbage: callers mask them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

LEVEL_FLOOR = 1e-8  # a silent input keeps a finite level (and stays silent after normalisation)


def frame_mask(frames: torch.Tensor, total: int) -> torch.Tensor:
    """(B, total) bool: True for the first ``frames[b]`` positions of each row."""
    return torch.arange(total, device=frames.device) < frames.unsqueeze(1)


def key_padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, S) valid keys -> attention mask (B, 1, 1, S) for every head and query."""
    return valid[:, None, None, :]


def causal_mask(frames: int, context: int, device: torch.device) -> torch.Tensor:
    """(frames, frames) bool: query t may attend key s <= t, and only s > t - context when context > 0."""
    position = torch.arange(frames, device=device)
    offset = position[:, None] - position[None, :]
    allowed = offset >= 0
    return allowed & (offset < context) if context > 0 else allowed


def rms_level(wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Standard deviation (B, 1, 1) of (B, C, T) signals over their valid samples (all channels together).

    TF-GridNet divides its input by this and multiplies the output back (ESPnet's variance normalisation);
    counting only the valid samples keeps a zero-padded signal's level that of the unpadded one.
    """
    batch, channels, total = wave.shape
    if lengths is None:
        lengths = torch.full((batch,), total, dtype=torch.long, device=wave.device)
    weight = frame_mask(lengths.to(wave.device), total).unsqueeze(1).to(wave.dtype)
    count = (weight.sum(dim=(1, 2), keepdim=True) * channels).clamp_min(1)
    mean = (wave * weight).sum(dim=(1, 2), keepdim=True) / count
    variance = ((wave - mean).pow(2) * weight).sum(dim=(1, 2), keepdim=True) / count
    return variance.sqrt().clamp_min(LEVEL_FLOOR)


def running_level(wave: torch.Tensor) -> torch.Tensor:
    """Causal level (B, 1, T) of (B, C, T) signals: the RMS of every sample up to and including t (all channels).

    What a causal extractor divides its input by instead of `rms_level`, which needs the whole utterance: the
    level at t uses no sample after t, and once enough of the input has passed it tends to the utterance's.
    The sums run in float64 so that long inputs keep their precision.
    """
    power = wave.double().pow(2).mean(dim=1, keepdim=True)
    count = torch.arange(1, wave.shape[-1] + 1, device=wave.device, dtype=torch.float64)
    return (power.cumsum(-1) / count).sqrt().to(wave.dtype).clamp_min(LEVEL_FLOOR)


class STFT(nn.Module):
    """(B, C, T) waveforms <-> (B, 2C, frames, n_fft // 2 + 1) stacked real/imag spectra."""

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        if n_fft < 2 or n_fft % 2 or not 1 <= hop <= n_fft // 2:
            raise ValueError(f"STFT needs an even n_fft >= 2 and 1 <= hop <= n_fft / 2 (Hann overlap-add), "
                             f"got n_fft={n_fft}, hop={hop}")
        self.n_fft, self.hop, self.freqs = n_fft, hop, n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames of centred STFTs of ``lengths`` samples."""
        return lengths // self.hop + 1

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        batch, channels, total = wave.shape
        spec = torch.stft(wave.reshape(batch * channels, total).float(), self.n_fft, self.hop,
                          window=self.window, center=True, pad_mode="constant", return_complex=True)
        spec = spec.transpose(1, 2).reshape(batch, channels, -1, self.freqs)
        return torch.cat([spec.real, spec.imag], dim=1)

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(B, 2, frames, freqs) real/imag of one signal -> waveform (B, length)."""
        spec = spec.float()  # under mixed precision the back end gives float16; torch.istft needs float32
        complex_spec = torch.complex(spec[:, 0], spec[:, 1]).transpose(1, 2)
        return torch.istft(complex_spec, self.n_fft, self.hop, window=self.window, center=True, length=length)


class GlobalNorm(nn.Module):
    """gLN of (B, C, frames, freqs): one mean and variance per example over channels, valid frames and freqs."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        batch, channels, total, freqs = x.shape
        if frames is None:
            frames = torch.full((batch,), total, dtype=torch.long, device=x.device)
        x = x.float()  # sums over a whole utterance overflow float16 under autocast
        weight = frame_mask(frames, total)[:, None, :, None].to(x.dtype)
        count = weight.sum(dim=(1, 2, 3), keepdim=True) * channels * freqs
        mean = (x * weight).sum(dim=(1, 2, 3), keepdim=True) / count
        variance = ((x - mean).pow(2) * weight).sum(dim=(1, 2, 3), keepdim=True) / count
        return (x - mean) / torch.sqrt(variance + self.eps) * self.gain + self.bias


class ConvFrontEnd(nn.Module):
    """Stacked real/imag spectra (B, in_channels, frames, F) -> features (B, channels, frames, F)."""

    def __init__(self, in_channels: int, channels: int, causal: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.time_pad = (2, 0) if causal else (1, 1)
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=(0, 1))
        # the utterance-level norm would let every frame see the future
        self.norm = None if causal else GlobalNorm(channels, eps)

    def forward(self, spec: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv(F.pad(spec, (0, 0, *self.time_pad)))
        return x if self.norm is None else self.norm(x, frames)


class DeconvBackEnd(nn.Module):
    """Features (B, channels, frames, F) -> real/imag (B, out_channels, frames, F) by a 3x3 transposed conv."""

    def __init__(self, channels: int, out_channels: int, causal: bool = False) -> None:
        super().__init__()
        self.time_pad = (2, 0) if causal else (1, 1)
        # time padding 2 trims the two frames the explicit padding adds: output frame t reads input frames
        # t-1..t+1, or t-2..t when causal
        self.deconv = nn.ConvTranspose2d(channels, out_channels, 3, padding=(2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(F.pad(x, (0, 0, *self.time_pad)))


class UnfoldedLSTM(nn.Module):
    """One TF-GridNet RNN sub-layer on N sequences (N, L, D) -> update (N, L, D) (the caller adds the residual).

    Layer norm over channels, windows of ``kernel_size`` steps every ``stride`` steps, (B)LSTM over the
    windows, ConvTranspose1d back to D channels per step.
    """

    def __init__(self, channels: int, hidden: int, kernel_size: int, stride: int, bidirectional: bool,
                 causal: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        if not 1 <= stride <= kernel_size:
            raise ValueError(f"unfold stride must be in 1..kernel_size so windows cover every step, got kernel "
                             f"{kernel_size}, stride {stride}")
        self.kernel_size, self.stride = kernel_size, stride
        self.left = kernel_size - 1 if causal else 0
        self.norm = nn.LayerNorm(channels, eps=eps)
        self.rnn = nn.LSTM(channels * kernel_size, hidden, batch_first=True, bidirectional=bidirectional)
        self.proj = nn.ConvTranspose1d(hidden * (2 if bidirectional else 1), channels, kernel_size, stride=stride)

    def _windows(self, steps: torch.Tensor | int) -> torch.Tensor | int:
        """Windows needed to cover ``steps`` steps (after the left padding)."""
        span = steps + self.left - self.kernel_size
        span = span.clamp(min=0) if torch.is_tensor(span) else max(span, 0)
        return (span + self.stride - 1) // self.stride + 1

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        count, steps, channels = x.shape
        y = self.norm(x)
        if lengths is not None:  # padded steps read as the zeros an unpadded sequence is padded with
            y = y * frame_mask(lengths, steps).unsqueeze(-1).to(y.dtype)
        windows = self._windows(steps)
        total = (windows - 1) * self.stride + self.kernel_size
        y = F.pad(y.transpose(1, 2), (self.left, total - self.left - steps))
        y = y.unfold(2, self.kernel_size, self.stride)  # (N, D, windows, kernel)
        y = y.permute(0, 2, 1, 3).reshape(count, windows, channels * self.kernel_size)
        if lengths is None:
            y = self.rnn(y)[0]
        else:  # packed: the backward direction starts at each sequence's own last window
            valid = self._windows(lengths).clamp(1, windows).cpu()
            packed = pack_padded_sequence(y, valid, batch_first=True, enforce_sorted=False)
            y = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=windows)[0]
        # output step t collects the windows that overlap it (non-causal) or end at or before it (causal)
        return self.proj(y.transpose(1, 2))[:, :, :steps].transpose(1, 2)


class HeadwiseProjection(nn.Module):
    """(B, C_in, T, F) -> (B, heads, T, channels, F): 1x1 conv, PReLU per head, layer norm over (channels, F).

    All heads share one conv (the same as one conv per head); slope, gain and bias are per head as in the paper.
    """

    def __init__(self, in_channels: int, heads: int, channels: int, freqs: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.heads, self.eps = heads, eps
        self.conv = nn.Conv2d(in_channels, heads * channels, 1)
        self.act = nn.PReLU(heads)
        self.gain = nn.Parameter(torch.ones(1, heads, 1, channels, freqs))
        self.bias = nn.Parameter(torch.zeros(1, heads, 1, channels, freqs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x).unflatten(1, (self.heads, -1))).transpose(2, 3)
        # F.layer_norm, not hand-written statistics: autocast runs it in float32
        return F.layer_norm(y, y.shape[-2:], eps=self.eps) * self.gain + self.bias


class FullBandAttention(nn.Module):
    """TF-GridNet's full-band multi-head attention across frames; returns the update (B, D, T, F).

    Self-attention by default; with ``context`` (B, D, S, F) the queries come from ``x`` and keys/values from
    ``context`` (cross-attention, as the pos/neg systems fuse their speaker cue). ``mask`` is a bool mask
    broadcastable to (B, heads, T, S), True where a query may attend a key.
    """

    def __init__(self, channels: int, freqs: int, heads: int, attention_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention heads ({heads}) must divide the channels ({channels})")
        self.query = HeadwiseProjection(channels, heads, attention_dim, freqs, eps)
        self.key = HeadwiseProjection(channels, heads, attention_dim, freqs, eps)
        self.value = HeadwiseProjection(channels, heads, channels // heads, freqs, eps)
        self.output = HeadwiseProjection(channels, 1, channels, freqs, eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        value = self.value(context)
        batch, heads, _, per_head, freqs = value.shape
        # a frame's token is its whole (channels x F) map, so the default scale 1 / sqrt(E * F) is the paper's
        out = F.scaled_dot_product_attention(self.query(x).flatten(3), self.key(context).flatten(3),
                                             value.flatten(3), attn_mask=mask)
        out = out.unflatten(3, (per_head, freqs)).permute(0, 1, 3, 2, 4).reshape(batch, heads * per_head, -1, freqs)
        return self.output(out).squeeze(1).transpose(1, 2)


class GridNetBlock(nn.Module):
    """Intra-frame full-band BLSTM, inter-frame sub-band (B)LSTM, full-band self-attention; (B, D, T, F) -> same."""

    def __init__(self, channels: int, freqs: int, hidden: int, heads: int, attention_dim: int, kernel_size: int = 1,
                 stride: int = 1, causal: bool = False, attention_context: int = 0, eps: float = 1e-5) -> None:
        super().__init__()
        self.causal, self.attention_context = causal, attention_context
        # frequency is never causal: every frame has all its bins at once
        self.intra = UnfoldedLSTM(channels, hidden, kernel_size, stride, bidirectional=True, eps=eps)
        self.inter = UnfoldedLSTM(channels, hidden, kernel_size, stride, bidirectional=not causal, causal=causal,
                                  eps=eps)
        self.attention = FullBandAttention(channels, freqs, heads, attention_dim, eps)

    def forward(self, x: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        batch, channels, total, freqs = x.shape
        intra = x.permute(0, 2, 3, 1).reshape(batch * total, freqs, channels)
        x = x + self.intra(intra).reshape(batch, total, freqs, channels).permute(0, 3, 1, 2)
        inter = x.permute(0, 3, 2, 1).reshape(batch * freqs, total, channels)
        lengths = None if frames is None else frames.repeat_interleave(freqs)
        x = x + self.inter(inter, lengths).reshape(batch, freqs, total, channels).permute(0, 3, 2, 1)
        mask = None if frames is None else key_padding_mask(frame_mask(frames, total))
        if self.causal:
            order = causal_mask(total, self.attention_context, x.device)
            mask = order if mask is None else mask & order
        return x + self.attention(x, mask=mask)


class TFGridNetEncoder(nn.Module):
    """Waveforms (B, C, T) -> TF-GridNet feature maps (B, D, frames, F) and valid frame counts (B,).

    Level normalisation (over the valid samples), STFT, conv front end with gLN, ``num_blocks`` non-causal
    GridNet blocks: TF-GridNet without its output layers, as used to encode enrollments.
    """

    def __init__(self, channels: int, n_fft: int, hop: int, embed_dim: int, hidden: int, num_blocks: int,
                 heads: int, attention_dim: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.stft = STFT(n_fft, hop)
        self.front = ConvFrontEnd(2 * channels, embed_dim)
        self.blocks = nn.ModuleList(
            GridNetBlock(embed_dim, self.stft.freqs, hidden, heads, attention_dim, kernel_size, stride)
            for _ in range(num_blocks)
        )

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if lengths is None:
            lengths = torch.full((wave.shape[0],), wave.shape[-1], dtype=torch.long, device=wave.device)
        lengths = lengths.to(wave.device)
        spec = self.stft(wave / rms_level(wave, lengths))
        frames = self.stft.num_frames(lengths).clamp(1, spec.shape[2])
        # frames past the unpadded signal's count may still hold its last samples: zero them like the padding
        spec = spec * frame_mask(frames, spec.shape[2])[:, None, :, None].to(spec.dtype)
        x = self.front(spec, frames)
        for block in self.blocks:
            x = block(x, frames)
        return x, frames
