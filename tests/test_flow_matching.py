"""Conditional flow matching: estimator shapes and masking, time conditioning, the loss, the Euler sampler."""

from __future__ import annotations

import math

import pytest
import torch

from tsekit.models.layers.flow_matching import (
    FlowEstimator,
    cfm_loss,
    euler_sample,
    sinusoidal_embedding,
    time_points,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FEATS = 8
TINY = {"n_feats": FEATS, "channels": (16, 16), "heads": 2, "head_dim": 8}


def tiny(seed: int = 0, **params) -> FlowEstimator:
    torch.manual_seed(seed)
    return FlowEstimator(**{**TINY, **params}).eval()


def randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def lengths_mask(lengths: list[int], frames: int) -> torch.Tensor:
    return (torch.arange(frames)[None] < torch.tensor(lengths)[:, None]).float()[:, None]


def inputs(lengths: list[int], frames: int, seed: int = 1) -> tuple[torch.Tensor, ...]:
    """x, mask, mu, t, spk for a batch with the given valid lengths."""
    b = len(lengths)
    return (randn(b, FEATS, frames, seed=seed), lengths_mask(lengths, frames), randn(b, FEATS, frames, seed=seed + 1),
            torch.rand(b, generator=torch.Generator().manual_seed(seed)), randn(b, FEATS, seed=seed + 2))


@pytest.mark.parametrize("frames", [1, 7, 16, 33])
@pytest.mark.parametrize("channels", [(16, 16), (16, 24, 16)])
def test_shapes_and_zero_padding(frames: int, channels: tuple[int, ...]) -> None:
    net = tiny(channels=channels)
    x, mask, mu, t, spk = inputs([frames, max(1, frames // 2)], frames)
    with torch.no_grad():
        y = net(x, mask, mu, t, spk)
    assert y.shape == (2, FEATS, frames)
    assert torch.isfinite(y).all()
    assert (y[1, :, max(1, frames // 2):] == 0).all()
    assert y[0].abs().mean() > 1e-3


@pytest.mark.parametrize("channels", [(16, 16), (16, 24, 16)])
def test_valid_frames_ignore_padding_contents_and_length(channels: tuple[int, ...]) -> None:
    net = tiny(channels=channels)
    x, mask, mu, t, spk = inputs([21, 9], 21)
    noisy_x, noisy_mu = x.clone(), mu.clone()
    noisy_x[1, :, 9:] = 100 * randn(FEATS, 12, seed=7)
    noisy_mu[1, :, 9:] = -50 * randn(FEATS, 12, seed=8)
    with torch.no_grad():
        clean = net(x, mask, mu, t, spk)
        noisy = net(noisy_x, mask, noisy_mu, t, spk)
        alone = net(x[1:, :, :9], mask[1:, :, :9], mu[1:, :, :9], t[1:], spk[1:])
    torch.testing.assert_close(noisy, clean, rtol=0, atol=1e-5)
    # GroupNorm statistics skip padding, so batching with a longer utterance changes nothing
    torch.testing.assert_close(clean[1:, :, :9], alone, rtol=0, atol=1e-5)


def test_time_conditioning_changes_output() -> None:
    emb = sinusoidal_embedding(torch.tensor([0.0, 0.001, 0.5, 1.0]), 16)
    assert emb.shape == (4, 16)
    assert torch.cdist(emb, emb).fill_diagonal_(1).min() > 0.1
    net = tiny()
    x, mask, mu, _, spk = inputs([12, 12], 12)
    with torch.no_grad():
        early = net(x, mask, mu, torch.full((2,), 0.1), spk)
        late = net(x, mask, mu, torch.full((2,), 0.9), spk)
    assert (early - late).abs().mean() > 1e-3


def test_loss_decreases_on_a_fixed_batch() -> None:
    net = tiny().train()
    x1, mask, mu, _, spk = inputs([24, 15], 24, seed=3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        loss = cfm_loss(net, x1, mask, mu, spk, generator=torch.Generator().manual_seed(0)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses[::10]


def test_loss_matches_its_formula_with_a_zero_field() -> None:
    class Zero(torch.nn.Module):
        def forward(self, x, mask, mu, t, spk):
            return torch.zeros_like(x)

    x1, mask, mu, _, spk = inputs([10, 4], 10, seed=5)
    loss = cfm_loss(Zero(), x1, mask, mu, spk, sigma_min=0.01, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    torch.rand(2, generator=g)
    z = torch.randn(x1.shape, generator=g)
    u = x1 - 0.99 * z
    expected = torch.stack([u[0].pow(2).mean(), u[1, :, :4].pow(2).mean()])
    torch.testing.assert_close(loss, expected)


def test_condition_drop_removes_mu_and_spk() -> None:
    net = tiny()
    x1, mask, mu, _, spk = inputs([16, 11], 16)

    def loss(m: torch.Tensor, s: torch.Tensor, drop: float) -> torch.Tensor:
        with torch.no_grad():
            return cfm_loss(net, x1, mask, m, s, condition_drop=drop, generator=torch.Generator().manual_seed(4))

    other_mu, other_spk = randn(*mu.shape, seed=9), randn(*spk.shape, seed=10)
    torch.testing.assert_close(loss(mu, spk, 1.0), loss(other_mu, other_spk, 1.0))
    assert (loss(mu, spk, 0.0) - loss(other_mu, other_spk, 0.0)).abs().min() > 1e-4


@pytest.mark.parametrize("guidance,calls_per_step", [(0.0, 1), (0.7, 2)])
def test_sampler_calls_shape_and_determinism(guidance: float, calls_per_step: int) -> None:
    net = tiny()
    calls = []
    net.register_forward_pre_hook(lambda module, args: calls.append(1))
    _, mask, mu, _, spk = inputs([13, 6], 13)
    out = euler_sample(net, mu, mask, spk, steps=4, guidance=guidance, generator=torch.Generator().manual_seed(3))
    assert len(calls) == 4 * calls_per_step
    assert out.shape == (2, FEATS, 13)
    assert (out[1, :, 6:] == 0).all() and out[0].abs().mean() > 1e-3
    again = euler_sample(net, mu, mask, spk, steps=4, guidance=guidance, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, again)


class ConstantField(torch.nn.Module):
    """Returns c everywhere and records the times it is asked at."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c, self.times = c, []

    def forward(self, x, mask, mu, t, spk):
        self.times.append(t[0].item())
        return torch.full_like(x, self.c)


@pytest.mark.parametrize("schedule", ["cosine", "uniform"])
@pytest.mark.parametrize("guidance", [0.0, 0.7])
def test_euler_of_a_constant_field_moves_by_c(schedule: str, guidance: float) -> None:
    field = ConstantField(0.375)
    _, mask, mu, _, spk = inputs([9, 5], 9)
    out = euler_sample(field, mu, mask, spk, steps=7, guidance=guidance, time_schedule=schedule, temperature=0.5,
                       generator=torch.Generator().manual_seed(6))
    x0 = 0.5 * torch.randn(mu.shape, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(out, (x0 + 0.375) * mask, rtol=0, atol=1e-6)
    expected = time_points(7, schedule)[:-1].float().repeat_interleave(2 if guidance else 1)
    torch.testing.assert_close(torch.tensor(field.times), expected)


def test_time_points() -> None:
    k = torch.arange(6, dtype=torch.float64)
    torch.testing.assert_close(time_points(5, "cosine"), 1 - torch.cos(math.pi / 2 * k / 5))
    torch.testing.assert_close(time_points(5, "uniform"), k / 5)
    assert time_points(5, "cosine")[-1].float() == 1.0
    with pytest.raises(ValueError):
        time_points(5, "linear")
