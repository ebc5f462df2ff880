"""Training losses: SI-SDR / SNR against numpy formulas and torchmetrics, masking, gradients, CE, weighting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tsekit import TsekitError
from tsekit.train.config import LossTerm, spex_plus_loss
from tsekit.train.losses import LOSSES, compute_loss, loss_function

torchmetrics_audio = pytest.importorskip("torchmetrics.functional.audio")

SI_SDR = LossTerm("si_sdr", "estimate", 1.0)
SNR = LossTerm("snr", "estimate", 1.0)


def numpy_si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Zero-mean SI-SDR in float64, written from the definition (Le Roux et al. 2019)."""
    estimate = estimate - estimate.mean()
    reference = reference - reference.mean()
    projection = np.dot(estimate, reference) / np.dot(reference, reference) * reference
    return 10 * np.log10(np.sum(projection**2) / np.sum((estimate - projection) ** 2))


def scenes(batch: int = 6, samples: int = 4000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """References and estimates from about -10 to +30 dB, with an offset (so zero-mean matters) and a gain."""
    rng = np.random.default_rng(seed)
    reference = rng.standard_normal((batch, samples))
    noise = rng.standard_normal((batch, samples))
    levels = np.linspace(-10, 30, batch)[:, None]
    estimate = 0.7 * reference + noise * 10 ** (-levels / 20) + 0.3
    return torch.tensor(estimate, dtype=torch.float32), torch.tensor(reference, dtype=torch.float32)


def test_si_sdr_matches_numpy_and_torchmetrics():
    estimate, reference = scenes()
    loss = loss_function("si_sdr")({"estimate": estimate}, {"target": reference}, SI_SDR)
    assert loss.shape == (6,)
    expected = [numpy_si_sdr(e.double().numpy(), r.double().numpy()) for e, r in zip(estimate, reference, strict=True)]
    np.testing.assert_allclose(-loss.numpy(), expected, atol=2e-3)
    metric = torchmetrics_audio.scale_invariant_signal_distortion_ratio(estimate, reference, zero_mean=True)
    np.testing.assert_allclose(-loss.numpy(), metric.numpy(), atol=2e-3)
    assert np.ptp(expected) > 30  # the scenes really span a range of qualities


def test_si_sdr_is_scale_and_offset_invariant_but_snr_is_not():
    estimate, reference = scenes()
    fn_si, fn_snr = loss_function("si_sdr"), loss_function("snr")
    base = fn_si({"estimate": estimate}, {"target": reference}, SI_SDR)
    moved = fn_si({"estimate": 4 * estimate - 1}, {"target": reference}, SI_SDR)
    torch.testing.assert_close(moved, base, atol=1e-3, rtol=0)
    snr_base = fn_snr({"estimate": estimate}, {"target": reference}, SNR)
    snr_scaled = fn_snr({"estimate": 4 * estimate}, {"target": reference}, SNR)
    assert (snr_scaled - snr_base).abs().min() > 1


def test_snr_matches_torchmetrics():
    estimate, reference = scenes(seed=1)
    loss = loss_function("snr")({"estimate": estimate}, {"target": reference}, SNR)
    metric = torchmetrics_audio.signal_noise_ratio(estimate, reference)
    np.testing.assert_allclose(-loss.numpy(), metric.numpy(), atol=2e-3)


@pytest.mark.parametrize("name", ["si_sdr", "snr"])
def test_padding_is_ignored(name):
    term = LossTerm(name, "estimate", 1.0)
    estimate, reference = scenes(batch=3, samples=3000, seed=2)
    lengths = torch.tensor([3000, 1800, 700])
    alone = torch.stack([
        loss_function(name)({"estimate": estimate[i:i + 1, :n]}, {"target": reference[i:i + 1, :n]}, term)[0]
        for i, n in enumerate(lengths.tolist())])
    # garbage after each example's length in both signals must not change anything
    padded_estimate, padded_reference = estimate.clone(), reference.clone()
    for i, n in enumerate(lengths.tolist()):
        padded_estimate[i, n:] = 50.0
        padded_reference[i, n:] = -20.0
    padded_estimate.requires_grad_(True)
    masked = loss_function(name)({"estimate": padded_estimate},
                                 {"target": padded_reference, "lengths": lengths}, term)
    torch.testing.assert_close(masked, alone, atol=1e-4, rtol=0)
    unmasked = loss_function(name)({"estimate": padded_estimate}, {"target": padded_reference}, term)
    assert (unmasked[1:] - alone[1:]).abs().min() > 1  # without lengths the padding would count
    masked.sum().backward()
    assert padded_estimate.grad[1, 1800:].abs().max() == 0 and padded_estimate.grad[2, 700:].abs().max() == 0
    assert padded_estimate.grad[1, :1800].abs().max() > 0


def test_longer_output_is_compared_over_the_reference_length():
    estimate, reference = scenes(batch=2)
    longer = torch.cat([estimate, torch.full((2, 40), 9.0)], dim=1)
    fn = loss_function("si_sdr")
    torch.testing.assert_close(fn({"estimate": longer}, {"target": reference}, SI_SDR),
                               fn({"estimate": estimate}, {"target": reference}, SI_SDR))


@pytest.mark.parametrize("name", ["si_sdr", "snr"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zero_estimate_gives_finite_loss_and_gradient(name, dtype):
    _, reference = scenes(batch=2)
    estimate = torch.zeros(2, reference.shape[1], dtype=dtype, requires_grad=True)
    loss = loss_function(name)({"estimate": estimate}, {"target": reference.to(dtype)},
                               LossTerm(name, "estimate", 1.0))
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(estimate.grad).all()


def test_si_sdr_gradient_improves_the_estimate():
    estimate, reference = scenes(batch=2, seed=3)
    estimate = estimate.clone().requires_grad_(True)
    fn = loss_function("si_sdr")
    before = fn({"estimate": estimate}, {"target": reference}, SI_SDR)
    before.sum().backward()
    with torch.no_grad():
        after = fn({"estimate": estimate - 0.5 * estimate.grad / estimate.grad.norm()}, {"target": reference}, SI_SDR)
    assert (after < before).all()


def test_speaker_ce_per_example_and_unknown_speakers():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, requires_grad=True)
    speaker = torch.tensor([0, 4, 2, -100])  # -100: a speaker outside the training list (dataset.py)
    term = LossTerm("speaker_ce", "speaker_logits", 0.5)
    loss = loss_function("speaker_ce")({"speaker_logits": logits}, {"speaker": speaker}, term)
    expected = F.cross_entropy(logits[:3], speaker[:3], reduction="none")
    torch.testing.assert_close(loss[:3], expected)
    assert loss[3] == 0
    loss.sum().backward()
    assert logits.grad[3].abs().max() == 0 and logits.grad[0].abs().max() > 0


def test_speaker_index_beyond_the_logits_is_a_clear_error():
    term = LossTerm("speaker_ce", "speaker_logits", 0.5)
    with pytest.raises(TsekitError, match=r"speaker index 7 but the model has only 5 speaker logits; "
                                          r"set model.params.num_speakers"):
        loss_function("speaker_ce")({"speaker_logits": torch.zeros(2, 5)}, {"speaker": torch.tensor([1, 7])}, term)


def test_compute_loss_weights_and_labels_of_the_spex_plus_terms():
    estimate, reference = scenes(batch=3, seed=4)
    outputs = {"estimate": estimate, "estimate_middle": 0.5 * estimate + 0.2 * torch.randn_like(estimate),
               "estimate_long": torch.randn_like(estimate), "speaker_logits": torch.randn(3, 7)}
    batch = {"target": reference, "speaker": torch.tensor([1, 6, 0]), "lengths": torch.tensor([4000, 3000, 2000])}
    total, parts = compute_loss(outputs, batch, spex_plus_loss())
    assert list(parts) == ["si_sdr@estimate", "si_sdr@estimate_middle", "si_sdr@estimate_long",
                           "speaker_ce@speaker_logits"]
    expected_parts = {term.label: float(LOSSES[term.name](outputs, batch, term).mean()) for term in spex_plus_loss()}
    assert parts == pytest.approx(expected_parts, abs=1e-5)
    weighted = 0.8 * parts["si_sdr@estimate"] + 0.1 * parts["si_sdr@estimate_middle"] \
        + 0.1 * parts["si_sdr@estimate_long"] + 0.5 * parts["speaker_ce@speaker_logits"]
    assert total.dim() == 0 and float(total) == pytest.approx(weighted, abs=1e-4)
    assert len(set(parts.values())) == 4  # four different numbers: each term looked at its own output


def test_compute_loss_backpropagates_to_every_output():
    estimate, reference = scenes(batch=2, seed=5)
    outputs = {"estimate": estimate.clone().requires_grad_(True),
               "speaker_logits": torch.randn(2, 3, requires_grad=True)}
    terms = [LossTerm("si_sdr", "estimate", 1.0), LossTerm("speaker_ce", "speaker_logits", 0.5)]
    total, _ = compute_loss(outputs, {"target": reference, "speaker": torch.tensor([0, 2])}, terms)
    total.backward()
    assert all(torch.isfinite(t.grad).all() and t.grad.abs().max() > 0 for t in outputs.values())


def test_missing_output_and_unknown_loss_are_clear_errors():
    estimate, reference = scenes(batch=2)
    with pytest.raises(TsekitError, match=r"needs model output 'estimate_middle', which is absent; present: estimate"):
        compute_loss({"estimate": estimate}, {"target": reference}, [LossTerm("si_sdr", "estimate_middle", 1.0)])
    with pytest.raises(TsekitError,
                       match=r"unknown loss 'l1'; valid losses: distill, objective, si_sdr, snr, speaker_ce, tsnr"):
        compute_loss({"estimate": estimate}, {"target": reference}, [LossTerm("l1", "estimate", 1.0)])
    with pytest.raises(TsekitError, match=r"expected \(batch, samples\) signals"):
        compute_loss({"estimate": estimate[:, None]}, {"target": reference}, [SI_SDR])


def test_skip_missing_leaves_out_terms_without_their_inputs():
    estimate, reference = scenes(batch=2)
    outputs, batch = {"estimate": estimate}, {"target": reference}  # no speaker logits, no speaker labels
    total, parts = compute_loss(outputs, batch, spex_plus_loss()[:1] + spex_plus_loss()[3:], skip_missing=True)
    assert list(parts) == ["si_sdr@estimate"] and float(total) == pytest.approx(0.8 * parts["si_sdr@estimate"])
    with pytest.raises(TsekitError, match="no loss term could be computed"):
        compute_loss(outputs, batch, spex_plus_loss()[3:], skip_missing=True)


TSNR = LossTerm("tsnr", "estimate", 1.0)


def tsnr(estimate: torch.Tensor, reference: torch.Tensor, mixture: torch.Tensor, **batch) -> torch.Tensor:
    return loss_function("tsnr")({"estimate": estimate}, {"target": reference, "mixture": mixture, **batch}, TSNR)


def test_tsnr_is_the_snr_on_speaking_targets_eased_off_near_snr_max():
    _, reference = scenes(batch=4)
    error = torch.randn_like(reference)
    levels = torch.tensor([0.0, 10.0, 30.0, 50.0])  # SNRs in dB
    estimate = reference + error * (reference.norm(dim=1) / error.norm(dim=1) * 10 ** (-levels / 20))[:, None]
    mixture = reference + torch.randn_like(reference)
    snr = loss_function("snr")({"estimate": estimate}, {"target": reference}, SNR)
    torch.testing.assert_close(-snr, levels, atol=1e-3, rtol=0)
    thresholded = tsnr(estimate, reference, mixture)
    # 10 log10(10^(-SNR/10) + 10^(-3)) from the definition: the SNR where it is low, bounded by 30 dB
    expected = 10 * torch.log10(10 ** (snr / 10) + 1e-3)
    torch.testing.assert_close(thresholded, expected, atol=1e-3, rtol=0)
    assert (thresholded - snr)[:2].abs().max() < 0.05 and (thresholded - snr)[3] > 19
    assert tsnr(reference, reference, mixture) == pytest.approx(torch.full((4,), -30.0), abs=1e-3)
    scaled = tsnr(4 * estimate, reference, mixture)  # not scale invariant: the output level is learnt
    assert (scaled - thresholded).abs().min() > 1


def test_tsnr_on_silent_targets_is_the_output_energy_below_the_mixture_floored_at_silent_snr_max():
    _, mixture = scenes(batch=3)
    silence = torch.zeros_like(mixture)
    levels = torch.tensor([0.0, -20.0, -60.0])  # outputs 0, 20 and 60 dB under the mixture
    estimate = mixture * 10 ** (levels[:, None] / 20)
    loss = tsnr(estimate, silence, mixture)
    # FUSS's zero-reference threshold, 20 dB, apart from the 30 dB of speaking targets
    torch.testing.assert_close(loss, 10 * torch.log10(10 ** (levels / 10) + 1e-2), atol=1e-3, rtol=0)
    assert tsnr(torch.zeros_like(mixture), silence, mixture) == pytest.approx(torch.full((3,), -20.0), abs=1e-3)
    deeper = LossTerm("tsnr", "estimate", 1.0, silent_snr_max=50.0)
    assert loss_function("tsnr")({"estimate": estimate}, {"target": silence, "mixture": mixture}, deeper)[2] < -49


def test_tsnr_silent_weight_scales_only_the_silent_targets():
    estimate, reference = scenes(batch=4, seed=3)
    mixture = reference + torch.randn_like(reference)
    reference[2] = 0.0
    light = LossTerm("tsnr", "estimate", 1.0, silent_weight=0.2)
    weighted = loss_function("tsnr")({"estimate": estimate}, {"target": reference, "mixture": mixture}, light)
    plain = tsnr(estimate, reference, mixture)
    torch.testing.assert_close(weighted[[0, 1, 3]], plain[[0, 1, 3]])
    torch.testing.assert_close(weighted[2], 0.2 * plain[2])
    assert plain[2].abs() > 0.1


def test_tsnr_on_a_batch_of_present_and_absent_targets_is_finite_and_lowers_the_absent_output():
    estimate, reference = scenes(batch=4, seed=5)
    mixture = reference + torch.randn_like(reference)
    reference[1] = 0.0  # absent targets among present ones
    reference[3] = 0.0
    estimate = estimate.clone().requires_grad_(True)
    loss = tsnr(estimate, reference, mixture)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(estimate.grad).all()
    with torch.no_grad():
        stepped = estimate - 0.5 * estimate.grad / estimate.grad.norm(dim=1, keepdim=True)
        after = tsnr(stepped, reference, mixture)
    assert (after < loss).all()
    assert (stepped[[1, 3]].pow(2).sum(1) < estimate[[1, 3]].pow(2).sum(1)).all()  # absent outputs quieter
    # silence (a zero output, a zero target, padding): finite value and gradient, not log(0 / 0)
    zero = torch.zeros(2, 100, requires_grad=True)
    value = tsnr(zero, torch.zeros(2, 100), torch.zeros(2, 100), lengths=torch.tensor([100, 0]))
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(zero.grad).all()
