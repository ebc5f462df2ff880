"""Speaker-embedding front ends (tsekit.models.layers.speaker_embedding).

resemblyzer runs on real (TTS) speech when the Debian voices are installed,
else on a harmonic, syllable-modulated synthetic voice, which its VAD keeps.
The WeSpeaker path runs a tiny ONNX model built here, whose output is
recomputed by hand from the features WeSpeaker defines.
"""

from __future__ import annotations

import copy
import pickle
import re

import numpy as np
import pytest
import torch
import torchaudio

from tsekit import TsekitError
from tsekit.corpora.tts import BASE_VOICES, Speaker, missing_packages, synthesize
from tsekit.models.layers.speaker_embedding import SPEAKER_ENCODERS, build_speaker_embedder

RATE = 16000
TTS_VOICES = tuple(v for v in BASE_VOICES if v.label in ("flite:awb", "flite:slt"))


def synthetic_voice(f0: float, seconds: float, seed: int) -> np.ndarray:
    """Harmonics of a wobbling f0 under a 4 Hz syllable envelope: voiced enough for resemblyzer's VAD."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6)))) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 30) if k * f0 < RATE / 2 - 500)
    syllables = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) ** 0.5
    out = voice * syllables + 0.003 * rng.standard_normal(t.size)
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, np.ndarray]:
    """Two different speakers, about 3 s each at 16 kHz."""
    if missing_packages(TTS_VOICES):
        return synthetic_voice(110, 3.0, seed=0), synthetic_voice(220, 3.0, seed=1)
    awb, slt = (Speaker(v.label, v, 0, 1.0) for v in TTS_VOICES)
    return (synthesize("The old captain carried a heavy lamp across the valley at dawn.", awb),
            synthesize("Martha found a golden key hidden under the bridge last night.", slt))  # fmt: skip


def padded(clips: list[np.ndarray], filler: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch of ``clips`` padded with ``filler`` (not zeros), so ignoring the lengths would change the embedding."""
    longest = max(len(c) for c in clips)
    rows = [np.concatenate([c, filler[: longest - len(c)]]) for c in clips]
    return torch.from_numpy(np.stack(rows)), torch.tensor([len(c) for c in clips])


def test_unknown_kind_lists_the_choices():
    choices = ", ".join(SPEAKER_ENCODERS)
    with pytest.raises(TsekitError, match=f"^unknown speaker encoder 'xvector'; choose one of {choices}$"):
        build_speaker_embedder("xvector", RATE)


# ---------------------------------------------------------------- resemblyzer


def test_resemblyzer_embeds_once_per_enrollment(speech):
    embedder = build_speaker_embedder("resemblyzer", RATE)
    assert (embedder.dim, embedder.min_seconds, embedder.frozen) == (256, 1.0, True)
    a, b = (torch.from_numpy(clip).unsqueeze(0) for clip in speech)
    first = embedder(a)
    assert first.shape == (1, 256) and first.dtype == torch.float32 and not first.requires_grad
    assert torch.isfinite(first).all()
    assert (embedder.cache_hits, embedder.cache_misses) == (0, 1)
    again = embedder(a.clone())
    assert (embedder.cache_hits, embedder.cache_misses) == (1, 1)
    assert torch.equal(first, again)
    other = embedder(b)
    assert (embedder.cache_hits, embedder.cache_misses) == (1, 2)
    assert float(torch.nn.functional.cosine_similarity(first, other)) < 0.9
    # the pretrained weights come from the package, never from (or into) a checkpoint
    assert embedder.state_dict() == {} and list(embedder.parameters()) == []


def test_resemblyzer_honours_lengths(speech):
    a, b = speech
    short = b[: int(1.5 * RATE)]
    wav, lengths = padded([a, short], filler=a[::-1].copy())
    batch = build_speaker_embedder("resemblyzer", RATE)(wav, lengths)
    alone = build_speaker_embedder("resemblyzer", RATE)
    torch.testing.assert_close(batch[0], alone(torch.from_numpy(a)[None])[0])
    torch.testing.assert_close(batch[1], alone(torch.from_numpy(short)[None])[0])


