"""SpEx+ (Ge et al., Interspeech 2020): complete time-domain speaker extraction.

    mixture --multi-scale encoder--> (w_s, w_m, w_l) --cLN + 1x1--> TCN stacks --> 3 masks --> 3 decoders
    enroll  --the SAME encoder-----> cLN + 1x1 -> ResNet speaker encoder -> mean over valid frames -> e
    e is concatenated to the features at the first block of every TCN stack; a linear layer on e gives
    the speaker logits for the auxiliary cross-entropy loss.

Defaults are the published configuration (WSJ0-2mix-extr, 8 kHz): windows 2.5 / 10 / 20 ms
(20 / 80 / 160 samples at 8 kHz, hop 10 samples), N = 256 filters per scale, O = 256 channels,
4 stacks x 8 blocks of hidden width 512 and kernel 3, embedding D = 256, 3 residual blocks,
101 training speakers. Windows are given in ms and converted with `sample_rate`, so a 16 kHz
recipe keeps the same time resolution (40 / 160 / 320 samples). That gives 11,138,734 parameters
(the paper reports 11.1 M).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tsekit import TsekitError
from tsekit.models.layers.encoders import MultiScaleDecoder, MultiScaleEncoder, window_samples
from tsekit.models.layers.speaker import SpeakerEncoder
from tsekit.models.layers.tcn import ChannelLayerNorm, TCNStack
from tsekit.models.registry import TSEModel, register

NUM_SCALES = 3


def scale_windows(name: str, sample_rate: int, windows_ms: tuple[float, float, float]) -> list[int]:
    """Short/middle/long windows in samples; the short one must be even (the hop is half of it)."""
    windows = [window_samples(ms, sample_rate) for ms in windows_ms]
    if windows[0] < 2 or windows[0] % 2 or not windows[0] <= windows[1] <= windows[2]:
        raise TsekitError(f"model {name}: windows {list(windows_ms)} ms at {sample_rate} Hz give {windows} "
                          "samples; need increasing windows and an even short window of at least 2 samples")
    return windows


def check_positive(name: str, **values: int) -> None:
    """One-line error for a size parameter that is not a positive integer."""
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise TsekitError(f"model {name}: parameter {key} must be a positive integer, got {value!r}")


def check_choice(name: str, key: str, value: object, choices: Sequence[str]) -> None:
    """One-line error for a parameter outside its choices (annotate it with the same Literal for the config)."""
    if value not in choices:
        raise TsekitError(f"model {name}: parameter {key} must be one of {', '.join(choices)}, got {value!r}")


def enroll_lengths_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """True enrollment lengths (B,); the whole padded length when the batch does not say."""
    enroll = batch["enroll"]
    lengths = batch.get("enroll_lengths")
    if lengths is None:
        return torch.full((enroll.shape[0],), enroll.shape[-1], dtype=torch.long, device=enroll.device)
    return lengths.to(enroll.device)


@register("spex_plus")
class SpExPlus(TSEModel):
    """SpEx+ with the published sizes as defaults; outputs short/middle/long estimates and speaker logits."""

    needs = frozenset({"target", "enroll", "speaker"})

    def __init__(self, *, sample_rate: int = 8000, short_window_ms: float = 2.5, middle_window_ms: float = 10.0,
                 long_window_ms: float = 20.0, num_filters: int = 256, channels: int = 256,
                 hidden_channels: int = 512, kernel_size: int = 3, num_blocks: int = 8, num_stacks: int = 4,
                 embed_dim: int = 256, speaker_hidden: int = 512, speaker_blocks: int = 3,
                 num_speakers: int = 101) -> None:
        super().__init__()
        check_positive("spex_plus", num_filters=num_filters, channels=channels, hidden_channels=hidden_channels,
                       num_blocks=num_blocks, num_stacks=num_stacks, embed_dim=embed_dim,
                       speaker_hidden=speaker_hidden, speaker_blocks=speaker_blocks, num_speakers=num_speakers)
        windows = scale_windows("spex_plus", sample_rate, (short_window_ms, middle_window_ms, long_window_ms))
        self.encoder = MultiScaleEncoder(num_filters, windows)
        self.mixture_front = nn.Sequential(ChannelLayerNorm(NUM_SCALES * num_filters),
                                           nn.Conv1d(NUM_SCALES * num_filters, channels, 1))
        self.stacks = nn.ModuleList(
            TCNStack(channels, hidden_channels, num_blocks, kernel_size, condition_dim=embed_dim)
            for _ in range(num_stacks)
        )
        self.masks = nn.ModuleList(nn.Conv1d(channels, num_filters, 1) for _ in range(NUM_SCALES))
        self.decoder = MultiScaleDecoder(num_filters, windows)
        self.speaker_front = nn.Sequential(ChannelLayerNorm(NUM_SCALES * num_filters),
                                           nn.Conv1d(NUM_SCALES * num_filters, channels, 1))
        self.speaker_encoder = SpeakerEncoder(channels, speaker_hidden, embed_dim, speaker_blocks)
        self.classifier = nn.Linear(embed_dim, num_speakers)

    def speaker_embedding(self, enroll: torch.Tensor, enroll_lengths: torch.Tensor) -> torch.Tensor:
        """Embedding (B, embed_dim) of zero-padded enrollments (B, Te), averaged over valid frames only."""
        scales = self.encoder(enroll, min_frames=self.speaker_encoder.min_frames)
        features = self.speaker_front(torch.cat(scales, dim=1))
        return self.speaker_encoder(features, self.encoder.num_frames(enroll_lengths))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mixture = batch["mixture"]
        embedding = self.speaker_embedding(batch["enroll"], enroll_lengths_of(batch))
        scales = self.encoder(mixture)
        y = self.mixture_front(torch.cat(scales, dim=1))
        for stack in self.stacks:
            y = stack(y, embedding)
        masked = [w * torch.relu(mask(y)) for w, mask in zip(scales, self.masks, strict=True)]
        short, middle, long = self.decoder(masked, mixture.shape[-1])
        return {"estimate": short, "estimate_middle": middle, "estimate_long": long,
                "speaker_logits": self.classifier(embedding)}
