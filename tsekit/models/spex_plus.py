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

import torch
from torch import nn

from tsekit.models.layers.checks import check_positive, enroll_lengths_of
from tsekit.models.layers.encoders import NUM_SCALES, MultiScaleDecoder, MultiScaleEncoder, scale_windows
from tsekit.models.layers.speaker import SpeakerEncoder
from tsekit.models.layers.tcn import ChannelLayerNorm, TCNStack
from tsekit.models.registry import TSEModel, register


@register("spex_plus")
class SpExPlus(TSEModel):
    """SpEx+ with the published sizes as defaults; outputs short/middle/long estimates and speaker logits."""

    paper = "SpEx+: A Complete Time Domain Speaker Extraction Network (Ge et al., Interspeech 2020)"

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