def test_resemblyzer_at_8khz_matches_16khz(speech):
    """8 kHz recipes: the metric's encoder resamples, and the voice stays the same."""
    a = torch.from_numpy(speech[0])[None]
    wide = build_speaker_embedder("resemblyzer", RATE)(a)
    narrow = build_speaker_embedder("resemblyzer", 8000)(torchaudio.functional.resample(a, RATE, 8000))
    assert float(torch.nn.functional.cosine_similarity(wide, narrow)) > 0.9


def test_resemblyzer_too_short_and_silent(speech):
    embedder = build_speaker_embedder("resemblyzer", RATE)
    with pytest.raises(TsekitError, match=r"^data/test/enroll.scp: utt1: enrollment of 0\.40 s is shorter than "
                                          r"the 1\.00 s the resemblyzer speaker encoder needs$"):  # fmt: skip
        embedder.check_length(int(0.4 * RATE), "data/test/enroll.scp: utt1")
    embedder.check_length(RATE, "exactly one second")
    wav, lengths = padded([speech[0], speech[1][: int(0.4 * RATE)]], filler=speech[1])
    with pytest.raises(TsekitError, match=r"^batch example 1: enrollment of 0\.40 s is shorter"):
        embedder(wav, lengths)
    wav = torch.from_numpy(np.stack([speech[0][: 2 * RATE], np.zeros(2 * RATE, np.float32)]))
    with pytest.raises(TsekitError, match="^batch example 1: enrollment is silent; the speaker encoder finds no voice"):
        embedder(wav)
    assert embedder.cache_hits == 0
    with pytest.raises(TsekitError, match="256-d embeddings, but dim is 192"):
        build_speaker_embedder("resemblyzer", RATE, dim=192)


# ---------------------------------------------------------------- WeSpeaker ONNX


def tiny_wespeaker(path, weights: np.ndarray) -> None:
    """A stand-in for a WeSpeaker model: feats (1, T, 80) -> embs (1, 8) = mean over time of feats**2, times W.

    Squaring keeps the mean normalisation visible (a mean of mean-normalised
    features would be zero whatever they were).
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["feats", "feats"], ["squared"]),
         helper.make_node("ReduceMean", ["squared"], ["pooled"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["pooled", "W"], ["embs"])],
        "tiny_wespeaker",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["B", "T", 80])],
        [helper.make_tensor_value_info("embs", TensorProto.FLOAT, ["B", weights.shape[1]])],
        initializer=[numpy_helper.from_array(weights, name="W")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by older onnxruntime releases too
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def by_hand(samples: np.ndarray, rate: int, weights: np.ndarray) -> np.ndarray:
    """WeSpeaker's features (16 kHz, int16 scale, Kaldi fbank, CMN) through the tiny model, in numpy."""
    wave = torch.from_numpy(samples)[None]
    if rate != 16000:
        wave = torchaudio.functional.resample(wave, rate, 16000)
    feats = torchaudio.compliance.kaldi.fbank(
        wave * 32768, num_mel_bins=80, frame_length=25, frame_shift=10, dither=0.0, sample_frequency=16000,
        window_type="hamming",
    ).numpy().astype(np.float64)  # fmt: skip
    feats -= feats.mean(axis=0)
    return (np.mean(feats**2, axis=0) @ weights).astype(np.float32)


@pytest.fixture(scope="module")
def wespeaker_onnx(tmp_path_factory) -> tuple[str, np.ndarray]:
    weights = np.random.default_rng(0).standard_normal((80, 8)).astype(np.float32)
    path = tmp_path_factory.mktemp("wespeaker") / "tiny.onnx"
    tiny_wespeaker(path, weights)
    return str(path), weights


