"""TF-GridNet TSE from noisy positive / negative enrollments (Xu et al., NeurIPS 2025, "Target Speaker Extraction
through Comparing Noisy Positive and Negative Audio Enrollments").

The target is identified by contrasting a POSITIVE enrollment (the target talks over other speakers) with a
NEGATIVE one (the same kind of scene with the target silent):

    enroll_pos --enroll_encoder--> P (B, D, Tp, F)   (siamese: ONE TF-GridNet encoder, conv2d + N_enc blocks)
    enroll_neg --enroll_encoder--> N (B, D, Tn, F)
    head: [P + s_pos ; N + s_neg] along time (s = learned segment embeddings (D, F)), full-band self-attention
          layers, keep the positive frames -> cue (B, D, Tp, F)
    extractor: TF-GridNet on the mixture, conditioned on the cue

Systems
  tfgridnet_posneg (the paper's model): after each of the first ``fusion_blocks`` extractor blocks (the published
    model: blocks 1 and 2 of 3) a full-band cross-attention adds the cue, mixture frames as queries. Keys/values
    are the cue averaged over windows of ``cue_pool`` frames (published: 40 frames = 160 ms), one token per
    window (B, D, Tp / cue_pool, F): shorter than the raw cue, longer-term than single frames. The last window
    may be partial; it averages its valid frames, and windows with none are masked.
  tfgridnet_posneg_early (the authors' later early-fusion variant, after USEF-TFGridNet): before any block, a
    full-band cross-attention from the mixture frames to the cue frames (all valid frames, no pooling) gives an
    aligned enrollment map, concatenated with the mixture features along channels; the blocks then run at width
    2D directly on the concatenation, as in USEF-TFGridNet (no projection back to D). Its encoder and head are
    the paper model's, so both systems distil alike (the authors' release of this variant also reworks the head
    and uses a 1-block encoder; set enroll_blocks=1 for the latter).

Causality (``causal``): uni-directional inter-frame LSTMs, causal attention (``attention_context`` past frames,
published 50; 0 = all), time-causal front/back convs, no utterance-level norms; the published tfgridnet_posneg is
causal (default True), USEF-style early fusion is offline (default False). The enrollment side stays non-causal
in both: enrollments are recorded before extraction starts.

Level normalisation of the mixture (``level_norm``): the extractor divides the mixture by a level and multiplies
the estimate back, so it works at one scale whatever the input's, and an SNR-trained output comes out at the
input's level. ``utterance`` (the offline default, ESPnet's TF-GridNet): the mixture's standard deviation.
``running`` (the causal default): at each sample the RMS of the samples so far (`running_level`), so no sample
looks ahead; the authors normalise each chunk by its standard deviation instead, which looks ahead by a chunk.
``none``: the raw scale (what the causal extractor did before; docs/RESULTS.md).

Training in two stages (the paper's):
  1. distillation: only ``enroll_encoder`` and ``head`` learn; the MSE between the ``cue`` and the feature map of
     the CLEAN positive enrollment (the target's own source in the positive clip, same length) under a frozen
     teacher, `tfgridnet_speaker`, trained beforehand as a speaker classifier (config: ``distill.teacher``,
     ``distill.freeze: [extractor]``, loss ``distill`` on output ``cue`` against ``teacher_features``, which the
     trainer adds to the batch from the teacher's ``distillation_targets``); the batch then also needs
     ``distill_needs`` = {"enroll_clean"}.
  2. extraction: ``enroll_encoder`` and ``head`` frozen (stage2.freeze by those prefixes), the ``extractor``
     learns from SNR (paper model) or SI-SDR (early variant) on ``estimate`` (``stage2.loss``).
The forward pass computes both ``cue`` and ``estimate`` (only the ``cue`` when the trainer's ``wanted_outputs`` leaves
out the estimate, as in stage 1); the configured loss picks what trains.

Published sizes (the defaults; the authors' released monaural configuration): 16 kHz, n_fft 128 (8 ms), hop 64,
D = 64, H = 64, 4 heads, E = 8, extractor of 3 blocks with unfold kernel/stride 1 (per-bin LSTMs), encoder of 3
blocks with ESPnet's kernel 4 / stride 1, a head of 2 attention layers, the last one without residual (its output
is the cue, layer-normalised per frame).
Batch keys: mixture, enroll_pos, enroll_pos_lengths, enroll_neg, enroll_neg_lengths [, enroll_clean, lengths];
signals are (B, T), or (B, C, T) with ``channels`` = C > 1; the estimate is one signal (B, T). Zero-padded
enrollments give exactly the cue of the unpadded ones (valid frames; see layers/tfgridnet.py); the mixture's
padding only enters its level (``lengths``) and is otherwise not masked, as in the other systems (the losses mask
padded samples).
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
from torch import nn

from tsekit import TsekitError
from tsekit.models.layers.checks import check_choice, check_positive
from tsekit.models.layers.tfgridnet import (
    STFT,
    ConvFrontEnd,
    DeconvBackEnd,
    FullBandAttention,
    GridNetBlock,
    TFGridNetEncoder,
    frame_mask,
    key_padding_mask,
    rms_level,
    running_level,
)
from tsekit.models.registry import TSEModel, register


def as_channels(wave: torch.Tensor, channels: int, key: str) -> torch.Tensor:
    """A batch signal as (B, C, T): (B, T) is accepted for mono."""
    if wave.dim() == 2 and channels == 1:
        return wave.unsqueeze(1)
    if wave.dim() != 3 or wave.shape[1] != channels:
        expected = "(batch, samples)" if channels == 1 else f"(batch, {channels}, samples)"
        raise TsekitError(f"{key}: expected {expected} for a model with channels={channels}, "
                          f"got shape {tuple(wave.shape)}")
    return wave


def lengths_of(batch: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """``batch[key + "_lengths"]``, or the whole padded length when the batch does not say."""
    wave = batch[key]
    lengths = batch.get(f"{key}_lengths")
    if lengths is None:
        return torch.full((wave.shape[0],), wave.shape[-1], dtype=torch.long, device=wave.device)
    return lengths.to(wave.device)


def check_spectral(name: str, n_fft: int, hop: int, attention_context: int = 0) -> None:
    """One-line errors for STFT sizes torch cannot invert and a negative attention context."""
    if n_fft < 2 or n_fft % 2 or not 1 <= hop <= n_fft // 2:
        raise TsekitError(f"model {name}: need an even n_fft >= 2 and 1 <= hop <= n_fft / 2, got n_fft={n_fft}, "
                          f"hop={hop}")
    if attention_context < 0:
        raise TsekitError(f"model {name}: attention_context must be >= 0 (0 = all past frames), "
                          f"got {attention_context}")


LevelNorm = Literal["utterance", "running", "none"]


def resolve_level_norm(name: str, level_norm: LevelNorm | None, causal: bool) -> str:
    """The extractor's level normalisation: the default for the causality (null), or the one given, checked."""
    if level_norm is None:
        return "running" if causal else "utterance"
    check_choice(name, "level_norm", level_norm, typing.get_args(LevelNorm))
    if causal and level_norm == "utterance":
        raise TsekitError(f"model {name}: level_norm utterance needs the whole mixture; a causal model takes "
                          "running or none")
    return level_norm


