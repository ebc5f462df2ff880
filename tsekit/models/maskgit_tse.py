"""Masked generative TSE over codec tokens (seed system B): ``maskgit_tse``.

The target speech is a grid of codec tokens (codebooks x frames). A bidirectional transformer learns to
fill in masked target tokens from two cues: the mixture, frame-aligned with the target, and the enrollment's
tokens. At inference the grid starts all masked and is filled in over K iterations, keeping the most
confident tokens each time (MaskGIT, Chang et al. 2022); the codec decodes the tokens to a waveform.

The published system's settings are not known (SEEDS.md). What is taken here, and why:

- **Inputs per frame**: one embedding per codebook (plus a mask entry), summed into one vector per frame,
  as SoundStorm and MaskGCT do; the mixture's tokens are embedded by tables of their own and added frame by
  frame (they are aligned with the target: same crop, same codec). ``features: mel`` adds a projected
  log-mel of the mixture (hop ``mel_hop``, interpolated to the token frames; the follow-up work's continuous
  features): a codec trained
  on clean speech represents a two-talker mixture poorly, the mel keeps what its tokens lose.
- **Enrollment**: its tokens are embedded with the target's tables (both are clean speech of the same codec)
  and either prefixed to the target frames, which attend to them (``enroll_conditioning: prefix``, the
  default; VALL-E / MaskGCT prompting), or attended to through cross-attention in every block (``cross``).
  Segment embeddings tell prefix from target.
- **Positions** (``positions``): ``absolute`` adds sinusoidal positions starting at 0 to the target frames
  and to the enrollment's; ``relative`` adds none and biases self-attention instead, by a learned value per
  head for each bucket of distance between two frames of one segment (T5's buckets, per direction: one per
  distance up to 7 frames, 7 log-spaced ones up to 49, one for 50 and beyond) and one value for any pair of frames of
  different segments (with ``cross``, cross-attention is not biased: the enrollment's frames are a set).
  Training sees 2-3 s crops and 3 s enrollments, inference 4 x longer chunks and whole
  enrollments: with absolute positions most of their frames sit at indices never trained on, with relative
  ones at distances already trained on (docs/RESULTS.md measures both). The recipes use ``relative``;
  ``absolute``, the default, is kept for models trained before it.
- **Blocks**: pre-norm transformer blocks (self-attention, feed-forward with GELU), or, with
  ``block: conformer``, a convolution module (pointwise + GLU, depthwise, GroupNorm, SiLU, pointwise) between
  the two (Conformer's order without the macaron split).
- **Training**: per example u ~ U(0, 1), mask ratio cos(pi u / 2), at least one frame masked; cross-entropy
  on masked positions only, averaged per example (the ``objective`` loss reads it). ``prediction:
  parallel`` (default) masks whole frames and predicts every codebook of them at once; ``coarse_to_fine``
  (SoundStorm) draws a level q per example, gives the levels below it, masks level q by the schedule and
  everything above it, and scores level q. The enrollment is replaced by a learned null vector with
  probability ``enroll_drop`` (0.1), so that classifier-free guidance can be used.
- **Inference** (``extract``): K iterations (``iterations``, 16) from all masked. Each samples every masked
  frame with temperature ``temperature * (1 - (k+1)/K)`` (annealed to 0: the last iteration is greedy);
  a frame's confidence is the sum of its codebooks' log-probabilities plus Gumbel noise scaled by that
  temperature (MaskGIT's choice); the least confident frames are re-masked so that ``floor(F cos(pi/2
  (k+1)/K))`` stay masked (at least one fewer each iteration), none after the last. Coarse-to-fine fills
  level 0 in K iterations and every other level in one greedy pass (SoundStorm), K + codebooks - 1 network
  calls. ``guidance_scale`` w > 0 uses cond + w (cond - uncond), both in one batched call. Random numbers
  come from a generator seeded with ``seed``, so a given seed gives the same tokens.
- **Codec**: the tokens' codec (``codec`` and ``codec_params``; the trainer fills them from the config's
  ``codec`` section, and ``codec_sha256``, the hash of its weights, which the codec loaded must match:
  ``tsekit.codec.registry``) is loaded on first use at inference and kept out of the checkpoint. Waveforms are
  resampled from ``sample_rate`` to the codec's rate and back, and the output is as long as the mixture.

Published sizes of comparable systems are about 12 layers of width 512-1024 (egs/libri2mix); the mini
recipe's is small.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812  (torch's usual alias)

from tsekit import TsekitError
from tsekit.models.layers.transformer import Block
from tsekit.models.registry import TSEModel, register


def cosine_mask_ratio(u: torch.Tensor) -> torch.Tensor:
    """MaskGIT's cosine schedule: the fraction of positions masked at schedule position ``u`` in [0, 1]."""
    return torch.cos(math.pi / 2 * u)


