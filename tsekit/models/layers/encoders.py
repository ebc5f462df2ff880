"""Multi-scale 1-D convolutional speech encoder and the matching transposed-conv decoders (SpEx+).

Three learned filterbanks look at the waveform through short, middle and long
windows (SpEx+: 2.5, 10 and 20 ms). All three use the SAME hop (half the short
window) so their frames line up and can be concatenated or masked frame by
frame. The waveform is zero-padded at the end so that the short window tiles
every sample (the short decoder then reconstructs the whole input) and so that
the longer windows of the last frames have samples to read; decoders cut their
output back to the input length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tsekit import TsekitError


def window_samples(window_ms: float, sample_rate: int) -> int:
    """A window given in milliseconds as a whole number of samples (2.5 ms at 8 kHz -> 20)."""
    return int(round(window_ms * sample_rate / 1000.0))


class MultiScaleEncoder(nn.Module):
    """waveform (B, T) -> one ReLU feature map (B, num_filters, frames) per window length."""

    def __init__(self, num_filters: int, windows: Sequence[int]) -> None:
        super().__init__()
        windows = [int(w) for w in windows]
        if windows[0] < 2 or windows[0] % 2 or any(b < a for a, b in zip(windows, windows[1:], strict=False)):
            raise ValueError(f"windows must be increasing with an even first (short) one >= 2 samples, got {windows}")
        self.windows = windows
        self.stride = windows[0] // 2
        self.convs = nn.ModuleList(nn.Conv1d(1, num_filters, w, stride=self.stride) for w in windows)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frames covering ``num_samples`` samples: ceil((n - short) / hop) + 1, at least 1 (tensor in, tensor out)."""
        excess = (num_samples - self.windows[0]).clamp(min=0)
        return torch.div(excess + self.stride - 1, self.stride, rounding_mode="floor") + 1

    def forward(self, waveform: torch.Tensor, min_frames: int = 1) -> list[torch.Tensor]:
        frames = int(self.num_frames(torch.tensor(waveform.shape[-1])))
        frames = max(frames, min_frames)
        longest = (frames - 1) * self.stride + self.windows[-1]
        padded = F.pad(waveform, (0, longest - waveform.shape[-1])).unsqueeze(1)
        return [
            F.relu(conv(padded[..., : (frames - 1) * self.stride + window]))
            for conv, window in zip(self.convs, self.windows, strict=True)
        ]


class MultiScaleDecoder(nn.Module):
    """One transposed conv per window: masked features (B, num_filters, frames) -> waveform (B, length)."""

    def __init__(self, num_filters: int, windows: Sequence[int]) -> None:
        super().__init__()
        stride = int(windows[0]) // 2
        self.convs = nn.ModuleList(nn.ConvTranspose1d(num_filters, 1, int(w), stride=stride) for w in windows)

    def forward(self, features: Sequence[torch.Tensor], length: int) -> list[torch.Tensor]:
        outputs = []
        for conv, feature in zip(self.convs, features, strict=True):
            wave = conv(feature).squeeze(1)
            # the encoder padding guarantees wave covers `length`; pad defensively for odd callers
            wave = F.pad(wave, (0, max(0, length - wave.shape[-1])))
            outputs.append(wave[..., :length])
        return outputs


NUM_SCALES = 3


def scale_windows(name: str, sample_rate: int, windows_ms: tuple[float, float, float]) -> list[int]:
    """Short/middle/long windows in samples; the short one must be even (the hop is half of it)."""
    windows = [window_samples(ms, sample_rate) for ms in windows_ms]
    if windows[0] < 2 or windows[0] % 2 or not windows[0] <= windows[1] <= windows[2]:
        raise TsekitError(f"model {name}: windows {list(windows_ms)} ms at {sample_rate} Hz give {windows} "
                          "samples; need increasing windows and an even short window of at least 2 samples")
    return windows
