"""SpEx+ and Z-SpEx: registry, shapes, gradients, enrollment padding, published size, weight sharing, learning."""

from __future__ import annotations

import pytest
import torch

from tsekit import TsekitError
from tsekit.models import MODELS, build_model
from tsekit.models.layers.scaleinter import ScaleFuser, ScaleInterMaskGenerator
from tsekit.models.layers.tcn import SpeakerModulation
from tsekit.models.registry import model_params

SYSTEMS = ["spex_plus", "zspex"]
SAMPLE_RATE = 8000
TINY = {"sample_rate": SAMPLE_RATE, "num_filters": 16, "channels": 16, "hidden_channels": 32, "num_blocks": 2,
        "num_stacks": 2, "embed_dim": 8, "speaker_hidden": 16, "num_speakers": 5}
TINY_EXTRA = {"zspex": {"scaleinter_hidden": 8, "modulation_hidden": 8}}


def tiny(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, {**TINY, **TINY_EXTRA.get(name, {})})


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Scale-invariant SDR in dB per row (zero-mean signals, target = projection onto the reference)."""
    estimate = estimate - estimate.mean(-1, keepdim=True)
    reference = reference - reference.mean(-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + 1e-8)
    target = scale * reference
    return 10 * torch.log10(target.pow(2).sum(-1) / ((estimate - target).pow(2).sum(-1) + 1e-8) + 1e-8)


def make_batch(mix_len: int = 4001, enroll_lens: tuple[int, int] = (3333, 2500), seed: int = 1) -> dict:
    """Batch of 2: mixture = target + interferer; enrollments zero-padded to the longest, true lengths given."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(2, mix_len, generator=g)
    mixture = target + torch.randn(2, mix_len, generator=g)
    enroll = torch.zeros(2, max(enroll_lens))
    for i, n in enumerate(enroll_lens):
        enroll[i, :n] = torch.randn(n, generator=g)
    return {"mixture": mixture, "target": target, "enroll": enroll,
            "enroll_lengths": torch.tensor(enroll_lens), "speaker": torch.tensor([1, 3])}


def test_registry_has_both_systems_with_keyword_params():
    assert set(SYSTEMS) <= set(MODELS)
    for name in SYSTEMS:
        assert MODELS[name].needs == frozenset({"target", "enroll", "speaker"})
        assert all(p.kind == p.KEYWORD_ONLY for p in model_params(name).values())


@pytest.mark.parametrize("name", SYSTEMS)
@pytest.mark.parametrize("mix_len", [4001, 4007, 13])
def test_forward_shapes_for_lengths_not_divisible_by_hop(name, mix_len):
    model = tiny(name)
    out = model(make_batch(mix_len=mix_len))
    assert set(out) == {"estimate", "estimate_middle", "estimate_long", "speaker_logits"}
    for key in ("estimate", "estimate_middle", "estimate_long"):
        assert out[key].shape == (2, mix_len)
    assert out["speaker_logits"].shape == (2, TINY["num_speakers"])


def spex_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    out = model(batch)
    loss = -sum(si_sdr(out[k], batch["target"]).mean() * w
                for k, w in (("estimate", 0.8), ("estimate_middle", 0.1), ("estimate_long", 0.1)))
    return loss + 0.5 * torch.nn.functional.cross_entropy(out["speaker_logits"], batch["speaker"])


@pytest.mark.parametrize("name", SYSTEMS)
def test_backward_reaches_every_parameter(name):
    model = tiny(name)
    batch = make_batch()
    # ConSM's scale and shift start at zero, so the layers before them get gradient from the second step on
    spex_loss(model, batch).backward()
    torch.optim.SGD(model.parameters(), lr=1e-2).step()
    model.zero_grad()
    spex_loss(model, batch).backward()
    prelu_slopes = {f"{m}.weight" for m, mod in model.named_modules() if isinstance(mod, torch.nn.PReLU)}
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        # a PReLU slope learns only from negative inputs that reach the loss; after max pooling in the
        # speaker encoder a tiny batch may have none, so a zero gradient there is no wiring fault
        if pname not in prelu_slopes:
            assert p.grad.abs().sum() > 0, f"{pname} gets no gradient"