def draw_frame_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, F) bool of valid frames -> (B, F) bool of masked frames: per example a ratio from the cosine
    schedule at u ~ U(0, 1), ``ceil(ratio * frames)`` frames (at least one) chosen at random."""
    counts = valid.sum(1)
    ratio = cosine_mask_ratio(torch.rand(valid.shape[0], device=valid.device))
    masked = torch.clamp(torch.ceil(ratio * counts), min=1).long()
    scores = torch.rand(valid.shape, device=valid.device).masked_fill(~valid, 2.0)  # padding sorts last
    ranks = scores.argsort(1).argsort(1)
    return (ranks < masked[:, None]) & valid


def masked_token_loss(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (B,) of ``logits`` (B, K, F, V) against ``targets`` (B, K, F), averaged per example over
    the positions where ``masked`` (B, K, F) is true; the other positions do not count."""
    ce = F.cross_entropy(logits.flatten(0, 2), targets.clamp(min=0).flatten(), reduction="none").view(targets.shape)
    weights = masked.float()
    return (ce * weights).sum((1, 2)) / weights.sum((1, 2)).clamp(min=1)


def sinusoidal_positions(length: int, width: int, device: torch.device) -> torch.Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


RELATIVE_BUCKETS = 32  # T5's
# with 32 buckets, distances of 50 frames and more share one: well below the frames of a training crop (the
# mini recipe's 2 s are 125), so that every bucket, the farthest included, is trained, and a longer input
# brings no new bias
RELATIVE_MAX_DISTANCE = 64


