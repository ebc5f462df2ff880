"""NCSN++ U-Net: shapes with padding, FiLM and time conditioning, misuse errors, FIR resampling, gradients, size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tsekit.models.layers.ncsnpp import (
    AttentionBlock,
    NCSNpp,
    OutputHead,
    ResBlock,
    fir_downsample,
    fir_kernel_2d,
    fir_upsample,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COND = 6
# three levels (padding to multiples of 4), attention at the middle level (nominal size 16 / 2) and the bottom
TINY = {"nf": 8, "ch_mult": (1, 2, 2), "num_res_blocks": 1, "attn_resolutions": (8,), "resolution": 16,
        "cond_dim": COND}
PUBLISHED_PARAMS = 65_174_798
MINI_PARAMS = 491_798


def fresh(seed: int = 0, **params) -> NCSNpp:
    torch.manual_seed(seed)
    return NCSNpp(**{**TINY, **params}).eval()


def tiny(seed: int = 0, **params) -> NCSNpp:
    """A network as after some training: the zero-initialised weights and biases drawn at random."""
    net = fresh(seed, **params)
    with torch.no_grad():
        for param in net.parameters():
            if not param.any():
                param.normal_(0.0, 0.1)
    return net


def randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("channels", [2, 4])
@pytest.mark.parametrize("freqs,frames", [(129, 37), (256, 50)])
def test_output_shape_matches_input(channels: int, freqs: int, frames: int) -> None:
    net = tiny(in_channels=channels)
    with torch.no_grad():
        y = net(randn(2, channels, freqs, frames), randn(2, COND))
    assert y.shape == (2, 2, freqs, frames)
    assert torch.isfinite(y).all() and y.std() > 1e-3


def test_film_conditioning_changes_output() -> None:
    net = tiny()
    x = randn(2, 2, 32, 16)
    with torch.no_grad():
        first, again = net(x, randn(2, COND, seed=2)), net(x, randn(2, COND, seed=2))
        other = net(x, randn(2, COND, seed=3))
    assert torch.equal(first, again)
    assert (first - other).abs().amax() > 1e-3


def test_film_modulates_the_output_of_the_blocks_last_conv() -> None:
    """As the authors' ResnetBlockConditionalFiLMBigGANpp: conv_out(...) * (1 + scale) + shift, then the shortcut."""
    torch.manual_seed(0)
    block = ResBlock(8, 12, (1, 3, 3, 1), cond_dim=COND)
    with torch.no_grad():
        block.conv_out.weight.normal_(0.0, 0.1)
    last: list[torch.Tensor] = []
    block.conv_out.register_forward_hook(lambda module, args, out: last.append(out))
    x, cond = randn(2, 8, 16, 8), randn(2, COND, seed=2)
    with torch.no_grad():
        out = block(x, cond=cond)
        scale, shift = block.film(cond)[:, :, None, None].chunk(2, dim=1)
        expected = (block.shortcut(x) + last[0] * (1 + scale) + shift) / math.sqrt(2)
    assert torch.allclose(out, expected, atol=1e-6)


def test_fresh_network_is_initialised_as_the_authors() -> None:
    """NCSN++'s init (layers.default_init): zero block ends, attention outputs and heads; variance 1 / fan_avg."""
    net = fresh(cond_dim=COND)
    with torch.no_grad():
        assert torch.equal(net(randn(2, 2, 32, 16), randn(2, COND)), torch.zeros(2, 2, 32, 16))
    blocks = [m for m in net.modules() if isinstance(m, ResBlock)]
    for block in blocks:
        assert not block.conv_out.weight.any() and not block.conv_out.bias.any()
        assert not block.conv_in.bias.any()
    for head in (m for m in net.modules() if isinstance(m, OutputHead)):
        assert not head[-1].weight.any() and not head[-1].bias.any()
    for attention in (m for m in net.modules() if isinstance(m, AttentionBlock)):
        assert not attention.out.weight.any()
        for part in attention.qkv.weight.chunk(3, dim=0):  # init_scale 0.1 of a C x C layer
            assert part.var().item() == pytest.approx(0.1 / part.shape[0], rel=0.25)
    # uniform of variance 2 / (fan_in + fan_out); PyTorch's default would be 1 / (3 fan_in), 40% of it here
    weights = torch.cat([b.conv_in.weight.flatten() / math.sqrt(2 / (9 * sum(b.conv_in.weight.shape[:2])))
                         for b in blocks])
    assert weights.var().item() == pytest.approx(1.0, rel=0.1)


