"""Pre-norm transformer block over frames, with optional cross-attention and a Conformer convolution module:
the token transformer of maskgit_tse and the frame blocks of whisper_cfm."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ConvModule(torch.nn.Module):
    """Conformer's convolution module over frames (B, F, width); padded frames are zeroed before the conv."""

    def __init__(self, width: int, kernel_size: int, dropout: float):
        super().__init__()
        self.pointwise_in = torch.nn.Linear(width, 2 * width)
        self.depthwise = torch.nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2, groups=width)
        self.norm = torch.nn.GroupNorm(1, width)
        self.pointwise_out = torch.nn.Linear(width, width)
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        x = F.glu(self.pointwise_in(x), dim=-1).masked_fill(padding[..., None], 0.0)
        x = F.silu(self.norm(self.depthwise(x.transpose(1, 2)))).transpose(1, 2)
        return self.dropout(self.pointwise_out(x))


class Block(torch.nn.Module):
    """Pre-norm block: self-attention, [cross-attention to the enrollment], [convolution module], feed-forward."""

    def __init__(self, width: int, heads: int, ff_mult: int, dropout: float, cross: bool, conv_kernel: int):
        super().__init__()
        self.attention_norm = torch.nn.LayerNorm(width)
        self.attention = torch.nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.cross_norm = torch.nn.LayerNorm(width) if cross else None
        self.cross = torch.nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True) if cross else None
        self.conv_norm = torch.nn.LayerNorm(width) if conv_kernel else None
        self.conv = ConvModule(width, conv_kernel, dropout) if conv_kernel else None
        self.ff_norm = torch.nn.LayerNorm(width)
        self.ff = torch.nn.Sequential(torch.nn.Linear(width, ff_mult * width), torch.nn.GELU(),
                                      torch.nn.Dropout(dropout), torch.nn.Linear(ff_mult * width, width))
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding: torch.Tensor, memory: torch.Tensor | None = None,
                memory_padding: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``bias``: None, or (B * heads, F, F) added to the self-attention scores with padded keys already at
        -inf (it then replaces ``padding`` there: the attention takes one kind of mask)."""
        h = self.attention_norm(x)
        x = x + self.dropout(self.attention(h, h, h, key_padding_mask=padding if bias is None else None,
                                            attn_mask=bias, need_weights=False)[0])
        if self.cross is not None:
            h = self.cross_norm(x)
            x = x + self.dropout(self.cross(h, memory, memory, key_padding_mask=memory_padding, need_weights=False)[0])
        if self.conv is not None:
            x = x + self.conv(self.conv_norm(x), padding)
        return x + self.dropout(self.ff(self.ff_norm(x)))