@pytest.mark.parametrize("name", SYSTEMS)
def test_padded_enrollment_gives_the_unpadded_embedding_and_output(name):
    model = tiny(name).eval()
    batch = make_batch(enroll_lens=(2500, 3900))
    short_alone = batch["enroll"][:1, :2500]
    with torch.no_grad():
        batched = model.speaker_embedding(batch["enroll"], batch["enroll_lengths"])
        alone = model.speaker_embedding(short_alone, torch.tensor([2500]))
        ignoring_lengths = model.speaker_embedding(batch["enroll"], torch.tensor([3900, 3900]))
        out_batched = model(batch)
        out_alone = model({"mixture": batch["mixture"][:1], "enroll": short_alone,
                           "enroll_lengths": torch.tensor([2500])})
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-4, atol=1e-5)
    # the check is sensitive: counting the padded frames as speech changes the embedding
    assert not torch.allclose(ignoring_lengths[0], alone[0], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(out_batched["estimate"][0], out_alone["estimate"][0], rtol=1e-4, atol=1e-5)


def test_very_short_enrollment_still_gives_an_embedding():
    model = tiny("spex_plus").eval()
    with torch.no_grad():
        emb = model.speaker_embedding(torch.randn(2, 50), torch.tensor([50, 30]))
    assert emb.shape == (2, TINY["embed_dim"]) and torch.isfinite(emb).all()


def test_published_spex_plus_size():
    model = build_model("spex_plus")
    count = sum(p.numel() for p in model.parameters())
    # 11,138,734 with the published configuration (101 WSJ0-2mix speakers); the paper says 11.1 M
    assert abs(count - 11.1e6) / 11.1e6 < 0.02, count
    assert model.encoder.windows == [20, 80, 160] and model.encoder.stride == 10


def test_windows_are_given_in_milliseconds():
    model = build_model("spex_plus", {**TINY, "sample_rate": 16000})
    assert model.encoder.windows == [40, 160, 320] and model.encoder.stride == 20
    with pytest.raises(TsekitError, match="even short window"):
        build_model("spex_plus", {"short_window_ms": 0.375})  # 3 samples at 8 kHz: no integer hop


def test_zspex_fuser_is_one_instance_applied_to_mixture_and_enrollment():
    model = tiny("zspex")
    fusers = [m for _, m in model.named_modules(remove_duplicate=False) if isinstance(m, ScaleFuser)]
    assert len(fusers) == 1 and fusers[0] is model.fuser
    seen_frames = []
    model.fuser.register_forward_hook(lambda mod, args, out: seen_frames.append(out.shape[-1]))
    batch = make_batch(mix_len=4001, enroll_lens=(3333, 2500))
    model(batch)
    frames = model.encoder.num_frames(torch.tensor([3333, 4001])).tolist()
    assert sorted(seen_frames) == sorted(frames)  # once on the enrollment, once on the mixture
    # the speaker loss alone trains the fuser that the extractor uses
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(batch)["speaker_logits"], batch["speaker"]).backward()
    assert model.fuser.merge.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", SYSTEMS)
def test_tiny_model_learns_one_batch(name):
    model = tiny(name)
    batch = make_batch(mix_len=SAMPLE_RATE // 2, enroll_lens=(SAMPLE_RATE // 2, 3000))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = -si_sdr(model(batch)["estimate"], batch["target"]).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 5.0, losses  # -SI-SDR drops by > 5 dB (about 25 dB in practice)


@pytest.mark.parametrize("name", SYSTEMS)
def test_extract_matches_forward(name):
    model = tiny(name).eval()
    batch = make_batch(enroll_lens=(3000, 3000))
    estimate = model.extract(batch["mixture"], batch["enroll"])
    assert estimate.shape == batch["mixture"].shape
    with torch.no_grad():
        torch.testing.assert_close(estimate, model(batch)["estimate"])


def test_unknown_parameter_is_an_error():
    with pytest.raises(TsekitError, match="unknown parameter 'num_layers'"):
        build_model("spex_plus", {"num_layers": 3})
    with pytest.raises(TsekitError, match="num_stacks must be a positive integer"):
        build_model("zspex", {"num_stacks": 0})


def test_consm_modules_are_the_identity_at_initialisation():
    model = tiny("zspex")
    modulations = [m for m in model.modules() if isinstance(m, SpeakerModulation)]
    assert len(modulations) == TINY["num_stacks"]
    features, embedding = torch.randn(2, TINY["channels"], 50), torch.randn(2, TINY["embed_dim"])
    for modulation in modulations:
        torch.testing.assert_close(modulation(features, embedding), features, rtol=0, atol=0)
    # and they learn away from it: one step of training moves them off the identity
    spex_loss(model, make_batch()).backward()
    torch.optim.SGD(model.parameters(), lr=1e-2).step()
    assert not torch.allclose(modulations[0](features, embedding), features)


def test_each_mask_sees_its_own_scale():
    """With the three scales' weights made equal, the masks still differ: each scale has its own input."""
    torch.manual_seed(0)
    generator = ScaleInterMaskGenerator(channels=6, num_filters=5, hidden=4)
    for modules in (generator.scale_norms, generator.interaction.norms, generator.interaction.projections,
                    generator.to_masks):
        for module in modules[1:]:
            module.load_state_dict(modules[0].state_dict())
    features = torch.randn(2, 6, 30)
    scales = [torch.rand(2, 5, 30) for _ in range(3)]
    masks = generator(features, scales)
    assert [m.shape for m in masks] == [(2, 5, 30)] * 3
    assert (masks[0] - masks[1]).abs().max() > 1e-3 and (masks[1] - masks[2]).abs().max() > 1e-3
    # the same scale stream three times gives three equal masks: the difference comes from the scales
    same = generator(features, [scales[0]] * 3)
    torch.testing.assert_close(same[1], same[0])
    torch.testing.assert_close(same[2], same[0])


def test_mask_inputs_extractor_is_the_earlier_generator_that_ignores_the_scales():
    torch.manual_seed(0)
    generator = ScaleInterMaskGenerator(channels=6, num_filters=5, hidden=4, scale_inputs=False)
    features = torch.randn(2, 6, 30)
    first = generator(features, [torch.rand(2, 5, 30) for _ in range(3)])
    second = generator(features, [torch.rand(2, 5, 30) for _ in range(3)])
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b)
    model = build_model("zspex", {**TINY, **TINY_EXTRA["zspex"], "mask_inputs": "extractor"})
    assert not model.mask_generator.scale_inputs and model(make_batch())["estimate"].shape == (2, 4001)
    with pytest.raises(TsekitError, match="mask_inputs must be one of scales, extractor, got 'both'"):
        build_model("zspex", {**TINY, **TINY_EXTRA["zspex"], "mask_inputs": "both"})
