"""TF-GridNet pos/neg systems and their teacher: shapes, causality, padding, gradients, learning, freezing, size."""

from __future__ import annotations

import pytest
import torch

from tsekit import TsekitError
from tsekit.models.layers.tfgridnet import causal_mask, rms_level, running_level
from tsekit.models.registry import MODELS, build_model, model_params
from tsekit.models.tfgridnet_posneg import pool_cue
from tsekit.train.config import LossTerm
from tsekit.train.losses import feature_distillation, negative_si_sdr, negative_snr

SYSTEMS = ["tfgridnet_posneg", "tfgridnet_posneg_early"]
N_FFT, HOP = 32, 16
FREQS = N_FFT // 2 + 1
TINY = {"n_fft": N_FFT, "hop": HOP, "embed_dim": 8, "lstm_hidden": 8, "heads": 2, "attention_dim": 4,
        "num_blocks": 2, "enroll_blocks": 1, "enroll_kernel_size": 2, "head_layers": 2}
TINY_EXTRA = {"tfgridnet_posneg": {"cue_pool": 4, "attention_context": 10}, "tfgridnet_posneg_early": {}}
TINY_TEACHER = {"n_fft": N_FFT, "hop": HOP, "embed_dim": 8, "lstm_hidden": 8, "heads": 2, "attention_dim": 4,
                "num_blocks": 1, "kernel_size": 2, "speaker_dim": 6, "num_speakers": 5}
SNR = LossTerm("snr")
SI_SDR = LossTerm("si_sdr")
DISTILL = LossTerm("distill", "cue", target="teacher_features")


def distillation_loss(outputs: dict, teacher: torch.nn.Module, batch: dict) -> torch.Tensor:
    """What the trainer computes in stage 1: the teacher's targets join the batch, the distill loss compares."""
    return feature_distillation(outputs, {**batch, **teacher.distillation_targets(batch)}, DISTILL).mean()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(name: str, seed: int = 0, **params) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, {**TINY, **TINY_EXTRA[name], **params})


def tiny_teacher(seed: int = 5, **params) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("tfgridnet_speaker", {**TINY_TEACHER, **params})


def make_batch(channels: int = 1, mix_len: int = 1600, pos_lens: tuple[int, int] = (1200, 900),
               neg_lens: tuple[int, int] = (1000, 700), seed: int = 1) -> dict[str, torch.Tensor]:
    """Batch of 2: mixture = target + interferer; enrollments zero-padded to the longest with their lengths."""
    g = torch.Generator().manual_seed(seed)
    shape = (2, channels) if channels > 1 else (2,)

    def padded(lens: tuple[int, int]) -> torch.Tensor:
        wave = torch.zeros(*shape, max(lens))
        for i, n in enumerate(lens):
            wave[i, ..., :n] = torch.randn(*shape[1:], n, generator=g)
        return wave

    target = torch.randn(2, mix_len, generator=g)
    source = target.unsqueeze(1).expand(2, channels, mix_len) if channels > 1 else target
    enroll_clean = padded(pos_lens)
    interferer = padded(pos_lens)
    return {"mixture": source + torch.randn(*shape, mix_len, generator=g), "target": target,
            "enroll_pos": enroll_clean + interferer, "enroll_pos_lengths": torch.tensor(pos_lens),
            "enroll_neg": padded(neg_lens), "enroll_neg_lengths": torch.tensor(neg_lens),
            "enroll_clean": enroll_clean, "enroll": enroll_clean, "enroll_lengths": torch.tensor(pos_lens),
            "speaker": torch.tensor([1, 3])}


def frames_of(samples: int) -> int:
    return samples // HOP + 1


def test_registry_keyword_params_and_needs():
    for name in [*SYSTEMS, "tfgridnet_speaker"]:
        assert name in MODELS
        assert all(p.kind == p.KEYWORD_ONLY for p in model_params(name).values())
    for name in SYSTEMS:
        assert MODELS[name].needs == frozenset({"target", "enroll_pos", "enroll_neg"})
        assert MODELS[name].distill_needs == frozenset({"enroll_clean"})
    assert MODELS["tfgridnet_speaker"].needs == frozenset({"enroll", "speaker"})


