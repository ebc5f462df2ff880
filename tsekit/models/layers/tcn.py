"""Temporal convolutional network (Conv-TasNet style) blocks and speaker conditioning of a stack.

Shapes are (batch, channels, frames) throughout. A `TCNStack` is the "repeat" of
Conv-TasNet: blocks with dilations 1, 2, 4, ..., 2^(n-1), so the receptive field
grows exponentially with depth. SpEx+ feeds the speaker embedding to the first
block of each stack by concatenation (`condition_dim`); Z-SpEx instead modulates
the stack input with `SpeakerModulation` (ConSM).
"""

from __future__ import annotations

import torch
from torch import nn


class GlobalLayerNorm(nn.Module):
    """gLN: one mean/variance over channels and frames of each example, per-channel gain and bias.

    Used inside TCN blocks (Conv-TasNet's non-causal choice): the statistics cover
    the whole utterance, so the block output does not depend on a frame's position.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2), keepdim=True)
        var = (x - mean).pow(2).mean(dim=(1, 2), keepdim=True)
        return self.gain * (x - mean) / torch.sqrt(var + self.eps) + self.bias


class ChannelLayerNorm(nn.LayerNorm):
    """cLN: layer norm over the channels of each frame separately (input (B, C, T))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class TCNBlock(nn.Module):
    """1x1 conv - PReLU - gLN - dilated depthwise conv - PReLU - gLN - 1x1 conv, plus the input (residual).

    With ``condition_dim > 0`` a per-utterance vector (the speaker embedding) is
    repeated over frames and concatenated to the input channels before the first
    1x1 conv; the residual path carries the features alone.
    """

    def __init__(self, channels: int, hidden: int, kernel_size: int = 3, dilation: int = 1,
                 condition_dim: int = 0) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"TCN kernel_size must be odd to keep the frame count, got {kernel_size}")
        self.condition_dim = condition_dim
        self.expand = nn.Conv1d(channels + condition_dim, hidden, 1)
        self.act1 = nn.PReLU()
        self.norm1 = GlobalLayerNorm(hidden)
        self.depthwise = nn.Conv1d(hidden, hidden, kernel_size, dilation=dilation, groups=hidden,
                                   padding=dilation * (kernel_size - 1) // 2)
        self.act2 = nn.PReLU()
        self.norm2 = GlobalLayerNorm(hidden)
        self.project = nn.Conv1d(hidden, channels, 1)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        y = x
        if self.condition_dim:
            if condition is None:
                raise ValueError("this TCN block is speaker-conditioned; pass the embedding")
            y = torch.cat([x, condition.unsqueeze(-1).expand(-1, -1, x.shape[-1])], dim=1)
        y = self.norm1(self.act1(self.expand(y)))
        y = self.norm2(self.act2(self.depthwise(y)))
        return x + self.project(y)


class TCNStack(nn.Module):
    """``num_blocks`` TCN blocks with dilations 2^0 .. 2^(num_blocks-1); the first one optionally conditioned."""

    def __init__(self, channels: int, hidden: int, num_blocks: int = 8, kernel_size: int = 3,
                 condition_dim: int = 0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TCNBlock(channels, hidden, kernel_size, dilation=2**b, condition_dim=condition_dim if b == 0 else 0)
            for b in range(num_blocks)
        )

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        x = self.blocks[0](x, condition)
        for block in self.blocks[1:]:
            x = block(x)
        return x


class SpeakerModulation(nn.Module):
    """ConSM (Z-SpEx / MC-SpEx): FiLM whose scale and shift depend on the speaker AND on the features.

    h = PReLU(W_h [x; e])  (the embedding e repeated over frames, one 1x1 conv),
    gamma = W_g h, beta = W_b h  (1x1 convs, per frame and channel),
    out = x * (1 + gamma) + beta.

    A plain FiLM applies the same affine map to every frame; computing gamma/beta
    from [x; e] lets the modulation depend on how well each frame matches the
    speaker. W_g and W_b start at zero, so with the "1 +" the module is exactly
    the identity at initialisation: a fresh network starts from the
    unconditioned features instead of a random scaling (as adaLN-zero / FiLM
    layers are usually started); their gradients are not zero, so it learns.
    """

    def __init__(self, channels: int, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = nn.Conv1d(channels + embed_dim, hidden, 1)
        self.act = nn.PReLU()
        self.scale = nn.Conv1d(hidden, channels, 1)
        self.shift = nn.Conv1d(hidden, channels, 1)
        for conv in (self.scale, self.shift):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, embedding.unsqueeze(-1).expand(-1, -1, x.shape[-1])], dim=1)
        h = self.act(self.hidden(h))
        return x * (1 + self.scale(h)) + self.shift(h)
