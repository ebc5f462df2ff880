"""DDTSE: the OU-VE SDE, the compressed STFT, the samplers' cost, stage 2's schedule, FiLM, refinement."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tsekit import TsekitError
from tsekit.models import build_model
from tsekit.models.layers.diffusion import OUVESDE, CompressedSTFT

RATE = 16000
pytestmark = pytest.mark.usefixtures("one_torch_thread")
# a DDTSE small enough for many forward passes in a test; the learned speaker encoder needs no files
TINY = {"nf": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "speaker_encoder": "learned",
        "embed_dim": 16, "min_enroll_seconds": 0.3, "steps": 4, "pc_steps": 3}


def tiny(**params) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("ddtse", {**TINY, **params})


def as_trained(model: torch.nn.Module) -> torch.nn.Module:
    """The model with its zero-initialised U-Net weights drawn at random (a fresh U-Net outputs zero)."""
    with torch.no_grad():
        for param in model.net.parameters():
            if not param.any():
                param.normal_(0.0, 0.1)
    return model


def signals(batch: int = 2, seconds: float = 0.3, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    length = int(seconds * RATE)
    target = 0.3 * torch.randn(batch, length, generator=generator)
    mixture = target + 0.3 * torch.randn(batch, length, generator=generator)
    enroll = 0.3 * torch.randn(batch, int(0.5 * RATE), generator=generator)
    return {"mixture": mixture, "target": target, "enroll": enroll,
            "enroll_lengths": torch.full((batch,), enroll.shape[-1])}


def test_sde_marginal_matches_the_closed_form():
    """Euler-Maruyama simulation of dx = theta (y - x) dt + g(t) dw against the closed-form mean and std."""
    sde = OUVESDE()
    draws, steps = 20000, 1000
    generator = torch.Generator().manual_seed(1)
    x0, y = 0.8, -0.4
    x = torch.full((draws,), x0, dtype=torch.float64)
    dt = 1.0 / steps
    checks = {}
    for i in range(steps):
        t = torch.tensor(i * dt, dtype=torch.float64)
        x = x + sde.theta * (y - x) * dt + sde.diffusion(t) * math.sqrt(dt) * torch.randn(
            draws, generator=generator, dtype=torch.float64)
        if i + 1 in (steps // 4, steps):
            checks[(i + 1) * dt] = (x.mean().item(), x.std().item())
    for t, (mean, std) in checks.items():
        time = torch.tensor([t], dtype=torch.float64)
        expected_mean = sde.mean(torch.tensor([x0]), torch.tensor([y]), time).item()
        expected_std = sde.std(time).item()
        assert mean == pytest.approx(expected_mean, abs=4 * expected_std / math.sqrt(draws) + 2e-3)
        assert std == pytest.approx(expected_std, rel=0.03)
    # sigma at t = 1 with the published constants (SEEDS.md: about 0.39)
    assert sde.std(torch.tensor(1.0)).item() == pytest.approx(0.3893, abs=1e-3)


def test_score_and_x0_conversions_are_inverse():
    sde = OUVESDE()
    x, y, x0 = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    t = torch.tensor([0.1, 0.5, 1.0])
    score = sde.score_from_x0(x, y, t, x0)
    assert torch.allclose(sde.x0_from_score(x, y, t, score), x0, atol=1e-4)


def test_compressed_stft_round_trips():
    stft = CompressedSTFT()
    wav = 0.5 * torch.randn(2, 7777)
    spec = stft(wav)
    assert spec.shape == (2, 2, 256, 7777 // 128 + 1)
    assert torch.allclose(stft.inverse(spec, 7777), wav, atol=1e-4)
    # the compression: |c| = 0.15 |X|^0.5
    raw = torch.stft(wav, 510, 128, window=torch.hann_window(510), return_complex=True)
    assert torch.allclose(spec.pow(2).sum(1).sqrt(), 0.15 * raw.abs().sqrt(), atol=1e-5)


def test_ddtse_sampler_evaluates_the_network_steps_plus_one_times():
    model = tiny(steps=4).eval()
    batch = signals()
    before = model.evaluations
    estimate = model.extract(batch["mixture"], batch["enroll"])
    assert model.evaluations - before == 5
    assert estimate.shape == batch["mixture"].shape and torch.isfinite(estimate).all()
    before = model.evaluations
    model.refine(batch["mixture"], {"enroll": batch["enroll"]}, batch["target"], passes=1)
    assert model.evaluations - before == 4
    before = model.evaluations
    model.refine(batch["mixture"], {"enroll": batch["enroll"]}, batch["target"], passes=3)
    assert model.evaluations - before == 12


def test_pc_sampler_evaluates_predictor_and_corrector_every_step():
    model = tiny(objective="score", sampler="pc", pc_steps=3, corrector_steps=1).eval()
    batch = signals()
    before = model.evaluations
    model.extract(batch["mixture"], batch["enroll"])
    assert model.evaluations - before == 6


def test_sampling_is_deterministic_and_seeded():
    model = as_trained(tiny()).eval()
    batch = signals()
    first = model.extract(batch["mixture"], batch["enroll"])
    assert torch.equal(first, model.extract(batch["mixture"], batch["enroll"]))
    model.sample_seed = 1
    assert not torch.allclose(first, model.extract(batch["mixture"], batch["enroll"]))


def test_speaker_embedding_changes_the_output():
    model = as_trained(tiny()).eval()
    batch = signals()
    other = signals(seed=5)["enroll"]
    assert not torch.allclose(model.extract(batch["mixture"], batch["enroll"]),
                              model.extract(batch["mixture"], other), atol=1e-6)


def test_stage2_follows_the_probability_schedule():
    model = tiny(emulate_inference=True, emulate_ramp_epochs=10, emulate_max_prob=0.5).train()
    assert [model.emulation_probability(e) for e in (0, 2, 5, 9, 40)] == [0.0, 0.2, 0.5, 0.5, 0.5]
    assert tiny().emulation_probability(50) == 0.0  # stage 1: never
    model.net = Echo()  # the branch logic only: a network that costs nothing
    x0, y, embedding = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4), torch.randn(1, 16)
    torch.manual_seed(3)
    draws = 400
    for epoch, expected in ((0, 0.0), (2, 0.2), (7, 0.5)):
        model.set_epoch(epoch)
        branches = []
        for _ in range(draws):
            model._x0_loss(x0, y, embedding)
            branches.append(model.last_branch)
        emulated = sum(b != "stage1" for b in branches)
        spread = 4 * math.sqrt(draws * expected * (1 - expected)) + 1
        assert abs(emulated - draws * expected) <= spread, (epoch, emulated)
        if expected:
            direct = branches.count("direct")
            assert abs(direct - emulated / 2) <= 4 * math.sqrt(emulated / 4) + 1
    model.eval()  # validation never emulates
    model._x0_loss(x0, y, embedding)
    assert model.last_branch == "stage1"


class Echo(torch.nn.Module):
    """Returns its input's first two channels."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor, time: torch.Tensor | None) -> torch.Tensor:
        return x[:, :2]