@pytest.mark.parametrize("name", SYSTEMS)
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("mix_len", [1600, 1607])
def test_output_shapes(name, channels, mix_len):
    model = tiny(name, channels=channels)
    out = model(make_batch(channels, mix_len))
    assert set(out) == {"estimate", "cue"}
    assert out["estimate"].shape == (2, mix_len)
    assert out["cue"].shape == (2, TINY["embed_dim"], frames_of(1200), FREQS)
    assert torch.isfinite(out["estimate"]).all() and torch.isfinite(out["cue"]).all()


@pytest.mark.parametrize("channels", [1, 2])
def test_teacher_shapes_match_the_cue(channels):
    batch = make_batch(channels)
    out = tiny_teacher(channels=channels)(batch)
    assert out["features"].shape == tiny("tfgridnet_posneg", channels=channels)(batch)["cue"].shape
    assert out["embedding"].shape == (2, TINY_TEACHER["speaker_dim"])
    assert out["speaker_logits"].shape == (2, TINY_TEACHER["num_speakers"])


def test_bad_inputs_and_sizes_are_clear_errors():
    with pytest.raises(TsekitError, match="channels=2"):
        tiny("tfgridnet_posneg", channels=2)(make_batch(channels=1))
    with pytest.raises(TsekitError, match="fusion_blocks"):
        build_model("tfgridnet_posneg", {**TINY, "fusion_blocks": 3})
    with pytest.raises(TsekitError, match="hop"):
        build_model("tfgridnet_posneg_early", {**TINY, "hop": 17})
    with pytest.raises(TsekitError, match="attention_context"):
        build_model("tfgridnet_posneg", {**TINY, "attention_context": -1})


def test_causal_mask_with_and_without_a_context_limit():
    assert causal_mask(4, 0, torch.device("cpu")).int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0],
                                                                      [1, 1, 1, 1]]
    assert causal_mask(4, 2, torch.device("cpu")).int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0],
                                                                      [0, 0, 1, 1]]


