"""Discriminators and losses of the codec/vocoder GAN training (``tsekit.codec.train``).

- ``MultiPeriodDiscriminator`` (HiFi-GAN, Kong et al. 2020): the waveform folded into (T/p, p) for periods
  2, 3, 5, 7, 11, each read by a 2-D conv stack with (k, 1) kernels; it judges periodic structure (pitch).
- ``MultiResolutionSTFTDiscriminator`` (UnivNet, Jang et al. 2021; used by Vocos): 2-D conv stacks over
  linear magnitude spectrograms at several (n_fft, hop) resolutions; it judges the spectral texture that a
  mel loss cannot see. EnCodec's MS-STFT discriminator reads the complex STFT instead; magnitudes are used
  here as in Vocos, because the ISTFT decoder's phase is judged by the period discriminator.
- Adversarial losses: ``hinge`` (Vocos, EnCodec) or ``least_squares`` (HiFi-GAN, LSGAN). Hinge is the default:
  it stops pushing a discriminator output once it is beyond the margin, which kept the discriminator from
  overpowering a small generator in Vocos's and EnCodec's training.
- ``feature_matching_loss``: L1 between the discriminators' hidden features of real and generated audio,
  mean over layers (HiFi-GAN, MelGAN).
- ``MultiScaleMelLoss``: L1 between log-mels at several resolutions (DAC uses 7 scales; 3 here by default),
  plus an optional waveform L1 done by the trainer.

Channel widths are parameters: the published discriminators (HiFi-GAN's up to 1024 channels) are far too
slow for a CPU training of minutes; the defaults are narrower.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812  (torch's usual alias)
from torch.nn.utils.parametrizations import weight_norm

# what every discriminator returns per sub-discriminator: (logits, hidden feature maps)
Judgement = tuple[torch.Tensor, list[torch.Tensor]]


def judge(x: torch.Tensor, layers: torch.nn.ModuleList, out: torch.nn.Module) -> Judgement:
    """Run a discriminator's conv stack (leaky ReLU 0.1 after each layer): its scores and every layer's output."""
    features = []
    for layer in layers:
        x = F.leaky_relu(layer(x), 0.1)
        features.append(x)
    x = out(x)
    features.append(x)
    return x.flatten(1), features


class PeriodDiscriminator(torch.nn.Module):
    def __init__(self, period: int, channels: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        self.period = period
        layers, previous = [], 1
        for width in channels:
            layers.append(weight_norm(torch.nn.Conv2d(previous, width, (5, 1), (3, 1), padding=(2, 0))))
            previous = width
        layers.append(weight_norm(torch.nn.Conv2d(previous, previous, (5, 1), 1, padding=(2, 0))))
        self.layers = torch.nn.ModuleList(layers)
        self.out = weight_norm(torch.nn.Conv2d(previous, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, wav: torch.Tensor) -> Judgement:  # (B, T)
        length = wav.shape[-1]
        extra = (-length) % self.period
        if extra:  # reflect-pad to a whole number of periods (zero-pad when the input is shorter than the pad)
            wav = F.pad(wav[:, None], (0, extra), mode="reflect" if length > extra else "constant")[:, 0]
        return judge(wav.reshape(wav.shape[0], 1, -1, self.period), self.layers, self.out)


class MultiPeriodDiscriminator(torch.nn.Module):
    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11), channels: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        self.discriminators = torch.nn.ModuleList(PeriodDiscriminator(p, channels) for p in periods)

    def forward(self, wav: torch.Tensor) -> list[Judgement]:
        return [d(wav) for d in self.discriminators]


class SpectrogramDiscriminator(torch.nn.Module):
    """One resolution of the multi-resolution STFT discriminator: 2-D convs over (frequency, time)."""

    def __init__(self, n_fft: int, hop_length: int, channels: int = 32):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.layers = torch.nn.ModuleList([
            weight_norm(torch.nn.Conv2d(1, channels, (7, 5), padding=(3, 2))),
            weight_norm(torch.nn.Conv2d(channels, channels, (5, 3), stride=(2, 1), padding=(2, 1))),
            weight_norm(torch.nn.Conv2d(channels, channels, (5, 3), stride=(2, 1), padding=(2, 1))),
            weight_norm(torch.nn.Conv2d(channels, channels, (5, 3), stride=(2, 1), padding=(2, 1))),
            weight_norm(torch.nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))),
        ])
        self.out = weight_norm(torch.nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, wav: torch.Tensor) -> Judgement:
        spec = torch.stft(wav, self.n_fft, self.hop_length, window=self.window, return_complex=True).abs()
        return judge(spec[:, None], self.layers, self.out)  # (B, 1, bins, frames)


class MultiResolutionSTFTDiscriminator(torch.nn.Module):
    def __init__(self, resolutions: tuple[tuple[int, int], ...] = ((1024, 256), (2048, 512), (512, 128)),
                 channels: int = 32):
        super().__init__()
        self.discriminators = torch.nn.ModuleList(SpectrogramDiscriminator(n, h, channels) for n, h in resolutions)

    def forward(self, wav: torch.Tensor) -> list[Judgement]:
        return [d(wav) for d in self.discriminators]


class Discriminators(torch.nn.Module):
    """Both discriminators; ``forward`` returns the judgements of every sub-discriminator, periods first."""

    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11),
                 period_channels: tuple[int, ...] = (32, 64, 128, 256),
                 resolutions: tuple[tuple[int, int], ...] = ((1024, 256), (2048, 512), (512, 128)),
                 stft_channels: int = 32):
        super().__init__()
        self.period = MultiPeriodDiscriminator(tuple(periods), tuple(period_channels)) if periods else None
        self.stft = None
        if resolutions:
            self.stft = MultiResolutionSTFTDiscriminator(tuple(map(tuple, resolutions)), stft_channels)

    def forward(self, wav: torch.Tensor) -> list[Judgement]:
        judged: list[Judgement] = []
        for part in (self.period, self.stft):
            if part is not None:
                judged += part(wav)
        return judged


def discriminator_loss(real: list[Judgement], fake: list[Judgement], kind: str = "hinge") -> torch.Tensor:
    """Mean over sub-discriminators of the loss that pushes real logits up and generated ones down."""
    total = 0.0
    for (real_logits, _), (fake_logits, _) in zip(real, fake, strict=True):
        if kind == "hinge":
            total = total + F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
        else:  # least squares: real -> 1, fake -> 0
            total = total + (1 - real_logits).square().mean() + fake_logits.square().mean()
    return total / len(real)


def generator_adversarial_loss(fake: list[Judgement], kind: str = "hinge") -> torch.Tensor:
    """Mean over sub-discriminators of the generator's loss: make generated logits look real."""
    total = 0.0
    for logits, _ in fake:
        total = total + (F.relu(1 - logits).mean() if kind == "hinge" else (1 - logits).square().mean())
    return total / len(fake)


def feature_matching_loss(real: list[Judgement], fake: list[Judgement]) -> torch.Tensor:
    """Mean over sub-discriminators and layers of L1(real features, generated features); real ones detached."""
    total, count = 0.0, 0
    for (_, real_features), (_, fake_features) in zip(real, fake, strict=True):
        for r, f in zip(real_features, fake_features, strict=True):
            total = total + (r.detach() - f).abs().mean()
            count += 1
    return total / max(count, 1)


class MultiScaleMelLoss(torch.nn.Module):
    """Mean over scales of L1(log-mel(estimate), log-mel(reference)); scales are (n_fft, hop, n_mels)."""

    def __init__(self, sample_rate: int, scales: tuple[tuple[int, int, int], ...] = ((512, 128, 40), (1024, 256, 80),
                                                                                    (2048, 512, 128))):
        super().__init__()
        from tsekit.pretrained.mel import LogMel

        self.mels = torch.nn.ModuleList(LogMel(sample_rate, n, h, m) for n, h, m in scales)

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return sum((mel(estimate) - mel(reference)).abs().mean() for mel in self.mels) / len(self.mels)
