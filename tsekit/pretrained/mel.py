"""The log-mel front end of Vocos and HiFi-GAN (``LogMel``) and its frame convention.

Published vocoders (``tsekit.pretrained.vocoders``) invert this mel; the toolkit's own codec and vocoder
(``tsekit.codec``) and the systems that generate mels for a vocoder compute it too.

Frame convention ("same" padding, as Vocos): a waveform of T samples is padded to ``F * hop`` samples with
``F = ceil(T / hop)``; frame ``i`` is centred on sample ``i * hop + hop / 2``; and a vocoder renders F frames as
exactly ``F * hop`` samples. So mel -> waveform -> mel keeps the frame count, and callers crop the output to T.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812  (torch's usual alias)

from tsekit import TsekitError


def frames_for(samples: int, hop: int) -> int:
    """Frames that cover ``samples`` (the last one padded)."""
    return max(1, math.ceil(samples / hop))


def pad_for_frames(wav: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """(..., T) -> (..., F*hop + n_fft - hop): zero-pad the end to whole frames, then reflect-pad both sides
    by (n_fft - hop)/2 so that an STFT without centring gives frames centred as the module docstring says."""
    if (n_fft - hop) % 2:
        raise TsekitError(f"n_fft - hop must be even (got n_fft {n_fft}, hop {hop})")
    length = wav.shape[-1]
    wav = F.pad(wav, (0, frames_for(length, hop) * hop - length))
    side = (n_fft - hop) // 2
    shape = wav.shape
    flat = wav.reshape(-1, 1, shape[-1])
    # reflection needs more samples than the pad; very short inputs are zero-padded instead
    mode = "reflect" if shape[-1] > side else "constant"
    return F.pad(flat, (side, side), mode=mode).reshape(*shape[:-1], -1)


class LogMel(torch.nn.Module):
    """Waveform (B, T) -> natural-log mel magnitude (B, n_mels, ceil(T / hop)).

    Magnitude (power 1) mel with a Hann window, Slaney-normalised filters and log(max(x, 1e-5)), as Vocos
    and HiFi-GAN. The defaults are the 22.05 kHz, n_fft 1024, hop 256, 80-bin setting of the Whisper-based
    systems' vocoders; every value is a parameter. torchaudio's mel filterbank is its pure-Python part, so it
    works without torchaudio's compiled extension.
    """

    def __init__(self, sample_rate: int = 22050, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 80,
                 f_min: float = 0.0, f_max: float | None = None):
        super().__init__()
        from torchaudio.functional import melscale_fbanks

        self.n_fft, self.hop_length = n_fft, hop_length
        filters = melscale_fbanks(n_fft // 2 + 1, f_min, f_max or sample_rate / 2, n_mels, sample_rate,
                                  norm="slaney", mel_scale="slaney")
        self.register_buffer("filters", filters.T.contiguous(), persistent=False)  # (n_mels, bins)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """|STFT| (B, n_fft/2 + 1, F) on the frame grid of the module docstring."""
        padded = pad_for_frames(wav, self.n_fft, self.hop_length)
        spec = torch.stft(padded, self.n_fft, self.hop_length, window=self.window, center=False,
                          return_complex=True)
        return spec.abs()

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(self.filters, self.magnitude(wav))
        return torch.log(mel.clamp(min=1e-5))
