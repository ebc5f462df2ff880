"""Codec/vocoder GAN training: the loss goes down, resuming continues, loading, config errors, resynthesis."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from corpus_trees import speechlike

from tsekit import TsekitError
from tsekit import checkpoint as ckpt
from tsekit.codec.registry import build_codec, load_codec
from tsekit.codec.train import codec_config_from_dict, load_codec_config, load_trained, train_codec
from tsekit.data.table import read_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TSEKIT = Path(sys.executable).parent / "tsekit"
FRONT = {"sample_rate": 8000, "n_mels": 20, "n_fft": 256, "hop_length": 64}
CODECS = {
    "tsekit_vocoder": {**FRONT, "width": 32, "num_blocks": 1},
    "tsekit_codec": {**FRONT, "encoder_width": 32, "encoder_blocks": 1, "latent_dim": 16, "num_codebooks": 2,
                     "codebook_size": 16, "kmeans_iters": 5, "decoder_width": 32, "decoder_blocks": 1},
}


def tiny_config(name: str, steps: int) -> dict:
    return {"codec": {"name": name, "params": CODECS[name]},
            "data": {"chunk_seconds": 0.25, "batch_size": 4},
            "loss": {"mel_scales": [[128, 32, 16], [256, 64, 20]]},
            "discriminator": {"periods": [2, 3], "period_channels": [4, 8], "resolutions": [[256, 64]],
                              "stft_channels": 4},
            "optim": {"generator": {"lr": 0.003}},
            "train": {"steps": steps, "adversarial_start": 10, "valid_interval": 20, "save_interval": 10,
                      "log_interval": 5}}


def make_data_dir(folder: Path, count: int, seed: int, rate: int = 8000, seconds: float = 0.8) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = {}
    for i in range(count):
        path = folder / f"utt{i}.wav"
        sf.write(path, speechlike(seconds + 0.1 * i, rate, rng), rate, subtype="PCM_16")
        rows[f"utt{i}"] = str(path)
    (folder / "spk1.scp").write_text("".join(f"{utt} {path}\n" for utt, path in rows.items()))
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("codec_data")
    make_data_dir(root / "train", 6, seed=0)
    make_data_dir(root / "valid", 2, seed=1)
    return root


def logged(exp: Path, name: str) -> list[tuple[int, float]]:
    rows = [line.split("\t") for line in (exp / "log" / "scalars.tsv").read_text().splitlines()]
    return [(int(step), float(value)) for step, key, value in rows if key == name]


def run(config: dict, data: Path, exp: Path, overrides=()) -> Path:
    """Train ``config`` with ``section.key=value`` overrides into ``exp``."""
    config = copy.deepcopy(config)
    for text in overrides:
        key, value = text.split("=")
        section, name = key.split(".")
        config[section][name] = yaml.safe_load(value)
    return train_codec(codec_config_from_dict(config), data / "train", data / "valid", exp, device="cpu")


@pytest.mark.parametrize("name", ["tsekit_vocoder", "tsekit_codec"])
def test_training_lowers_the_mel_loss_and_writes_the_experiment(name, data, tmp_path):
    exp = run(tiny_config(name, 120), data, tmp_path / "exp")
    mel = [value for _, value in logged(exp, "train/mel")]
    first, last = np.mean(mel[:4]), np.mean(mel[-4:])
    assert last < 0.85 * first, (first, last)
    # the discriminator joins after train.adversarial_start (10) steps: the first log after that is at step 15
    assert min(step for step, _ in logged(exp, "train/discriminator")) == 15
    assert min(step for step, _ in logged(exp, "train/adversarial")) == 15
    assert len(logged(exp, "valid/pesq")) == 6 and len(logged(exp, "valid/si_sdr")) == 6
    if name == "tsekit_codec":
        assert logged(exp, "train/commitment")
    assert (exp / "config.yaml").is_file() and (exp / "codec.pt").is_file()
    state = torch.load(exp / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 120 and {"model", "discriminator", "optim_generator", "optim_discriminator"} <= set(state)


def test_resuming_continues_from_the_saved_step_to_the_same_weights(data, tmp_path, capfd):
    config = tiny_config("tsekit_codec", 40)
    whole = run(config, data, tmp_path / "whole")
    partial = run(config, data, tmp_path / "partial", ["train.steps=20"])  # as if killed after step 20
    assert torch.load(partial / "checkpoints" / "last.pt", weights_only=True)["step"] == 20
    capfd.readouterr()
    run(config, data, tmp_path / "partial")
    assert "resumed from" in capfd.readouterr().out
    resumed = torch.load(partial / "codec.pt", weights_only=True)["model"]
    straight = torch.load(whole / "codec.pt", weights_only=True)["model"]
    for key, value in straight.items():
        assert torch.allclose(resumed[key].float(), value.float(), atol=1e-5), key
    # steps logged once each: the resumed run starts where the first stopped
    assert [step for step, _ in logged(partial, "train/mel")] == list(range(5, 41, 5))
    # a finished run is a no-op
    run(config, data, tmp_path / "partial")
    assert "already trained (40 steps); nothing to do" in capfd.readouterr().out


def test_load_trained_round_trip_and_missing_weights(data, tmp_path):
    exp = run(tiny_config("tsekit_codec", 20), data, tmp_path / "exp")
    loaded = load_codec(exp)
    assert not loaded.training and loaded.registry_name == "tsekit_codec"
    saved = load_codec_config(exp / "config.yaml")
    rebuilt = build_codec(saved.codec.name, saved.codec.params)
    rebuilt.load_state_dict(ckpt.load_checkpoint(exp / "checkpoints" / "last.pt")["model"])
    rebuilt.eval()
    wav = torch.randn(1, 3000) * 0.1
    with torch.no_grad():
        assert torch.equal(loaded.encode(wav), rebuilt.encode(wav))
        assert torch.equal(load_trained(exp).decode(loaded.encode(wav)), rebuilt.decode(rebuilt.encode(wav)))
    (exp / "codec.pt").unlink()
    with pytest.raises(TsekitError, match=r"not trained yet \(codec.pt missing\): run tsekit codec train"):
        load_codec(exp)


def test_config_errors_are_one_line_and_name_the_cause(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**tiny_config("tsekit_vocoder", 5), "trian": {}}))
    with pytest.raises(TsekitError, match="c.yaml: unknown key 'trian'; valid keys at the top level: codec, data"):
        load_codec_config(path)
    path.write_text(yaml.safe_dump(tiny_config("tsekit_vocoder", 5)))
    with pytest.raises(TsekitError, match="override 'train.stpes=3': unknown key 'train.stpes'; valid keys under "
                                          "'train': steps, adversarial_start"):
        load_codec_config(path, ["train.stpes=3"])
    with pytest.raises(TsekitError, match="override 'optim.generator.lr=0': optim.generator.lr: must be > 0"):
        load_codec_config(path, ["optim.generator.lr=0"])
    with pytest.raises(TsekitError, match="unknown key 'codec.params.widht'; valid parameters of codec "
                                          "tsekit_vocoder: sample_rate"):
        load_codec_config(path, ["codec.params.widht=3"])
    with pytest.raises(TsekitError, match="loss.adversarial_kind: expected one of hinge, least_squares"):
        load_codec_config(path, ["loss.adversarial_kind=wgan"])
    assert load_codec_config(path, ["train.steps=7"]).train.steps == 7


def test_codec_overrides_work_as_an_experiment_s(tmp_path):
    """One engine: list items by index, sections the file leaves out, and a file problem an override fixes."""
    path = tmp_path / "c.yaml"
    config = tiny_config("tsekit_vocoder", 5)
    del config["discriminator"]
    path.write_text(yaml.safe_dump({**config, "data": {"batch_size": 0}}))
    cfg = load_codec_config(path, ["loss.mel_scales.1=[512, 128, 40]", "discriminator.periods.0=4",
                                   "data.batch_size=2"])
    assert cfg.loss.mel_scales == [(128, 32, 16), (512, 128, 40)]
    assert cfg.discriminator.periods == [4, 3, 5, 7, 11] and cfg.data.batch_size == 2
    with pytest.raises(TsekitError, match=r"^override 'codec.name=nope': codec.name: unknown codec 'nope'"):
        load_codec_config(path, ["data.batch_size=2", "codec.name=nope"])


def test_bad_data_dir_is_a_one_line_error(data, tmp_path):
    cfg = codec_config_from_dict(tiny_config("tsekit_vocoder", 5))
    with pytest.raises(TsekitError, match="spk1.scp: file not found"):
        train_codec(cfg, tmp_path, data / "valid", tmp_path / "exp", device="cpu")


def test_resynth_writes_every_target_at_the_data_rate_and_length(data, tmp_path):
    exp = run(tiny_config("tsekit_vocoder", 10), data, tmp_path / "exp")
    wide = make_data_dir(tmp_path / "wide", 3, seed=2, rate=16000, seconds=0.5)  # resampled to 8 kHz and back
    out = tmp_path / "resynth"
    command = [str(TSEKIT), "codec", "resynth", "--codec", str(exp), str(wide), str(out)]
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "3 of 3 targets resynthesised" in proc.stdout
    scp = read_table(out / "wav.scp")
    assert sorted(scp) == ["utt0", "utt1", "utt2"]
    for utt, path in scp.items():
        reference = sf.info(read_table(wide / "spk1.scp")[utt])
        written = sf.info(path)
        assert (written.samplerate, written.frames) == (16000, reference.frames)
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0 and "0 of 3 targets resynthesised" in again.stdout
    missing = subprocess.run([str(TSEKIT), "codec", "resynth", "--codec", str(tmp_path), str(wide), str(out)],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "not trained yet" in missing.stderr
