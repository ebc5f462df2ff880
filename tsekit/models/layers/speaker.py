"""ResNet speaker encoder of SpEx+: encoder features of the enrollment -> one speaker embedding.

Each residual block is 1x1 conv - BN - PReLU - 1x1 conv - BN, plus the input
(through a 1x1 conv when the width changes), PReLU, then max pooling by 3 over
frames. After the blocks a 1x1 conv maps to the embedding size and the frames
are averaged.

Padding: enrollments in a batch are zero-padded to the longest. Everything
here is frame-local (1x1 convs, BN, pooling windows that never straddle the
valid/padded border once the valid count is floored), so averaging over the
valid pooled frames only gives the same embedding as the unpadded enrollment.
That is exact in eval mode; in training mode BatchNorm's batch statistics also
see the padded frames (as in the published SpEx+), which only shifts the
normalisation statistics slightly.
"""

from __future__ import annotations

import torch
from torch import nn

POOL = 3


class ResBlock(nn.Module):
    """Residual block of 1x1 convs with BatchNorm, then max pooling by ``POOL`` frames."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm1d(out_channels),
            nn.PReLU(),
            nn.Conv1d(out_channels, out_channels, 1, bias=False),
            nn.BatchNorm1d(out_channels),
        )
        self.shortcut = (nn.Conv1d(in_channels, out_channels, 1, bias=False)
                         if in_channels != out_channels else nn.Identity())
        self.act = nn.PReLU()
        self.pool = nn.MaxPool1d(POOL)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.body(x) + self.shortcut(x)))


class SpeakerEncoder(nn.Module):
    """(B, in_channels, frames) + valid frame counts (B,) -> embedding (B, embed_dim).

    Block widths follow SpEx+: in->in, in->hidden, then hidden->hidden.
    """

    def __init__(self, in_channels: int, hidden: int, embed_dim: int, num_blocks: int = 3) -> None:
        super().__init__()
        widths = [in_channels, in_channels] + [hidden] * (num_blocks - 1)
        self.blocks = nn.Sequential(*(ResBlock(a, b) for a, b in zip(widths, widths[1:], strict=False)))
        self.to_embedding = nn.Conv1d(widths[num_blocks], embed_dim, 1)
        self.num_blocks = num_blocks

    @property
    def min_frames(self) -> int:
        """Input frames needed so that at least one frame survives the poolings."""
        return POOL**self.num_blocks

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        if features.shape[-1] < self.min_frames:
            raise ValueError(f"speaker encoder needs >= {self.min_frames} frames, got {features.shape[-1]}")
        out = self.to_embedding(self.blocks(features))
        valid = torch.div(frame_lengths.to(out.device), self.min_frames, rounding_mode="floor")
        valid = valid.clamp(min=1, max=out.shape[-1])
        mask = (torch.arange(out.shape[-1], device=out.device) < valid.unsqueeze(1)).to(out.dtype)
        return (out * mask.unsqueeze(1)).sum(-1) / valid.unsqueeze(1).to(out.dtype)