def test_time_conditioning_changes_output() -> None:
    net = tiny(time_conditioning=True)
    x, cond = randn(2, 2, 32, 16), randn(2, COND)
    with torch.no_grad():
        early = net(x, cond, torch.tensor([0.1, 0.5]))
        late = net(x, cond, torch.tensor([0.9, 0.5]))
    assert (early[0] - late[0]).abs().amax() > 1e-3
    assert torch.allclose(early[1], late[1], atol=1e-5)  # examples are independent: same time, same output


def test_misuse_raises() -> None:
    x, cond = randn(1, 2, 16, 8), randn(1, COND)
    with pytest.raises(ValueError, match="time"):
        tiny()(x, cond, torch.ones(1))
    timed = tiny(time_conditioning=True)
    with pytest.raises(ValueError, match="time"):
        timed(x, cond)
    with pytest.raises(ValueError, match="positive"):
        timed(x, cond, torch.zeros(1))
    with pytest.raises(ValueError, match="cond"):
        tiny()(x)
    with pytest.raises(ValueError, match="cond"):
        tiny(cond_dim=0)(x, cond)


def upfirdn_1d(x: np.ndarray, taps: np.ndarray, up: int, down: int, pad: tuple[int, int]) -> np.ndarray:
    """Reference: zero insertion, padding, true convolution, decimation."""
    u = np.zeros(len(x) * up)
    u[::up] = x
    return np.convolve(np.pad(u, pad), taps, mode="valid")[::down]


@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 1], [1, 2, 5, 2]])
def test_fir_resampling_is_upfirdn(taps: list[int]) -> None:
    """On a separable image x = a b^T the 2-D resampling is the 1-D upfirdn along each axis (asymmetric kernels too)."""
    a, b = randn(12, seed=4).double().numpy(), randn(10, seed=5).double().numpy()
    image = torch.from_numpy(np.outer(a, b))[None, None]
    kernel = fir_kernel_2d(taps).double()
    k, size = np.asarray(taps, float) / sum(taps), len(taps)
    up_pad, down_pad = ((size + 1) // 2, (size - 2) // 2), ((size - 1) // 2, (size - 2) // 2)
    up = np.outer(upfirdn_1d(a, 2 * k, 2, 1, up_pad), upfirdn_1d(b, 2 * k, 2, 1, up_pad))
    down = np.outer(upfirdn_1d(a, k, 1, 2, down_pad), upfirdn_1d(b, k, 1, 2, down_pad))
    # atol: the kernel is float32; a misaligned filter is off by O(0.1)
    np.testing.assert_allclose(fir_upsample(image, kernel)[0, 0].numpy(), up, atol=1e-6)
    np.testing.assert_allclose(fir_downsample(image, kernel)[0, 0].numpy(), down, atol=1e-6)


def test_fir_resampling_keeps_constants_and_smooth_images() -> None:
    kernel = fir_kernel_2d((1, 3, 3, 1))
    constant = torch.full((1, 3, 16, 12), 2.5)
    assert fir_downsample(constant, kernel).shape == (1, 3, 8, 6)
    assert torch.allclose(fir_downsample(constant, kernel)[..., 1:-1, 1:-1], torch.tensor(2.5))
    assert fir_upsample(constant, kernel).shape == (1, 3, 32, 24)
    assert torch.allclose(fir_upsample(constant, kernel)[..., 2:-2, 2:-2], torch.tensor(2.5))
    grid = torch.arange(32.0)
    smooth = (torch.sin(2 * torch.pi * grid / 32)[:, None] * torch.cos(2 * torch.pi * grid / 32)[None, :])[None, None]
    back = fir_downsample(fir_upsample(smooth, kernel), kernel)
    assert back.shape == smooth.shape
    assert (back - smooth)[..., 2:-2, 2:-2].abs().amax() < 0.02


def test_gradient_reaches_every_parameter() -> None:
    net = tiny(time_conditioning=True).train()
    y = net(randn(2, 2, 20, 12), randn(2, COND), torch.tensor([0.2, 0.7]))
    y.pow(2).mean().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, f"{name} gets no gradient (unused module)"
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"{name} gets a zero gradient"


def test_published_and_mini_sizes() -> None:
    with torch.device("meta"):
        published = NCSNpp()
        mini = NCSNpp(nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=())
    assert sum(p.numel() for p in published.parameters()) == PUBLISHED_PARAMS
    assert sum(p.numel() for p in mini.parameters()) == MINI_PARAMS
    assert len(published.up_blocks) == 7 and all(len(blocks) == 3 for blocks in published.up_blocks)
    # attention only at the level of nominal frequency size 16 (256 / 2**4), plus the middle block
    assert [type(a).__name__ for a in published.up_attention].count("AttentionBlock") == 1