def test_objectives_give_one_finite_loss_per_example_and_gradients():
    for objective in ("ddtse", "score"):
        model = tiny(objective=objective).train()
        out = model(signals(batch=3))
        assert out["objective"].shape == (3,) and torch.isfinite(out["objective"]).all()
        out["objective"].mean().backward()
        assert all(p.grad is not None for p in model.net.parameters())


def test_direct_branch_is_weighted_at_the_batch_time(monkeypatch):
    """The authors weight the t = 1 prediction's error by w(t) at the batch's random t, not by w(1)."""
    model = tiny(emulate_inference=True, emulate_ramp_epochs=1, emulate_max_prob=1.0).train()
    model.set_epoch(5)
    model.net = Zero()
    times = torch.tensor([0.2, 0.7])
    monkeypatch.setattr(model, "_random_times", lambda size, device: times)
    x0, y, embedding = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4), torch.randn(2, 16)
    torch.manual_seed(0)
    while True:
        loss = model._x0_loss(x0, y, embedding)
        if model.last_branch == "direct":
            break
    assert torch.allclose(loss, x0.pow(2).mean(dim=(1, 2, 3)) / torch.expm1(times))


def test_first_error_is_the_samplers_first_prediction_against_the_target():
    """Validation's checkpoint metric: f(x_T, 1) with x_T = y + sigma_1 z, its MSE against x0, no gradient."""
    model = tiny(net_scale=2.0).eval()
    model.net = Echo()  # f(x_T, 1) = x_T, so the error is |y - x0|^2 + sigma_1^2 |z|^2 on average
    batch = signals(batch=2, seconds=1.0)
    out = model(batch)
    peak = model._peaks(batch["mixture"])
    y, x0 = model.stft(batch["mixture"] / peak), model.stft(batch["target"] / peak)
    expected = (y - x0).pow(2).mean(dim=(1, 2, 3)) + model.sde.std(torch.tensor(1.0)) ** 2
    assert out["first_error"].shape == (2,) and not out["first_error"].requires_grad
    assert torch.allclose(out["first_error"], expected, rtol=0.03)
    model.wanted_outputs = frozenset({"objective"})
    assert set(model(batch)) == {"objective"}  # not computed when no loss term reads it