@pytest.mark.parametrize("rate", [16000, 8000])
def test_wespeaker_features_and_output(speech, wespeaker_onnx, rate):
    path, weights = wespeaker_onnx
    embedder = build_speaker_embedder("wespeaker_onnx", rate, dim=8, onnx_path=path)
    assert (embedder.dim, embedder.frozen) == (8, True)
    # exact zeros (silence between words) sit on fbank's energy floor, so the int16 scaling shows
    clips = [np.concatenate([np.zeros(RATE // 5, np.float32), clip]) for clip in speech]
    if rate != RATE:
        clips = [torchaudio.functional.resample(torch.from_numpy(c), RATE, rate).numpy() for c in clips]
    clips[1] = clips[1][: int(1.5 * rate)]
    wav, lengths = padded(clips, filler=clips[0])
    got = embedder(wav, lengths)
    assert got.shape == (2, 8) and got.dtype == torch.float32
    for row, clip in zip(got, clips, strict=True):
        np.testing.assert_allclose(row.numpy(), by_hand(clip, rate, weights), rtol=1e-4, atol=1e-4)
    assert embedder(wav[:1], lengths[:1]).equal(got[:1]) and embedder.cache_hits == 1
    assert embedder.state_dict() == {}
    twin = copy.deepcopy(embedder)  # an EMA copy: the onnxruntime session is not copied but reloaded
    pickle.dumps(embedder)
    torch.testing.assert_close(twin(wav, lengths), got)


def test_wespeaker_errors(tmp_path, wespeaker_onnx):
    missing = tmp_path / "voxceleb_resnet34.onnx"
    expected = f"{missing}: WeSpeaker ONNX model not found (download voxceleb_resnet34.onnx from the WeSpeaker"
    with pytest.raises(TsekitError, match="^" + re.escape(expected)):
        build_speaker_embedder("wespeaker_onnx", RATE, onnx_path=str(missing))
    path, _ = wespeaker_onnx
    expected = f"{path}: the WeSpeaker model gives 8-d embeddings, but dim is 256"
    with pytest.raises(TsekitError, match="^" + re.escape(expected) + "$"):
        build_speaker_embedder("wespeaker_onnx", RATE, dim=256, onnx_path=path)
    with pytest.raises(TsekitError, match="needs speaker_onnx"):
        build_speaker_embedder("wespeaker_onnx", RATE)


# ---------------------------------------------------------------- learned


def test_learned_trains_and_honours_lengths():
    torch.manual_seed(0)
    rate = 8000
    embedder = build_speaker_embedder("learned", rate, dim=32)
    assert (embedder.dim, embedder.frozen) == (32, False)
    assert any(key.startswith("encoder.") for key in embedder.state_dict())
    noise = np.random.default_rng(0).standard_normal((3, int(1.7 * rate))).astype(np.float32) * 0.1
    # 8992 samples are 107 valid frames (512-sample FFT, hop 80): one more would complete a 4th pooled frame (27
    # each), so a frame count that reaches into the padding changes the embedding
    clips = [noise[0], noise[1, :8992]]
    wav, lengths = padded(clips, filler=noise[2])

    embedder.train()
    out = embedder(wav, lengths)
    assert out.shape == (2, 32) and out.dtype == torch.float32
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in embedder.parameters())

    embedder.eval()
    with torch.no_grad():
        batch = embedder(wav, lengths)
        for row, clip in zip(batch, clips, strict=True):
            torch.testing.assert_close(row, embedder(torch.from_numpy(clip)[None])[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])


def test_learned_length_limits():
    embedder = build_speaker_embedder("learned", RATE, dim=16, min_seconds=0.5)
    with pytest.raises(TsekitError, match=r"^batch example 0: enrollment of 0\.49 s is shorter than the 0\.50 s "
                                          r"the learned speaker encoder needs$"):  # fmt: skip
        embedder(torch.zeros(1, RATE // 2 - 1))
    assert embedder(torch.randn(1, RATE // 2)).shape == (1, 16)
    with pytest.raises(TsekitError, match="min_seconds 0.10 is below"):
        build_speaker_embedder("learned", RATE, min_seconds=0.1)
