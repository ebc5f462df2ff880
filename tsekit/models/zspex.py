"""Z-SpEx (published as MC-SpEx, Chen et al., Interspeech 2023): SpEx+ with multi-scale interfusion and ConSM.

Changes to SpEx+ (tsekit.models.spex_plus):
  (a) ScaleFuser (layers/scaleinter.py) replaces the cLN + 1x1 fronts. ONE instance is applied to the
      mixture's and to the enrollment's multi-scale encodings, so extractor and speaker encoder work in
      the same feature space.
  (b) ConSM (layers/tcn.py `SpeakerModulation`) at the start of each TCN stack: the speaker embedding
      scales and shifts the features, with scale and shift computed from [features; embedding]. It
      replaces SpEx+'s concatenation, so all blocks of a stack are plain TCN blocks.
  (c) ScaleInterMaskGenerator produces the three scale masks jointly, each scale from the extractor output
      beside that scale's own encoder stream (``mask_inputs: scales``; ``extractor`` = the extractor output
      alone for all three, the earlier design; measured alike in SI-SDRi, docs/RESULTS.md).
Training is the same multi-task objective: SI-SDR on the three scales + speaker cross-entropy.

Defaults keep SpEx+'s published sizes (8 kHz, 2.5/10/20 ms windows) and the MC-SpEx training set,
Libri2Mix train-100 (251 speakers); `scaleinter_hidden` and `modulation_hidden` size the new blocks.
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
from torch import nn

from tsekit.models.layers.checks import check_choice, check_positive, enroll_lengths_of
from tsekit.models.layers.encoders import NUM_SCALES, MultiScaleDecoder, MultiScaleEncoder, scale_windows
from tsekit.models.layers.scaleinter import ScaleFuser, ScaleInterMaskGenerator
from tsekit.models.layers.speaker import SpeakerEncoder
from tsekit.models.layers.tcn import SpeakerModulation, TCNStack
from tsekit.models.registry import TSEModel, register

MaskInputs = Literal["scales", "extractor"]  # what each scale's mask is computed from (layers/scaleinter.py)


@register("zspex")
class ZSpEx(TSEModel):
    """Z-SpEx / MC-SpEx; outputs short/middle/long estimates and speaker logits like SpEx+."""

    paper = ("MC-SpEx: Towards Effective Speaker Extraction with Multi-Scale Interfusion and Conditional Speaker "
             "Modulation (Chen et al., Interspeech 2023), https://arxiv.org/abs/2306.16250")

    needs = frozenset({"target", "enroll", "speaker"})

    def __init__(self, *, sample_rate: int = 8000, short_window_ms: float = 2.5, middle_window_ms: float = 10.0,
                 long_window_ms: float = 20.0, num_filters: int = 256, channels: int = 256,
                 hidden_channels: int = 512, kernel_size: int = 3, num_blocks: int = 8, num_stacks: int = 4,
                 embed_dim: int = 256, speaker_hidden: int = 512, speaker_blocks: int = 3,
                 scaleinter_hidden: int = 256, modulation_hidden: int = 256, num_speakers: int = 251,
                 mask_inputs: MaskInputs = "scales") -> None:
        super().__init__()
        check_choice("zspex", "mask_inputs", mask_inputs, typing.get_args(MaskInputs))
        check_positive("zspex", num_filters=num_filters, channels=channels, hidden_channels=hidden_channels,
                       num_blocks=num_blocks, num_stacks=num_stacks, embed_dim=embed_dim,
                       speaker_hidden=speaker_hidden, speaker_blocks=speaker_blocks,
                       scaleinter_hidden=scaleinter_hidden, modulation_hidden=modulation_hidden,
                       num_speakers=num_speakers)
        windows = scale_windows("zspex", sample_rate, (short_window_ms, middle_window_ms, long_window_ms))
        self.encoder = MultiScaleEncoder(num_filters, windows)
        self.fuser = ScaleFuser(num_filters, channels, scaleinter_hidden, NUM_SCALES)
        self.modulations = nn.ModuleList(
            SpeakerModulation(channels, embed_dim, modulation_hidden) for _ in range(num_stacks)
        )
        self.stacks = nn.ModuleList(
            TCNStack(channels, hidden_channels, num_blocks, kernel_size) for _ in range(num_stacks)
        )
        self.mask_generator = ScaleInterMaskGenerator(channels, num_filters, scaleinter_hidden, NUM_SCALES,
                                                      scale_inputs=mask_inputs == "scales")
        self.decoder = MultiScaleDecoder(num_filters, windows)
        self.speaker_encoder = SpeakerEncoder(channels, speaker_hidden, embed_dim, speaker_blocks)
        self.classifier = nn.Linear(embed_dim, num_speakers)

    def speaker_embedding(self, enroll: torch.Tensor, enroll_lengths: torch.Tensor) -> torch.Tensor:
        """Embedding (B, embed_dim) of zero-padded enrollments, through the shared fuser."""
        scales = self.encoder(enroll, min_frames=self.speaker_encoder.min_frames)
        return self.speaker_encoder(self.fuser(scales), self.encoder.num_frames(enroll_lengths))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mixture = batch["mixture"]
        embedding = self.speaker_embedding(batch["enroll"], enroll_lengths_of(batch))
        scales = self.encoder(mixture)
        y = self.fuser(scales)
        for modulation, stack in zip(self.modulations, self.stacks, strict=True):
            y = stack(modulation(y, embedding))
        masked = [w * m for w, m in zip(scales, self.mask_generator(y, scales), strict=True)]
        short, middle, long = self.decoder(masked, mixture.shape[-1])
        return {"estimate": short, "estimate_middle": middle, "estimate_long": long,
                "speaker_logits": self.classifier(embedding)}