def test_ddtse_configs_select_checkpoints_by_the_first_prediction():
    from tsekit.train.config import load_config

    for path in sorted(Path(__file__).resolve().parent.parent.glob("egs/*/conf/ddtse.yaml")):
        cfg = load_config(path)
        assert cfg.train.valid_metric == "objective@first_error", path
        assert [term.weight for term in cfg.loss if term.output == "first_error"] == [0.0], path


class Zero(torch.nn.Module):
    """Predicts zeros."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor, time: torch.Tensor | None) -> torch.Tensor:
        return torch.zeros_like(x[:, :2])


def test_x0_weighting_is_inverse_exponential():
    model = tiny()
    estimate, x0 = torch.ones(2, 2, 3, 3), torch.zeros(2, 2, 3, 3)
    t = torch.tensor([0.1, 1.0])
    assert torch.allclose(model._weighted_mse(estimate, x0, t), 1 / torch.expm1(t))
    assert torch.allclose(tiny(loss_weighting="none")._weighted_mse(estimate, x0, t), torch.ones(2))


def test_models_that_cannot_refine_say_so():
    zspex = build_model("spex_plus", {"sample_rate": RATE, "num_filters": 16, "channels": 16, "hidden_channels": 16,
                                      "num_blocks": 1, "num_stacks": 1, "embed_dim": 16, "speaker_hidden": 16,
                                      "speaker_blocks": 1, "num_speakers": 2})
    with pytest.raises(TsekitError, match="cannot refine"):
        zspex.refine(torch.zeros(1, 100), {"enroll": torch.zeros(1, 100)}, torch.zeros(1, 100))


def test_short_enrollment_is_refused_with_the_file_named():
    model = tiny(min_enroll_seconds=1.0)
    with pytest.raises(TsekitError, match=r"data/test/enroll.scp: u1.*0\.50 s.*1\.00 s"):
        model.check_enrollment(8000, "data/test/enroll.scp: u1")


def test_tiny_model_learns_one_batch():
    model = tiny(concat_mixture=True, net_scale=6.667).train()
    model.wanted_outputs = frozenset({"objective"})  # as the trainer sets it for a config without first_error
    batch = signals(batch=2, seconds=0.2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        torch.manual_seed(0)  # the same diffusion time and noise every step: only the weights change
        loss = model(batch)["objective"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # from the zero output of a fresh U-Net (its last layers start at zero) the loss falls slowly at first
    assert losses[-1] < 0.6 * losses[0]


def test_net_scale_preconditions_the_network_and_scales_x0_back():
    x, y, t, embedding = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4), torch.ones(1), torch.randn(1, 16)
    for scale in (1.0, 6.5):
        model = tiny(net_scale=scale)
        model.net = Echo()
        assert torch.allclose(model._x0(x, y, t, embedding), x)  # an identity network stays the identity
        seen: list[torch.Tensor] = []
        model.net.register_forward_hook(lambda module, args, out, seen=seen: seen.append(args[0]))
        model._x0(x, y, t, embedding)
        assert torch.allclose(seen[0], scale * x)


def test_refine_start_keeps_more_of_the_estimate():
    model = tiny(steps=4).eval()
    model.net = Echo()  # x0 = x_t: what a step keeps of the estimate is the forward process's mean
    batch = signals()
    estimate = batch["target"]
    distances = {}
    for start in (1.0, 0.2):
        refined = model.refine(batch["mixture"], {"enroll": batch["enroll"]}, estimate, start=start)
        distances[start] = (refined - estimate).pow(2).mean().item()
    assert distances[0.2] < 0.5 * distances[1.0]
    with pytest.raises(TsekitError, match=r"--refine-start must be in \(0.03, 1\]"):
        model.refine(batch["mixture"], {"enroll": batch["enroll"]}, estimate, start=0.01)
