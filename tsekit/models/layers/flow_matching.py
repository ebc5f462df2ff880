"""Conditional flow matching (CFM): the mel decoder ("flow") of the Whisper-based TSE system.

The model turns a conditioning sequence ``mu`` (B, n_feats, F), a mel-shaped
projection of Whisper encoder frames that the caller has already
length-regulated to the mel frame rate, and a speaker vector ``spk``
(B, n_feats), already projected to n_feats by the caller, into a mel
spectrogram (B, n_feats, F). It is the decoder of Matcha-TTS (Mehta et al.
2024, "Matcha-TTS: a fast TTS architecture with conditional flow matching")
and of CosyVoice (Du et al. 2024, "CosyVoice: a scalable multilingual
zero-shot text-to-speech synthesizer based on supervised semantic tokens"),
trained with optimal-transport conditional flow matching (Lipman et al. 2023,
"Flow matching for generative modeling").

Flow matching in one paragraph. A time-dependent vector field v(x, t) moves
noise x_0 ~ N(0, I) at t = 0 to data x_1 at t = 1 along dx/dt = v. The
optimal-transport conditional path of Lipman et al. joins a noise sample z to
a data sample x1 by a straight line,

    y_t = (1 - (1 - sigma_min) t) z + t x1,       u_t = dy_t/dt = x1 - (1 - sigma_min) z,

and the network is regressed onto u_t at random t (``cfm_loss``). Sampling
integrates the learnt ODE from t = 0 to 1 with a few explicit Euler steps
(``euler_sample``).

Pieces:

- ``FlowEstimator``: the vector-field network v(x_t, t | mu, spk), a 1-D U-Net
  over frames with transformer blocks, as Matcha-TTS's decoder. Input channels
  are 3 * n_feats: x_t, mu, and spk repeated over frames, concatenated on
  channels. Each down level is a ResNet block (conv k=3 + GroupNorm + Mish,
  twice, with the time embedding added in between, 1x1 residual conv when the
  channel count changes), ``blocks_per_level`` transformer blocks (pre-norm
  self-attention over frames, then a GELU feed-forward), and a stride-2 conv
  (k=3, padding 1) that halves the frame count. The last level does not
  downsample: a plain k=3 conv stands in its place (Matcha's convention), so
  ``len(channels)`` levels downsample ``len(channels) - 1`` times. ``mid_blocks``
  (ResNet + transformer) units follow, then the up path mirrors the down path:
  the skip of the same level is concatenated on channels, ResNet block,
  transformer blocks, and a transposed conv (k=4, s=2, padding 1) that doubles
  the frame count (a k=3 conv at the last level). A final conv + GroupNorm +
  Mish block and a 1x1 conv project back to n_feats.
- ``cfm_loss``: the training loss, per example (B,).
- ``euler_sample``: the sampler, with classifier-free guidance.
- ``time_points``: the sampler's time grid, uniform or cosine.

Choices the papers leave open, or where this module departs from the released
code:

- Masking. Padding frames (mask 0) are zeroed before every convolution and
  after every block, are never attended to (a key padding mask), and are zero
  in the output. GroupNorm statistics are computed over valid frames only
  (``MaskedGroupNorm``); Matcha's code normalises over all frames, padding
  zeros included, so there an utterance's output changes with the length of
  the longest utterance in its batch. Here a valid frame's output depends
  neither on padding contents nor on the amount of padding.
- Frame counts. F need not be a multiple of 2^(levels - 1): the estimator pads
  x, mu and the mask with zeros on the right to the next multiple and crops
  the output back. The mask of each coarser level takes every second frame of
  the finer one, so a level has ceil(valid / 2) valid frames, which is exactly
  the set of coarse frames whose centre tap is a valid fine frame.
- Time embedding. t in [0, 1] is scaled by 1000 (Matcha) before the usual
  sin/cos features (half sines, half cosines, frequencies geometric from 1 to
  1/10000) of dimension channels[0], followed by Linear-SiLU-Linear to
  ``time_dim`` (default 4 * channels[0], as Matcha). Each ResNet block adds
  Linear(Mish(embedding)) to its hidden channels.
- Transformer blocks have no positional encoding (the convolutions supply
  position, as in Matcha's decoder); attention projects to heads * head_dim
  and back, without biases on q, k, v. The feed-forward is 4x wide with GELU
  (Matcha defaults to snake-beta; CosyVoice uses GELU). Dropout applies to the
  attention and feed-forward outputs only.
- GroupNorm uses gcd(8, channels) groups: 8 as Matcha, fewer for tiny
  channel counts that 8 does not divide.
- Initialisation is PyTorch's default (Matcha re-initialises with Kaiming).
- There is no prompt-mel condition channel (CosyVoice's ``cond``): the TSE
  system conditions only on mu and spk.
- Loss. Matcha averages the squared error over all valid elements of the
  batch; ``cfm_loss`` returns one value per example, its squared error summed
  over valid frames and features divided by (valid frames * n_feats), so the
  caller can weight or mask examples. t ~ U(0, 1) per example, optionally
  warped by the cosine schedule t -> 1 - cos(pi t / 2) (CosyVoice's
  training), which puts more samples near t = 0, where the field is hardest
  to predict.
- Classifier-free guidance. In training, each example's mu and spk are both
  replaced by zeros with probability ``condition_drop`` (CosyVoice drops
  conditions with p = 0.2). The decision is drawn from the generator whatever
  ``condition_drop`` is, so changing it does not shift the noise of later
  draws; the estimator's train/eval mode plays no part (the caller passes
  ``condition_drop=0`` for validation). At sampling, v = (1 + w) v_cond -
  w v_uncond with w = ``guidance`` (CosyVoice's 0.7), the unconditional field
  from zero mu and spk; the two fields are two estimator calls, not one call
  on a doubled batch, to keep peak memory at one batch.
- Random draws. ``cfm_loss`` draws, in order, t (B,), z (shape of x1) and the
  drop decisions (B,) from ``generator``; ``euler_sample`` draws x_0 (shape of
  mu) first and nothing after. A generator must live on the tensors' device.
- Sampling time grid. ``time_points``: t_k = k / N, k = 0..N, or with the
  cosine schedule 1 - cos(pi/2 * k/N) (CosyVoice's inference), smaller steps
  near t = 0. Euler steps x <- x + (t_{k+1} - t_k) v(x, t_k). ``temperature``
  scales the initial noise (Matcha's ``temperature``, CosyVoice's 1.0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SCHEDULES = ("cosine", "uniform")


def check_schedule(time_schedule: str) -> None:
    if time_schedule not in SCHEDULES:
        raise ValueError(f"time_schedule must be one of {SCHEDULES}, got {time_schedule!r}")


def warp_time(t: torch.Tensor, time_schedule: str) -> torch.Tensor:
    """Map uniform times in [0, 1] through the schedule (module docstring)."""
    check_schedule(time_schedule)
    return 1 - torch.cos(t * (math.pi / 2)) if time_schedule == "cosine" else t


def time_points(steps: int, time_schedule: str = "cosine") -> torch.Tensor:
    """The sampler's N + 1 time points (float64) from 0 to 1."""
    if steps < 1:
        raise ValueError(f"need at least one step, got {steps}")
    # float64 so that the points and the step sizes are exact to float32 precision
    return warp_time(torch.linspace(0, 1, steps + 1, dtype=torch.float64), time_schedule)