def distance_buckets(distance: torch.Tensor, buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bidirectional buckets of key - query frame distances: half per direction; in each, one per distance
    below a quarter of ``buckets``, then log-spaced ones up to ``max_distance``; farther ones share the last."""
    half = buckets // 2
    exact = half // 2
    size = distance.abs()
    spaced = exact + (torch.log(size.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                      * (half - exact)).long()
    bucket = torch.where(size < exact, size, spaced.clamp(max=half - 1))
    return bucket + (distance > 0).long() * half


class RelativeBias(torch.nn.Module):
    """Learned self-attention biases (heads, L, L): per bucket of distance between frames of one segment, and
    one value for any pair of frames of different segments (enrollment and target), whatever their distance."""

    def __init__(self, heads: int):
        super().__init__()
        self.table = torch.nn.Embedding(RELATIVE_BUCKETS + 1, heads)  # the last entry: another segment

    def forward(self, positions: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        """positions (L,) within each frame's segment, segments (L,) -> (heads, L, L)."""
        buckets = distance_buckets(positions[None] - positions[:, None], RELATIVE_BUCKETS, RELATIVE_MAX_DISTANCE)
        index = torch.where(segments[None] == segments[:, None], buckets, RELATIVE_BUCKETS)
        return self.table(index).permute(2, 0, 1)


class TokenTransformer(torch.nn.Module):
    """The network: (target tokens with masks, mixture tokens, enrollment tokens[, mixture mel]) -> logits."""

    def __init__(self, num_codebooks: int, codebook_size: int, width: int, layers: int, heads: int, ff_mult: int,
                 dropout: float, enroll_conditioning: str, block: str, conv_kernel: int, mel_bins: int,
                 positions: str = "absolute"):
        super().__init__()
        self.num_codebooks, self.codebook_size, self.width = num_codebooks, codebook_size, width
        self.heads_count = heads
        self.relative = RelativeBias(heads) if positions == "relative" else None
        self.enroll_conditioning = enroll_conditioning
        # entry codebook_size is the mask
        self.target_embeddings = torch.nn.ModuleList(torch.nn.Embedding(codebook_size + 1, width)
                                                     for _ in range(num_codebooks))
        self.mixture_embeddings = torch.nn.ModuleList(torch.nn.Embedding(codebook_size, width)
                                                      for _ in range(num_codebooks))
        self.mel_projection = torch.nn.Linear(mel_bins, width) if mel_bins else None
        self.segments = torch.nn.Embedding(2, width)  # 0: enrollment prefix, 1: target frames
        self.null_enroll = torch.nn.Parameter(torch.zeros(width))
        cross = enroll_conditioning == "cross"
        self.blocks = torch.nn.ModuleList(
            Block(width, heads, ff_mult, dropout, cross, conv_kernel if block == "conformer" else 0)
            for _ in range(layers))
        self.out_norm = torch.nn.LayerNorm(width)
        self.heads = torch.nn.ModuleList(torch.nn.Linear(width, codebook_size) for _ in range(num_codebooks))

    def embed(self, tables: torch.nn.ModuleList, tokens: torch.Tensor) -> torch.Tensor:
        """(B, K, F) indices -> (B, F, width): the codebooks' embeddings summed per frame."""
        return sum(table(tokens[:, k]) for k, table in enumerate(tables))

    def forward(self, target: torch.Tensor, target_padding: torch.Tensor, mixture: torch.Tensor,
                enroll: torch.Tensor, enroll_padding: torch.Tensor, enroll_dropped: torch.Tensor,
                mel: torch.Tensor | None) -> torch.Tensor:
        """target (B, K, F) with mask entries, mixture (B, K, F), enroll (B, K, Fe), paddings (B, F) / (B, Fe)
        true where padded, enroll_dropped (B,) bool, mel (B, F, bins) or None -> logits (B, K, F, V)."""
        frames, device = target.shape[-1], target.device
        x = self.embed(self.target_embeddings, target) + self.embed(self.mixture_embeddings, mixture)
        if self.mel_projection is not None:
            x = x + self.mel_projection(mel)
        enroll_frames = enroll.shape[-1]
        x = x + self.segments.weight[1]
        prompt = self.embed(self.target_embeddings, enroll)
        prompt = torch.where(enroll_dropped[:, None, None], self.null_enroll.expand_as(prompt), prompt)
        # a dropped enrollment is the null vector alone: one frame, the rest padding
        first = torch.arange(enroll_frames, device=device)[None] == 0
        enroll_padding = torch.where(enroll_dropped[:, None], ~first, enroll_padding)
        prompt = prompt + self.segments.weight[0]
        if self.relative is None:
            x = x + sinusoidal_positions(frames, self.width, device)
            prompt = prompt + sinusoidal_positions(enroll_frames, self.width, device)
        if self.enroll_conditioning == "prefix":
            x = torch.cat([prompt, x], 1)
            padding = torch.cat([enroll_padding, target_padding], 1)
            positions = torch.cat([torch.arange(enroll_frames, device=device), torch.arange(frames, device=device)])
            segments = torch.arange(enroll_frames + frames, device=device) >= enroll_frames
            bias = self.attention_bias(positions, segments, padding)
            for block in self.blocks:
                x = block(x, padding, bias=bias)
            x = x[:, enroll_frames:]
        else:
            bias = self.attention_bias(torch.arange(frames, device=device),
                                       torch.ones(frames, dtype=torch.bool, device=device), target_padding)
            for block in self.blocks:
                x = block(x, target_padding, prompt, enroll_padding, bias)
        x = self.out_norm(x)
        return torch.stack([head(x) for head in self.heads], 1)

    def attention_bias(self, positions: torch.Tensor, segments: torch.Tensor,
                       padding: torch.Tensor) -> torch.Tensor | None:
        """(B * heads, L, L) self-attention bias with padded keys at -inf; None with absolute positions."""
        if self.relative is None:
            return None
        bias = self.relative(positions, segments)
        size, length = padding.shape
        bias = bias[None].expand(size, -1, -1, -1).masked_fill(padding[:, None, None, :], -math.inf)
        return bias.reshape(size * self.heads_count, length, length)


@register("maskgit_tse")
class MaskGitTSE(TSEModel):
    """Masked generative TSE over codec tokens; every choice is in the module docstring."""

    paper = ("masked generative TSE over codec tokens (MaskGIT / SoundStorm style; the published "
             "system's settings are unknown, see the module docstring)")

    needs = frozenset({"target_tokens", "mixture_tokens", "enroll_tokens"})

    def __init__(self, num_codebooks: int = 8, codebook_size: int = 1024, width: int = 512, layers: int = 12,
                 heads: int = 8, ff_mult: int = 4, dropout: float = 0.1,
                 enroll_conditioning: Literal["prefix", "cross"] = "prefix",
                 block: Literal["transformer", "conformer"] = "transformer", conv_kernel: int = 15,
                 features: Literal["none", "mel"] = "none", mel_bins: int = 80, mel_hop: int = 256,
                 prediction: Literal["parallel", "coarse_to_fine"] = "parallel", enroll_drop: float = 0.1,
                 iterations: int = 16, temperature: float = 1.0, guidance_scale: float = 0.0, seed: int = 0,
                 sample_rate: int = 16000, codec: str | None = None, codec_params: dict | None = None,
                 codec_sha256: str | None = None, positions: Literal["absolute", "relative"] = "absolute"):
        super().__init__()
        choices = {"enroll_conditioning": (enroll_conditioning, ("prefix", "cross")),
                   "block": (block, ("transformer", "conformer")), "features": (features, ("none", "mel")),
                   "prediction": (prediction, ("parallel", "coarse_to_fine")),
                   "positions": (positions, ("absolute", "relative"))}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise TsekitError(f"maskgit_tse: {name} must be one of {', '.join(allowed)}, got {value!r}")
        if iterations < 1 or not 0 <= enroll_drop < 1 or temperature < 0 or guidance_scale < 0:
            raise TsekitError("maskgit_tse: needs iterations >= 1, 0 <= enroll_drop < 1, temperature >= 0 and "
                              "guidance_scale >= 0")
        if width % heads or width % 2:
            raise TsekitError(f"maskgit_tse: width {width} must be even and divisible by heads {heads}")
        self.num_codebooks, self.codebook_size = num_codebooks, codebook_size
        self.prediction, self.enroll_drop = prediction, enroll_drop
        self.iterations, self.temperature, self.seed = iterations, temperature, seed
        self.guidance_scale = guidance_scale
        self.sample_rate = sample_rate
        # the mel's frames are interpolated to the token frames; its hop should be near the codec's
        self.logmel = None
        if features == "mel":
            from tsekit.pretrained.mel import LogMel

            self.logmel = LogMel(sample_rate, 4 * mel_hop, mel_hop, mel_bins)
        self.codec_spec, self.codec_params, self.codec_sha256 = codec, dict(codec_params or {}), codec_sha256
        self._codec: list = []  # loaded on first use, outside the module tree: not in the checkpoint
        self.network = TokenTransformer(num_codebooks, codebook_size, width, layers, heads, ff_mult, dropout,
                                        enroll_conditioning, block, conv_kernel, mel_bins if features == "mel" else 0,
                                        positions)

    # --- inputs ---------------------------------------------------------------------------------------------

    def _mel(self, mixture: torch.Tensor, frames: int) -> torch.Tensor | None:
        """The mixture's log-mel (B, frames, bins) at the token frame rate, or None without ``features: mel``."""
        if self.logmel is None:
            return None
        mel = self.logmel(mixture)
        return F.interpolate(mel, size=frames, mode="linear", align_corners=False).transpose(1, 2)

    def _logits(self, target: torch.Tensor, mixture_tokens: torch.Tensor, enroll: torch.Tensor,
                enroll_lengths: torch.Tensor, target_padding: torch.Tensor, mel: torch.Tensor | None,
                dropped: torch.Tensor) -> torch.Tensor:
        enroll_padding = torch.arange(enroll.shape[-1], device=enroll.device)[None] >= enroll_lengths[:, None]
        return self.network(target, target_padding, mixture_tokens.clamp(min=0), enroll.clamp(min=0),
                            enroll_padding, dropped, mel)

    # --- training -------------------------------------------------------------------------------------------

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """With ``target_tokens``: {"objective": (B,)}, the masked-token cross-entropy; without: {"estimate"}."""
        if "target_tokens" not in batch:
            return {"estimate": self.extract(batch["mixture"], batch["enroll"])}
        # the dataset checked every token file against its codec.yaml, and the trainer that codec's grid
        # against this model's, so batches are not checked again here
        target, mixture = batch["target_tokens"], batch["mixture_tokens"]
        frames = min(target.shape[-1], mixture.shape[-1])  # aligned crops agree to within a frame
        target, mixture = target[..., :frames], mixture[..., :frames]
        lengths = batch["target_tokens_lengths"].clamp(max=frames)
        valid = torch.arange(frames, device=target.device)[None] < lengths[:, None]
        size = target.shape[0]
        # masked: the positions scored; hidden: the positions the network sees as masks
        if self.prediction == "parallel":
            masked = hidden = draw_frame_mask(valid)[:, None].expand_as(target)
        else:  # SoundStorm: levels below q given, level q masked by the schedule, levels above q all masked
            level = torch.randint(self.num_codebooks, (size,), device=target.device)[:, None, None]
            levels = torch.arange(self.num_codebooks, device=target.device)[None, :, None]
            masked = (levels == level) & draw_frame_mask(valid)[:, None]
            hidden = (levels > level) | masked
        inputs = torch.where(hidden, self.codebook_size, target.clamp(min=0))
        dropped = torch.rand(size, device=target.device) < (self.enroll_drop if self.training else 0.0)
        logits = self._logits(inputs, mixture, batch["enroll_tokens"], batch["enroll_tokens_lengths"], ~valid,
                              self._mel(batch["mixture"], frames), dropped)
        return {"objective": masked_token_loss(logits, target, masked & valid[:, None])}

    # --- inference ------------------------------------------------------------------------------------------

    def frozen_parts(self) -> dict[str, tuple[str, str]]:
        return {**super().frozen_parts(), "codec": (self.codec_spec, self.codec(torch.device("cpu")).weights_sha256)}

    def codec(self, device: torch.device):
        """The tokens' codec, loaded once (``codec`` / ``codec_params``), on ``device``."""
        if not self._codec:
            from tsekit.codec.registry import load_for_system
            from tsekit.pretrained.codec_base import Codec

            codec = load_for_system(self.codec_spec, self.codec_params, Codec, "maskgit_tse", "codec",
                                    self.codec_sha256)
            if (codec.num_codebooks, codec.codebook_size) != (self.num_codebooks, self.codebook_size):
                raise TsekitError(f"maskgit_tse: codec {self.codec_spec} has {codec.num_codebooks} codebooks of "
                                  f"{codec.codebook_size}; the model was trained for {self.num_codebooks} of "
                                  f"{self.codebook_size}")
            self._codec.append(codec)
        return self._codec[0].to(device)

    @torch.no_grad()
    def extract(self, mixture: torch.Tensor, enroll: torch.Tensor) -> torch.Tensor:
        """Target speech (B, T) from mixtures (B, T) and enrollments (B, Te): encode, fill in, decode."""
        from tsekit.codec.registry import resample

        codec = self.codec(mixture.device)
        rate = int(codec.sample_rate)
        mixture_tokens = codec.encode(resample(mixture, self.sample_rate, rate))
        enroll_tokens = codec.encode(resample(enroll, self.sample_rate, rate))
        tokens = self.generate(mixture_tokens, enroll_tokens, self._mel(mixture, mixture_tokens.shape[-1]))
        wav = resample(codec.decode(tokens), rate, self.sample_rate)
        length = mixture.shape[-1]
        return F.pad(wav, (0, max(length - wav.shape[-1], 0)))[..., :length]

    @torch.no_grad()
    def generate(self, mixture_tokens: torch.Tensor, enroll_tokens: torch.Tensor,
                 mel: torch.Tensor | None = None) -> torch.Tensor:
        """Target tokens (B, K, F) for mixture tokens (B, K, F) and enrollment tokens (B, K, Fe)."""
        size, _, frames = mixture_tokens.shape
        device = mixture_tokens.device
        generator = torch.Generator(device=device).manual_seed(self.seed)
        tokens = torch.full_like(mixture_tokens, self.codebook_size)
        enroll_lengths = torch.full((size,), enroll_tokens.shape[-1], device=device)
        no_padding = torch.zeros(size, frames, dtype=torch.bool, device=device)

        def logits_of(current: torch.Tensor) -> torch.Tensor:
            if self.guidance_scale == 0:
                return self._logits(current, mixture_tokens, enroll_tokens, enroll_lengths, no_padding, mel,
                                    torch.zeros(size, dtype=torch.bool, device=device))
            both = self._logits(current.repeat(2, 1, 1), mixture_tokens.repeat(2, 1, 1),
                                enroll_tokens.repeat(2, 1, 1), enroll_lengths.repeat(2), no_padding.repeat(2, 1),
                                None if mel is None else mel.repeat(2, 1, 1),
                                torch.arange(2 * size, device=device) >= size)
            cond, uncond = both[:size], both[size:]
            return cond + self.guidance_scale * (cond - uncond)

        if self.prediction == "parallel":
            return self._fill(tokens, slice(None), self.iterations, logits_of, generator)
        for level in range(self.num_codebooks):
            tokens = self._fill(tokens, slice(level, level + 1), self.iterations if level == 0 else 1, logits_of,
                                generator)
        return tokens

    def _fill(self, tokens: torch.Tensor, levels: slice, iterations: int, logits_of, generator) -> torch.Tensor:
        """Fill in the masked frames of codebooks ``levels`` of ``tokens`` in ``iterations`` MaskGIT steps."""
        size, _, frames = tokens.shape
        unknown = torch.ones(size, frames, dtype=torch.bool, device=tokens.device)
        for step in range(iterations):
            logits = logits_of(tokens)[:, levels].float()  # (B, k, F, V)
            temperature = self.temperature * (1 - (step + 1) / iterations)
            log_probs = logits.log_softmax(-1)
            if temperature > 0:
                sampled = (log_probs / temperature + gumbel(log_probs.shape, generator, tokens.device)).argmax(-1)
            else:
                sampled = log_probs.argmax(-1)
            confidence = log_probs.gather(-1, sampled[..., None])[..., 0].sum(1)  # (B, F)
            if temperature > 0:
                confidence = confidence + temperature * gumbel(confidence.shape, generator, tokens.device)
            chosen = torch.where(unknown[:, None], sampled, tokens[:, levels])
            keep_masked = min(math.floor(frames * math.cos(math.pi / 2 * (step + 1) / iterations)),
                              int(unknown.sum(1).max()) - 1)
            confidence = confidence.masked_fill(~unknown, math.inf)  # decided frames stay decided
            unknown = torch.zeros_like(unknown)
            if keep_masked > 0:
                unknown.scatter_(1, confidence.argsort(1)[:, :keep_masked], True)
            tokens = tokens.clone()
            tokens[:, levels] = torch.where(unknown[:, None], self.codebook_size, chosen)
        return tokens


def gumbel(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    uniform = torch.rand(shape, generator=generator, device=device).clamp(1e-9, 1 - 1e-9)
    return -torch.log(-torch.log(uniform))