def perturbed_estimates(model: torch.nn.Module, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = make_batch()
    changed = dict(batch, mixture=batch["mixture"].clone())
    changed["mixture"][:, start:] += torch.randn(2, batch["mixture"].shape[1] - start,
                                                 generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        return model(batch)["estimate"], model(changed)["estimate"]


@pytest.mark.parametrize("name", SYSTEMS)
@pytest.mark.parametrize("kernel", [(1, 1), (3, 2)])
@pytest.mark.parametrize("level_norm", ["running", "none"])
def test_causal_extractor_ignores_the_future(name, kernel, level_norm):
    start = 1000
    model = tiny(name, causal=True, kernel_size=kernel[0], kernel_stride=kernel[1], level_norm=level_norm).eval()
    before, after = perturbed_estimates(model, start)
    # a sample at or after `start` reaches only frames whose window covers it, i.e. outputs after start - N_FFT
    torch.testing.assert_close(after[:, :start - N_FFT], before[:, :start - N_FFT], rtol=0, atol=1e-5)
    assert (after[:, start:] - before[:, start:]).abs().max() > 1e-3


def test_running_level_is_the_rms_so_far():
    wave = torch.randn(2, 3, 500, generator=torch.Generator().manual_seed(3))
    level = running_level(wave)
    assert level.shape == (2, 1, 500)
    for t in (0, 17, 499):
        expected = wave[..., : t + 1].pow(2).mean(dim=(1, 2)).sqrt()
        torch.testing.assert_close(level[:, 0, t], expected)
    changed = wave.clone()
    changed[..., 300:] *= 5  # the future does not move the level of the past
    torch.testing.assert_close(running_level(changed)[..., :300], level[..., :300], rtol=0, atol=0)
    # over a whole zero-mean stationary signal it ends near the utterance level
    torch.testing.assert_close(level[:, 0, -1], rms_level(wave)[:, 0, 0], rtol=0.05, atol=0)


@pytest.mark.parametrize("name", SYSTEMS)
def test_causal_level_normalisation_makes_the_estimate_follow_the_input_level(name):
    """With the running level the extractor sees one scale: 10x the input gives 10x the estimate."""
    batch = make_batch()
    louder = dict(batch, mixture=10 * batch["mixture"])
    for level_norm, follows in (("running", True), ("none", False)):
        model = tiny(name, causal=True, level_norm=level_norm).eval()
        with torch.no_grad():
            quiet, loud = model(batch)["estimate"], model(louder)["estimate"]
        assert torch.allclose(loud, 10 * quiet, rtol=1e-3, atol=1e-5) is follows, level_norm


def test_level_norm_choices_are_checked():
    with pytest.raises(TsekitError, match="level_norm utterance needs the whole mixture"):
        tiny("tfgridnet_posneg", causal=True, level_norm="utterance")
    with pytest.raises(TsekitError, match="level_norm must be one of utterance, running, none"):
        tiny("tfgridnet_posneg_early", level_norm="rms")
    assert tiny("tfgridnet_posneg", causal=True).extractor.level_norm == "running"
    assert tiny("tfgridnet_posneg_early", causal=False).extractor.level_norm == "utterance"


@pytest.mark.parametrize("name", SYSTEMS)
def test_offline_extractor_does_look_ahead(name):
    """The same probe on the non-causal extractor: the past changes, so the causal test can fail."""
    start = 1000
    before, after = perturbed_estimates(tiny(name, causal=False).eval(), start)
    assert (after[:, :start - N_FFT] - before[:, :start - N_FFT]).abs().max() > 1e-3


@pytest.mark.parametrize("name", SYSTEMS)
@pytest.mark.parametrize("enroll_kernel", [(2, 1), (3, 2)])
def test_padded_enrollments_give_the_unpadded_cue_and_estimate(name, enroll_kernel):
    model = tiny(name, causal=False, enroll_kernel_size=enroll_kernel[0],
                 enroll_kernel_stride=enroll_kernel[1]).eval()
    batch = make_batch(pos_lens=(1200, 907), neg_lens=(1000, 650))
    alone = {"mixture": batch["mixture"][1:], "enroll_pos": batch["enroll_pos"][1:, :907],
             "enroll_pos_lengths": torch.tensor([907]), "enroll_neg": batch["enroll_neg"][1:, :650],
             "enroll_neg_lengths": torch.tensor([650])}
    ignoring_lengths = {k: v for k, v in batch.items() if not k.endswith("_lengths")}
    with torch.no_grad():
        batched, single, careless = model(batch), model(alone), model(ignoring_lengths)
    valid = frames_of(907)
    assert single["cue"].shape[2] == valid
    torch.testing.assert_close(batched["cue"][1, :, :valid], single["cue"][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched["estimate"][1], single["estimate"][0], rtol=1e-4, atol=1e-5)
    # the check is sensitive: treating the padding as signal changes the cue
    assert (careless["cue"][1, :, :valid] - single["cue"][0]).abs().max() > 1e-3


def test_pool_cue_averages_valid_frames_per_window():
    cue = torch.arange(2 * 1 * 5 * 1, dtype=torch.float).reshape(2, 1, 5, 1)
    tokens, valid = pool_cue(cue, torch.tensor([5, 3]), window=2)
    assert tokens[0, 0, :, 0].tolist() == [0.5, 2.5, 4.0]  # the last window is partial
    assert tokens[1, 0, :2, 0].tolist() == [5.5, 7.0]  # frames 8 and 9 are padding
    assert valid.tolist() == [[True, True, True], [True, True, False]]


def teacher_frozen(seed: int = 5) -> torch.nn.Module:
    teacher = tiny_teacher(seed).eval()
    teacher.requires_grad_(False)
    return teacher


def assert_gradients_everywhere(model: torch.nn.Module) -> None:
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} gets a zero gradient"


@pytest.mark.parametrize("name", SYSTEMS)
def test_backward_reaches_every_parameter(name):
    model = tiny(name)
    batch = make_batch()
    out = model(batch)
    loss = negative_snr(out, batch, SNR).mean() + distillation_loss(out, teacher_frozen(), batch)
    loss.backward()
    assert_gradients_everywhere(model)


def test_teacher_backward_reaches_every_parameter():
    teacher = tiny_teacher()
    batch = make_batch()
    loss = torch.nn.functional.cross_entropy(teacher(batch)["speaker_logits"], batch["speaker"])
    loss.backward()
    assert_gradients_everywhere(teacher)


def test_distillation_is_the_mse_over_valid_frames():
    batch = make_batch()
    teacher = teacher_frozen()
    cue = torch.randn(2, TINY["embed_dim"], frames_of(1200), FREQS)
    with torch.no_grad():
        target = teacher(batch)["features"]
    short = frames_of(900)
    # each example's MSE over its valid frames, then the batch mean
    expected = ((cue[0] - target[0]).pow(2).mean() + (cue[1, :, :short] - target[1, :, :short]).pow(2).mean()) / 2
    torch.testing.assert_close(distillation_loss({"cue": cue}, teacher, batch), expected)
    padded = cue.clone()
    padded[1, :, short:] += 100.0
    torch.testing.assert_close(distillation_loss({"cue": padded}, teacher, batch), expected)


@pytest.mark.parametrize("name", SYSTEMS)
def test_distillation_training_reduces_mse(name):
    model, teacher, batch = tiny(name), teacher_frozen(), make_batch()
    student = [*model.enroll_encoder.parameters(), *model.head.parameters()]
    optimizer = torch.optim.Adam(student, lr=1e-2)

    def mse() -> torch.Tensor:
        cue, _ = model.posneg_cue(batch["enroll_pos"], batch["enroll_pos_lengths"], batch["enroll_neg"],
                                  batch["enroll_neg_lengths"])
        return distillation_loss({"cue": cue}, teacher, batch)

    first = mse()
    for _ in range(8):
        optimizer.zero_grad()
        mse().backward()
        optimizer.step()
    with torch.no_grad():
        last = mse()
    assert last < 0.7 * first.item(), (first.item(), last.item())


@pytest.mark.parametrize("name", ["tfgridnet_posneg", "tfgridnet_posneg_early"])
def test_distillation_skips_the_extractor(name):
    model, batch = tiny(name), make_batch()
    full = model(batch)
    calls = []
    model.extractor.register_forward_hook(lambda *_: calls.append(1))
    model.wanted_outputs = frozenset({"cue"})  # what the trainer sets for a distill-only loss list
    cue_only = model(batch)
    assert set(cue_only) == {"cue"} and not calls and torch.equal(cue_only["cue"], full["cue"])
    model.wanted_outputs = frozenset({"estimate"})
    assert torch.equal(model(batch)["estimate"], full["estimate"]) and calls


@pytest.mark.parametrize(("name", "term"), [("tfgridnet_posneg", SNR), ("tfgridnet_posneg_early", SI_SDR)])
def test_extraction_training_reduces_signal_loss(name, term):
    model, batch = tiny(name), make_batch()
    loss_fn = negative_snr if term.name == "snr" else negative_si_sdr
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        first = loss_fn(model(batch), batch, term).mean()
    for _ in range(8):
        optimizer.zero_grad()
        loss_fn(model(batch), batch, term).mean().backward()
        optimizer.step()
    with torch.no_grad():
        last = loss_fn(model(batch), batch, term).mean()
    assert last < first - 1.0, (first.item(), last.item())  # dB


@pytest.mark.parametrize("name", SYSTEMS)
def test_stage2_freezing_leaves_encoder_and_head_untouched(name):
    model, batch = tiny(name), make_batch()
    frozen_prefixes = ("enroll_encoder", "head")
    for pname, p in model.named_parameters():
        if pname.startswith(frozen_prefixes):
            p.requires_grad_(False)
    model.train()
    model.enroll_encoder.eval()
    model.head.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # frozen ones included: they must get no grad
    for _ in range(2):
        optimizer.zero_grad()
        negative_snr(model(batch), batch, SNR).mean().backward()
        optimizer.step()
    after = model.state_dict()
    frozen = [k for k in before if k.startswith(frozen_prefixes)]
    trained = [k for k in before if k.startswith("extractor.")]
    assert frozen and trained and len(frozen) + len(trained) == len(before)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(p.grad is None for k, p in model.named_parameters() if k.startswith(frozen_prefixes))
    assert sum(not torch.equal(before[k], after[k]) for k in trained) == len(trained)


@pytest.mark.parametrize("name", SYSTEMS)
def test_extract_posneg_is_the_forward_estimate(name):
    model = tiny(name).eval()
    batch = make_batch(pos_lens=(1200, 1200), neg_lens=(1000, 1000))
    with torch.no_grad():
        expected = model(batch)["estimate"]
    got = model.extract_posneg(batch["mixture"], batch["enroll_pos"], batch["enroll_neg"])
    torch.testing.assert_close(got, expected)
    assert not got.requires_grad
    with pytest.raises(TsekitError, match="extract_posneg"):
        model.extract(batch["mixture"], batch["enroll_pos"])


# ---- published size, counted from the architecture ------------------------------------------------------------


def lstm(inputs: int, hidden: int, directions: int) -> int:
    return directions * (4 * hidden * (inputs + hidden) + 8 * hidden)  # 4 gates: input + recurrent weights, 2 biases


def rnn_sublayer(d: int, hidden: int, kernel: int, directions: int) -> int:
    """LayerNorm(D) + LSTM over unfolded windows + ConvTranspose1d back to D."""
    return 2 * d + lstm(d * kernel, hidden, directions) + directions * hidden * d * kernel + d


def projection(inputs: int, heads: int, channels: int, freqs: int) -> int:
    """1x1 conv, one PReLU slope per head, layer-norm gain and bias per (channel, freq)."""
    return inputs * heads * channels + heads * channels + heads + 2 * heads * channels * freqs


def attention(d: int, freqs: int, heads: int, e: int) -> int:
    return 2 * projection(d, heads, e, freqs) + projection(d, heads, d // heads, freqs) + projection(d, 1, d, freqs)


def block(d: int, freqs: int, hidden: int, heads: int, e: int, kernel: int, causal: bool) -> int:
    return (rnn_sublayer(d, hidden, kernel, 2) + rnn_sublayer(d, hidden, kernel, 1 if causal else 2)
            + attention(d, freqs, heads, e))


def test_published_sizes():
    d, hidden, heads, e, freqs, blocks = 64, 64, 4, 8, 65, 3
    front = 2 * d * 9 + d  # 3x3 conv from real/imag (mono)
    encoder = front + 2 * d + blocks * block(d, freqs, hidden, heads, e, 4, causal=False)  # + gLN
    head = 2 * d * freqs + 2 * attention(d, freqs, heads, e)  # segment embeddings + 2 layers
    late = (front + blocks * block(d, freqs, hidden, heads, e, 1, causal=True) + 2 * attention(d, freqs, heads, e)
            + 2 * d * 9 + 2)  # causal: no gLN; 2 fusions; 3x3 deconv to real/imag
    early = (front + 2 * d + attention(d, freqs, heads, e) + blocks * block(2 * d, freqs, hidden, heads, e, 1, False)
             + 2 * (2 * d) * 9 + 2)
    teacher = encoder + (d * freqs * 256 + 256) + (256 * 921 + 921)
    expected = {"tfgridnet_posneg": encoder + head + late, "tfgridnet_posneg_early": encoder + head + early,
                "tfgridnet_speaker": teacher}
    for name, count in expected.items():
        model = build_model(name)
        got = sum(p.numel() for p in model.parameters())
        assert got == count, f"{name}: {got:,} parameters, the architecture gives {count:,}"
    # a small TF-GridNet overall: ~1.3 M encoder, ~0.1 M head, ~0.5 M extractor
    total = expected["tfgridnet_posneg"]
    assert 1.5e6 < total < 2.5e6, f"tfgridnet_posneg: {total:,} parameters"
