"""A Vocos-style generator (ConvNeXt over frames -> ISTFT head) and the log-mel front end: the toolkit's vocoder.

Vocos (Siuzdak, 2023, arXiv:2306.00814) predicts, for every frame, the log-magnitude and the phase of a
complex STFT frame and renders the waveform with one inverse STFT, instead of upsampling in the time
domain as HiFi-GAN or EnCodec's SEANet decoder do. All layers run at the frame rate, so a network of a
few million parameters is cheap; on a CPU it learned several times faster than a SEANet codec of the
same size (measured figures in /work/shared/ARCHITECTURE.md, "Offline facts").

The ISTFT head keeps the frame convention of the log-mel front end (``tsekit.pretrained.mel``, "same" padding, as
Vocos): F frames render exactly ``F * hop`` samples, so mel -> waveform -> mel keeps the frame count, and callers
crop the output to T.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812  (torch's usual alias)

from tsekit import TsekitError
from tsekit.pretrained.codec_base import Vocoder, register_codec
from tsekit.pretrained.mel import LogMel


class ConvNeXtBlock(torch.nn.Module):
    """ConvNeXt block over frames (Liu et al. 2022, as used by Vocos): depthwise conv, LayerNorm, a 3x
    pointwise MLP with GELU, a learned per-channel layer scale and a residual connection."""

    def __init__(self, width: int, kernel_size: int = 7, layer_scale: float = 0.1):
        super().__init__()
        self.depthwise = torch.nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2, groups=width)
        self.norm = torch.nn.LayerNorm(width, eps=1e-6)
        self.expand = torch.nn.Linear(width, 3 * width)
        self.project = torch.nn.Linear(3 * width, width)
        # a small scale keeps each block close to the identity at the start, so deep stacks train stably
        self.scale = torch.nn.Parameter(torch.full((width,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, width, F)
        y = self.depthwise(x).transpose(1, 2)
        y = self.project(F.gelu(self.expand(self.norm(y))))
        return x + (self.scale * y).transpose(1, 2)


class ConvNeXtStack(torch.nn.Module):
    """Input conv (kernel 7) -> LayerNorm -> ConvNeXt blocks -> LayerNorm: (B, in, F) -> (B, width, F)."""

    def __init__(self, in_channels: int, width: int, num_blocks: int):
        super().__init__()
        self.embed = torch.nn.Conv1d(in_channels, width, 7, padding=3)
        self.norm_in = torch.nn.LayerNorm(width, eps=1e-6)
        self.blocks = torch.nn.ModuleList(ConvNeXtBlock(width, layer_scale=1.0 / max(num_blocks, 1))
                                          for _ in range(num_blocks))
        self.norm_out = torch.nn.LayerNorm(width, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_in(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.norm_out(x.transpose(1, 2)).transpose(1, 2)


class ISTFTHead(torch.nn.Module):
    """(B, width, F) -> waveform (B, F * hop): per frame a log-magnitude and a phase, then an inverse STFT.

    The phase is predicted as an angle and used through cos/sin (Vocos): no wrapping problem, and the
    magnitude is exp(log-magnitude) clipped at 100 so that an early outlier cannot overflow. The inverse
    STFT is written out (irfft, window, overlap-add, divide by the summed squared window, trim) because
    torch.istft has no "same" padding.
    """

    def __init__(self, width: int, n_fft: int, hop_length: int):
        super().__init__()
        if (n_fft - hop_length) % 2 or hop_length > n_fft:
            raise TsekitError(f"ISTFT head: need hop <= n_fft and n_fft - hop even (n_fft {n_fft}, hop {hop_length})")
        self.n_fft, self.hop_length = n_fft, hop_length
        self.out = torch.nn.Linear(width, n_fft + 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_magnitude, phase = self.out(x.transpose(1, 2)).transpose(1, 2).chunk(2, dim=1)
        magnitude = torch.exp(log_magnitude).clamp(max=1e2)
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        return self.inverse(spec)

    def inverse(self, spec: torch.Tensor) -> torch.Tensor:
        """Complex (B, n_fft/2 + 1, F) -> (B, F * hop), "same" padding."""
        frames = spec.shape[-1]
        pieces = torch.fft.irfft(spec, n=self.n_fft, dim=1) * self.window[None, :, None]  # (B, n_fft, F)
        total = (frames - 1) * self.hop_length + self.n_fft
        fold = dict(output_size=(1, total), kernel_size=(1, self.n_fft), stride=(1, self.hop_length))
        wav = F.fold(pieces, **fold)[:, 0, 0, :]
        envelope = F.fold(self.window.square()[None, :, None].expand(1, -1, frames), **fold)[0, 0, 0, :]
        side = (self.n_fft - self.hop_length) // 2
        wav = wav[:, side: total - side]
        return wav / envelope[side: total - side].clamp(min=1e-11)


class VocosGenerator(torch.nn.Module):
    """Frames (B, in_channels, F) -> waveform (B, F * hop_length): ConvNeXt stack + ISTFT head.

    Vocos's published mel vocoder (24 kHz, 100 mels) has width 512, intermediate 1536 (3x), 8 blocks,
    n_fft 1024, hop 256 (13.5 M parameters); the defaults here are smaller (width 256, 6 blocks, 2.8 M with 80 mels) so
    that it trains in minutes on a CPU.
    """

    def __init__(self, in_channels: int, width: int = 256, num_blocks: int = 6, n_fft: int = 1024,
                 hop_length: int = 256):
        super().__init__()
        self.hop_length = hop_length
        self.backbone = ConvNeXtStack(in_channels, width, num_blocks)
        self.head = ISTFTHead(width, n_fft, hop_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@register_codec("tsekit_vocoder")
class ToolkitVocoder(Vocoder):
    """The toolkit's mel vocoder: ``LogMel`` -> ``VocosGenerator``, trained by ``tsekit codec train``.

    ``mel`` and ``forward`` share n_fft and hop, so ``forward(mel(wav))`` has ``ceil(T / hop) * hop`` samples.
    """

    random_init = True  # its weights come from tsekit codec train, loaded from the experiment dir

    def __init__(self, sample_rate: int = 22050, n_mels: int = 80, n_fft: int = 1024, hop_length: int = 256,
                 f_min: float = 0.0, f_max: float | None = None, width: int = 256, num_blocks: int = 6):
        super().__init__()
        self.sample_rate, self.n_mels, self.hop_length = sample_rate, n_mels, hop_length
        self.front = LogMel(sample_rate, n_fft, hop_length, n_mels, f_min, f_max)
        self.generator = VocosGenerator(n_mels, width, num_blocks, n_fft, hop_length)

    def mel(self, wav: torch.Tensor) -> torch.Tensor:
        return self.front(wav)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        self.check_mel(mel)
        return self.generator(mel)