def pool_cue(cue: torch.Tensor, frames: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average (B, D, T, F) over windows of ``window`` valid frames -> tokens (B, D, S, F) and valid (B, S)."""
    batch, channels, total, freqs = cue.shape
    tokens = -(-total // window)
    pad = tokens * window - total
    weight = nn.functional.pad(frame_mask(frames, total).to(cue.dtype), (0, pad))
    sums = (nn.functional.pad(cue, (0, 0, 0, pad)) * weight[:, None, :, None]).unflatten(2, (tokens, window)).sum(3)
    counts = weight.unflatten(1, (tokens, window)).sum(2)
    return sums / counts.clamp_min(1)[:, None, :, None], counts > 0


class PosNegHead(nn.Module):
    """Encoded positive (B, D, Tp, F) and negative (B, D, Tn, F) maps -> cue (B, D, Tp, F).

    Attention has no notion of order, so the learned segment embeddings are what tells positive frames from
    negative ones; padded frames of either enrollment are masked as keys.
    """

    def __init__(self, channels: int, freqs: int, heads: int, attention_dim: int, layers: int) -> None:
        super().__init__()
        self.segment = nn.Parameter(torch.randn(2, channels, 1, freqs))  # N(0, 1) like nn.Embedding
        self.layers = nn.ModuleList(FullBandAttention(channels, freqs, heads, attention_dim) for _ in range(layers))

    def forward(self, pos: torch.Tensor, pos_frames: torch.Tensor, neg: torch.Tensor,
                neg_frames: torch.Tensor) -> torch.Tensor:
        x = torch.cat([pos + self.segment[0], neg + self.segment[1]], dim=2)
        valid = torch.cat([frame_mask(pos_frames, pos.shape[2]), frame_mask(neg_frames, neg.shape[2])], dim=1)
        mask = key_padding_mask(valid)
        for layer in self.layers[:-1]:
            x = x + layer(x, mask=mask)
        return self.layers[-1](x, mask=mask)[:, :, :pos.shape[2]]


class SpectralExtractor(nn.Module):
    """Shared ends of the extractors: level normalisation, STFT and conv front end; deconv back end and iSTFT."""

    def __init__(self, channels: int, n_fft: int, hop: int, front_dim: int, back_dim: int, causal: bool,
                 level_norm: str) -> None:
        super().__init__()
        self.level_norm = level_norm
        self.stft = STFT(n_fft, hop)
        self.front = ConvFrontEnd(2 * channels, front_dim, causal)
        self.back = DeconvBackEnd(back_dim, 2, causal)

    def analyse(self, mixture: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, T) -> features (B, front_dim, frames, F) and the level (B, 1, 1 or T) to restore."""
        if self.level_norm == "utterance":
            level = rms_level(mixture, lengths)
        elif self.level_norm == "running":
            level = running_level(mixture)
        else:
            level = mixture.new_ones(mixture.shape[0], 1, 1)
        return self.front(self.stft(mixture / level)), level

    def synthesise(self, x: torch.Tensor, level: torch.Tensor, length: int) -> torch.Tensor:
        return self.stft.inverse(self.back(x), length) * level[:, 0]


class LateFusionExtractor(SpectralExtractor):
    """TF-GridNet with cross-attention to the pooled cue after each of its first ``fusion_blocks`` blocks."""

    def __init__(self, channels: int, n_fft: int, hop: int, embed_dim: int, hidden: int, heads: int,
                 attention_dim: int, num_blocks: int, kernel_size: int, stride: int, causal: bool,
                 attention_context: int, level_norm: str, fusion_blocks: int, cue_pool: int) -> None:
        super().__init__(channels, n_fft, hop, embed_dim, embed_dim, causal, level_norm)
        freqs = self.stft.freqs
        self.cue_pool = cue_pool
        self.blocks = nn.ModuleList(
            GridNetBlock(embed_dim, freqs, hidden, heads, attention_dim, kernel_size, stride, causal,
                         attention_context)
            for _ in range(num_blocks)
        )
        self.fusions = nn.ModuleList(
            FullBandAttention(embed_dim, freqs, heads, attention_dim) for _ in range(fusion_blocks)
        )

    def forward(self, mixture: torch.Tensor, cue: torch.Tensor, cue_frames: torch.Tensor,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        x, level = self.analyse(mixture, lengths)
        tokens, valid = pool_cue(cue, cue_frames, self.cue_pool)
        mask = key_padding_mask(valid)
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index < len(self.fusions):
                x = x + self.fusions[index](x, tokens, mask)
        return self.synthesise(x, level, mixture.shape[-1])


class EarlyFusionExtractor(SpectralExtractor):
    """Cross-attention from the mixture frames to the cue frames, concatenated to the mixture features, blocks."""

    def __init__(self, channels: int, n_fft: int, hop: int, embed_dim: int, hidden: int, heads: int,
                 attention_dim: int, num_blocks: int, kernel_size: int, stride: int, causal: bool,
                 attention_context: int, level_norm: str) -> None:
        super().__init__(channels, n_fft, hop, embed_dim, 2 * embed_dim, causal, level_norm)
        freqs = self.stft.freqs
        self.fusion = FullBandAttention(embed_dim, freqs, heads, attention_dim)
        self.blocks = nn.ModuleList(
            GridNetBlock(2 * embed_dim, freqs, hidden, heads, attention_dim, kernel_size, stride, causal,
                         attention_context)
            for _ in range(num_blocks)
        )

    def forward(self, mixture: torch.Tensor, cue: torch.Tensor, cue_frames: torch.Tensor,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        x, level = self.analyse(mixture, lengths)
        # no residual: the mixture features travel beside the attended cue in the concatenation
        aligned = self.fusion(x, cue, key_padding_mask(frame_mask(cue_frames, cue.shape[2])))
        x = torch.cat([x, aligned], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.synthesise(x, level, mixture.shape[-1])


class PosNegSystem(TSEModel):
    """What both pos/neg systems share: enrollment encoder + head -> cue, then their ``extractor``."""

    paper = "TF-GridNet extraction from noisy positive/negative enrollments (Xu et al., NeurIPS 2025)"

    needs = frozenset({"target", "enroll_pos", "enroll_neg"})
    # what stage 1 (distillation) needs on top of `needs`
    distill_needs = frozenset({"enroll_clean"})
    channels: int
    enroll_encoder: TFGridNetEncoder
    head: PosNegHead
    extractor: LateFusionExtractor | EarlyFusionExtractor

    def _build_cue_path(self, channels: int, n_fft: int, hop: int, embed_dim: int, lstm_hidden: int, heads: int,
                        attention_dim: int, enroll_blocks: int, enroll_kernel_size: int,
                        enroll_kernel_stride: int, head_layers: int) -> None:
        self.channels = channels
        self.enroll_encoder = TFGridNetEncoder(channels, n_fft, hop, embed_dim, lstm_hidden, enroll_blocks, heads,
                                               attention_dim, enroll_kernel_size, enroll_kernel_stride)
        self.head = PosNegHead(embed_dim, n_fft // 2 + 1, heads, attention_dim, head_layers)

    def posneg_cue(self, enroll_pos: torch.Tensor, pos_lengths: torch.Tensor, enroll_neg: torch.Tensor,
                   neg_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cue (B, D, Tp, F) of zero-padded enrollments (B, [C,] T) and its valid frame counts (B,)."""
        pos, pos_frames = self.enroll_encoder(as_channels(enroll_pos, self.channels, "enroll_pos"), pos_lengths)
        neg, neg_frames = self.enroll_encoder(as_channels(enroll_neg, self.channels, "enroll_neg"), neg_lengths)
        return self.head(pos, pos_frames, neg, neg_frames), pos_frames

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cue, cue_frames = self.posneg_cue(batch["enroll_pos"], lengths_of(batch, "enroll_pos"),
                                          batch["enroll_neg"], lengths_of(batch, "enroll_neg"))
        if self.wanted_outputs is not None and "estimate" not in self.wanted_outputs:
            return {"cue": cue}  # distillation: the extractor's forward pass would be wasted work
        mixture = as_channels(batch["mixture"], self.channels, "mixture")
        estimate = self.extractor(mixture, cue, cue_frames, batch.get("lengths"))
        return {"estimate": estimate, "cue": cue}

    def extract(self, mixture: torch.Tensor, enroll: torch.Tensor) -> torch.Tensor:
        raise TsekitError(f"model {self.registry_name} needs a positive and a negative enrollment: call "
                          "extract_posneg(mixture, enroll_pos, enroll_neg)")

    @torch.no_grad()
    def extract_posneg(self, mixture: torch.Tensor, enroll_pos: torch.Tensor,
                       enroll_neg: torch.Tensor) -> torch.Tensor:
        """Target speech (B, T) from mixtures and unpadded enrollments, each (B, T) or (B, C, T).

        The inference counterpart of `TSEModel.extract`; call ``eval()`` first as for `extract`.
        """
        def full(wave: torch.Tensor) -> torch.Tensor:
            return torch.full((wave.shape[0],), wave.shape[-1], dtype=torch.long, device=wave.device)

        return self.forward({"mixture": mixture, "enroll_pos": enroll_pos, "enroll_pos_lengths": full(enroll_pos),
                             "enroll_neg": enroll_neg, "enroll_neg_lengths": full(enroll_neg)})["estimate"]

    def extract_enrolled(self, mixture: torch.Tensor, enrollments: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.extract_posneg(mixture, enrollments["enroll_pos"], enrollments["enroll_neg"])


@register("tfgridnet_posneg")
class TFGridNetPosNeg(PosNegSystem):
    """The paper's system: cue fused by cross-attention to pooled cue tokens after the first blocks."""

    def __init__(self, *, channels: int = 1, n_fft: int = 128, hop: int = 64, embed_dim: int = 64,
                 lstm_hidden: int = 64, heads: int = 4, attention_dim: int = 8, num_blocks: int = 3,
                 kernel_size: int = 1, kernel_stride: int = 1, causal: bool = True, attention_context: int = 50,
                 fusion_blocks: int = 2, cue_pool: int = 40, enroll_blocks: int = 3, enroll_kernel_size: int = 4,
                 enroll_kernel_stride: int = 1, head_layers: int = 2, level_norm: LevelNorm | None = None) -> None:
        super().__init__()
        name = "tfgridnet_posneg"
        check_positive(name, channels=channels, embed_dim=embed_dim, lstm_hidden=lstm_hidden, heads=heads,
                       attention_dim=attention_dim, num_blocks=num_blocks, kernel_size=kernel_size,
                       kernel_stride=kernel_stride, fusion_blocks=fusion_blocks, cue_pool=cue_pool,
                       enroll_blocks=enroll_blocks, enroll_kernel_size=enroll_kernel_size,
                       enroll_kernel_stride=enroll_kernel_stride, head_layers=head_layers)
        check_spectral(name, n_fft, hop, attention_context)
        if fusion_blocks > num_blocks:
            raise TsekitError(f"model {name}: fusion_blocks ({fusion_blocks}) exceeds num_blocks ({num_blocks})")
        self._build_cue_path(channels, n_fft, hop, embed_dim, lstm_hidden, heads, attention_dim, enroll_blocks,
                             enroll_kernel_size, enroll_kernel_stride, head_layers)
        self.extractor = LateFusionExtractor(channels, n_fft, hop, embed_dim, lstm_hidden, heads, attention_dim,
                                             num_blocks, kernel_size, kernel_stride, causal, attention_context,
                                             resolve_level_norm(name, level_norm, causal), fusion_blocks, cue_pool)


@register("tfgridnet_posneg_early")
class TFGridNetPosNegEarly(PosNegSystem):
    """Early-fusion variant (USEF-TFGridNet style): cue attended once, concatenated before all blocks."""

    def __init__(self, *, channels: int = 1, n_fft: int = 128, hop: int = 64, embed_dim: int = 64,
                 lstm_hidden: int = 64, heads: int = 4, attention_dim: int = 8, num_blocks: int = 3,
                 kernel_size: int = 1, kernel_stride: int = 1, causal: bool = False, attention_context: int = 50,
                 enroll_blocks: int = 3, enroll_kernel_size: int = 4, enroll_kernel_stride: int = 1,
                 head_layers: int = 2, level_norm: LevelNorm | None = None) -> None:
        super().__init__()
        name = "tfgridnet_posneg_early"
        check_positive(name, channels=channels, embed_dim=embed_dim, lstm_hidden=lstm_hidden, heads=heads,
                       attention_dim=attention_dim, num_blocks=num_blocks, kernel_size=kernel_size,
                       kernel_stride=kernel_stride, enroll_blocks=enroll_blocks,
                       enroll_kernel_size=enroll_kernel_size, enroll_kernel_stride=enroll_kernel_stride,
                       head_layers=head_layers)
        check_spectral(name, n_fft, hop, attention_context)
        self._build_cue_path(channels, n_fft, hop, embed_dim, lstm_hidden, heads, attention_dim, enroll_blocks,
                             enroll_kernel_size, enroll_kernel_stride, head_layers)
        self.extractor = EarlyFusionExtractor(channels, n_fft, hop, embed_dim, lstm_hidden, heads, attention_dim,
                                              num_blocks, kernel_size, kernel_stride, causal, attention_context,
                                              resolve_level_norm(name, level_norm, causal))


@register("tfgridnet_speaker")
class TFGridNetSpeaker(TSEModel):
    """Distillation teacher: a TF-GridNet encoder of clean enrollments, trained as a speaker classifier.

    ``features`` (B, D, frames, F) has the cue's shape when n_fft, hop and embed_dim match the student's. The
    feature map averaged over valid frames (B, D * F; frequency kept, it carries the voice's spectral shape) goes
    through a linear bottleneck to the ``embedding`` (B, speaker_dim) and a linear classifier to
    ``speaker_logits``: train it with the speaker_ce loss. Default ``num_speakers`` = 921, the speakers of
    LibriSpeech train-clean-360 the paper trains on (the trainer sets the data's count).
    """

    needs = frozenset({"enroll", "speaker"})

    def __init__(self, *, channels: int = 1, n_fft: int = 128, hop: int = 64, embed_dim: int = 64,
                 lstm_hidden: int = 64, heads: int = 4, attention_dim: int = 8, num_blocks: int = 3,
                 kernel_size: int = 4, kernel_stride: int = 1, speaker_dim: int = 256,
                 num_speakers: int = 921) -> None:
        super().__init__()
        name = "tfgridnet_speaker"
        check_positive(name, channels=channels, embed_dim=embed_dim, lstm_hidden=lstm_hidden, heads=heads,
                       attention_dim=attention_dim, num_blocks=num_blocks, kernel_size=kernel_size,
                       kernel_stride=kernel_stride, speaker_dim=speaker_dim, num_speakers=num_speakers)
        check_spectral(name, n_fft, hop)
        self.channels = channels
        self.encoder = TFGridNetEncoder(channels, n_fft, hop, embed_dim, lstm_hidden, num_blocks, heads,
                                        attention_dim, kernel_size, kernel_stride)
        self.embedding = nn.Linear(embed_dim * (n_fft // 2 + 1), speaker_dim)
        self.classifier = nn.Linear(speaker_dim, num_speakers)

    def features(self, enroll: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature maps (B, D, frames, F) of zero-padded enrollments (B, [C,] T) and valid frame counts (B,)."""
        return self.encoder(as_channels(enroll, self.channels, "enroll"), lengths)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features, frames = self.features(batch["enroll"], lengths_of(batch, "enroll"))
        weight = frame_mask(frames, features.shape[2])[:, None, :, None].to(features.dtype)
        pooled = (features * weight).sum(2) / frames[:, None, None].to(features.dtype)
        embedding = self.embedding(pooled.flatten(1))
        return {"features": features, "embedding": embedding, "speaker_logits": self.classifier(embedding)}

    @torch.no_grad()
    def distillation_targets(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What a pos/neg student's ``cue`` is distilled towards: this map of the clean positive enrollment.

        The clean enrollment is the target's own source inside the positive clip, so the maps are
        frame-aligned; both use ``enroll_pos_lengths``. The ``distill`` loss compares ``teacher_features``
        (B, D, frames, F) with the cue over the ``teacher_features_frames`` valid frames.
        """
        features, frames = self.features(batch["enroll_clean"], lengths_of(batch, "enroll_pos"))
        return {"teacher_features": features, "teacher_features_frames": frames}

    def extract(self, mixture: torch.Tensor, enroll: torch.Tensor) -> torch.Tensor:
        raise TsekitError("model tfgridnet_speaker is a speaker encoder (the distillation teacher), not an extractor")