def sinusoidal_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """(B,) times -> (B, dim) sin/cos features; the scale spreads t in [0, 1] over the fast frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
    angles = scale * t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class MaskedGroupNorm(torch.nn.GroupNorm):
    """GroupNorm whose statistics cover valid frames only, so padding length does not change the result."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, c, n = x.shape
        grouped = x.reshape(b, self.num_groups, c // self.num_groups, n)
        m = mask.reshape(b, 1, 1, n)
        # clamp: an all-padding example would divide by zero; its output is zeroed anyway
        count = (m.sum(dim=(2, 3), keepdim=True) * (c // self.num_groups)).clamp(min=1)
        mean = (grouped * m).sum(dim=(2, 3), keepdim=True) / count
        var = (((grouped - mean) * m) ** 2).sum(dim=(2, 3), keepdim=True) / count
        normed = ((grouped - mean) / torch.sqrt(var + self.eps)).reshape(b, c, n)
        return normed * self.weight[:, None] + self.bias[:, None]


def groups_for(channels: int) -> int:
    return math.gcd(8, channels)


class ConvBlock(torch.nn.Module):
    """Conv k=3 -> masked GroupNorm -> Mish, zero on padding frames."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(dim_in, dim_out, 3, padding=1)
        self.norm = MaskedGroupNorm(groups_for(dim_out), dim_out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.mish(self.norm(self.conv(x * mask), mask)) * mask


class ResnetBlock(torch.nn.Module):
    """Two conv blocks with the time embedding added between them, plus a residual path."""

    def __init__(self, dim_in: int, dim_out: int, time_dim: int) -> None:
        super().__init__()
        self.block1 = ConvBlock(dim_in, dim_out)
        self.time = torch.nn.Linear(time_dim, dim_out)
        self.block2 = ConvBlock(dim_out, dim_out)
        self.residual = torch.nn.Conv1d(dim_in, dim_out, 1) if dim_in != dim_out else torch.nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x, mask) + self.time(F.mish(t_emb))[:, :, None]
        return (self.block2(h, mask) + self.residual(x * mask)) * mask


class TransformerBlock(torch.nn.Module):
    """Pre-norm self-attention over frames and a GELU feed-forward, on (B, C, F) tensors."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.norm1 = torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, 3 * inner, bias=False)
        self.out = torch.nn.Linear(inner, dim)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.ff = torch.nn.Sequential(torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(), torch.nn.Linear(4 * dim, dim))
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, _, n = x.shape
        h = x.transpose(1, 2)
        q, k, v = self.qkv(self.norm1(h)).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        keys = mask.reshape(b, 1, 1, n) > 0
        # an example with no valid frame would give all -inf scores and NaNs; let it attend anywhere (zeroed below)
        keys = keys | ~keys.any(dim=-1, keepdim=True)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)
        h = h + self.dropout(self.out(attn.transpose(1, 2).reshape(b, n, -1)))
        h = h + self.dropout(self.ff(self.norm2(h)))
        return h.transpose(1, 2) * mask


class Level(torch.nn.Module):
    """A ResNet block then transformer blocks: the unit each U-Net level repeats."""

    def __init__(self, dim_in: int, dim_out: int, time_dim: int, blocks: int, heads: int, head_dim: int,
                 dropout: float) -> None:
        super().__init__()
        self.resnet = ResnetBlock(dim_in, dim_out, time_dim)
        self.transformers = torch.nn.ModuleList(TransformerBlock(dim_out, heads, head_dim, dropout)
                                                for _ in range(blocks))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        x = self.resnet(x, mask, t_emb)
        for block in self.transformers:
            x = block(x, mask)
        return x


class FlowEstimator(torch.nn.Module):
    """The vector field v(x_t, t | mu, spk): a 1-D U-Net with transformer blocks (module docstring)."""

    def __init__(self, n_feats: int = 80, channels: tuple[int, ...] = (256, 256), blocks_per_level: int = 1,
                 mid_blocks: int = 2, heads: int = 4, head_dim: int = 64, dropout: float = 0.05,
                 time_dim: int | None = None) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels needs at least one level")
        if channels[0] % 2:
            raise ValueError(f"channels[0] sizes the sin/cos time embedding and must be even, got {channels[0]}")
        self.n_feats, self.channels = n_feats, tuple(channels)
        self.time_embed_dim = channels[0]
        time_dim = time_dim or 4 * channels[0]
        self.time_mlp = torch.nn.Sequential(torch.nn.Linear(channels[0], time_dim), torch.nn.SiLU(),
                                            torch.nn.Linear(time_dim, time_dim))
        unit = {"time_dim": time_dim, "blocks": blocks_per_level, "heads": heads, "head_dim": head_dim,
                "dropout": dropout}
        last = len(channels) - 1

        self.down = torch.nn.ModuleList()
        self.downsample = torch.nn.ModuleList()
        dim = 3 * n_feats
        for i, ch in enumerate(channels):
            self.down.append(Level(dim, ch, **unit))
            stride = 1 if i == last else 2
            self.downsample.append(torch.nn.Conv1d(ch, ch, 3, stride=stride, padding=1))
            dim = ch

        self.mid = torch.nn.ModuleList(Level(dim, dim, **unit) for _ in range(mid_blocks))

        self.up = torch.nn.ModuleList()
        self.upsample = torch.nn.ModuleList()
        for i in reversed(range(len(channels))):
            ch = channels[i]
            self.up.append(Level(dim + ch, ch, **unit))
            self.upsample.append(torch.nn.Conv1d(ch, ch, 3, padding=1) if i == 0
                                 else torch.nn.ConvTranspose1d(ch, ch, 4, stride=2, padding=1))
            dim = ch

        self.final_block = ConvBlock(dim, dim)
        self.final_proj = torch.nn.Conv1d(dim, n_feats, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                spk: torch.Tensor) -> torch.Tensor:
        """x, mu (B, n_feats, F), mask (B, 1, F) float 0/1, t (B,) in [0, 1], spk (B, n_feats) -> (B, n_feats, F)."""
        frames = x.shape[-1]
        factor = 2 ** (len(self.channels) - 1)
        extra = -frames % factor
        mask = mask.to(x.dtype)
        if extra:
            x, mu, mask = (F.pad(a, (0, extra)) for a in (x, mu, mask))
        t_emb = self.time_mlp(sinusoidal_embedding(t.reshape(-1).expand(x.shape[0]), self.time_embed_dim))
        h = torch.cat([x, mu, spk[:, :, None].expand_as(x)], dim=1) * mask

        skips, masks = [], []
        for level, down in zip(self.down, self.downsample, strict=True):
            h = level(h, mask, t_emb)
            skips.append(h)
            masks.append(mask)
            h = down(h * mask)
            if down.stride[0] == 2:
                mask = mask[:, :, ::2]
            h = h * mask

        for level in self.mid:
            h = level(h, mask, t_emb)

        for level, up in zip(self.up, self.upsample, strict=True):
            mask = masks.pop()
            h = level(torch.cat([h, skips.pop()], dim=1), mask, t_emb)
            h = up(h * mask)
            if masks:
                # the transposed conv doubles this level's length, which is exactly the finer level's
                h = h * masks[-1]

        out = self.final_proj(self.final_block(h, mask)) * mask
        return out[:, :, :frames]


def cfm_loss(estimator: torch.nn.Module, x1: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, spk: torch.Tensor,
             sigma_min: float = 1e-6, condition_drop: float = 0.2, time_schedule: str = "cosine",
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Conditional flow-matching loss per example (B,) for target mels x1 (B, n_feats, F) (module docstring)."""
    check_schedule(time_schedule)
    b = x1.shape[0]
    t = warp_time(torch.rand(b, generator=generator, device=x1.device, dtype=x1.dtype), time_schedule)
    z = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    keep = torch.rand(b, generator=generator, device=x1.device) >= condition_drop
    keep = keep.to(x1.dtype)
    tb = t[:, None, None]
    y = (1 - (1 - sigma_min) * tb) * z + tb * x1
    target = x1 - (1 - sigma_min) * z
    v = estimator(y, mask, mu * keep[:, None, None], t, spk * keep[:, None])
    mask = mask.to(x1.dtype)
    valid = mask.sum(dim=(1, 2)).clamp(min=1)
    return (((v - target) ** 2) * mask).sum(dim=(1, 2)) / (valid * x1.shape[1])


@torch.no_grad()
def euler_sample(estimator: torch.nn.Module, mu: torch.Tensor, mask: torch.Tensor, spk: torch.Tensor,
                 steps: int = 10, guidance: float = 0.7, time_schedule: str = "cosine", temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Integrate the learnt ODE from noise to a mel (B, n_feats, F) with ``steps`` Euler steps (module docstring)."""
    grid = time_points(steps, time_schedule)
    b = mu.shape[0]
    x = temperature * torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    mask = mask.to(mu.dtype)
    zeros_mu, zeros_spk = torch.zeros_like(mu), torch.zeros_like(spk)
    for k in range(steps):
        t = torch.full((b,), float(grid[k]), device=mu.device, dtype=mu.dtype)
        v = estimator(x, mask, mu, t, spk)
        if guidance > 0:
            v = (1 + guidance) * v - guidance * estimator(x, mask, zeros_mu, t, zeros_spk)
        x = x + float(grid[k + 1] - grid[k]) * v
    return x * mask
