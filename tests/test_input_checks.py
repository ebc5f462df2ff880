"""Every command that reads a data dir checks all of its audio before it writes anything.

One data dir of 8 rows at 8 kHz (4 two-speaker mixtures, enrolled by ``tsekit enroll``), tiny random models;
each case points the LAST row of one table at a bad file and runs one command through its library function:
the error is one line naming the table, the row and the file, and the command's output holds no file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from trained import codec_experiment

from tsekit import TsekitError
from tsekit import checkpoint as ckpt
from tsekit.codec.tokenize import tokenize_data_dir
from tsekit.codec.train import codec_config_from_dict, resynth_data_dir, train_codec
from tsekit.corpora.common import Row, rows_to_tables, write_splits
from tsekit.data.enroll import enroll_data_dir
from tsekit.data.table import read_table, sorted_keys, write_table
from tsekit.infer import infer_data_dir
from tsekit.metrics.jobs import inputs_from_manifests, run_scoring
from tsekit.models.registry import build_model
from tsekit.train.config import config_from_dict
from tsekit.train.trainer import train
from tsekit.typed_config import config_to_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 8000
MIXTURES = [("121-1-0", "237-1-0"), ("260-1-0", "61-1-0"), ("121-1-1", "260-1-1"), ("237-1-1", "61-1-1")]
SPEX = {"model": {"name": "spex_plus", "params": {
            "num_filters": 8, "channels": 8, "hidden_channels": 16, "num_blocks": 1, "num_stacks": 1,
            "embed_dim": 8, "speaker_hidden": 8, "speaker_blocks": 1}},
        "data": {"sample_rate": RATE, "chunk_seconds": 0.2, "batch_size": 2, "num_workers": 0},
        "train": {"epochs": 1}}
CODEC = {"sample_rate": RATE, "n_mels": 20, "n_fft": 256, "hop_length": 64, "encoder_width": 8,
         "encoder_blocks": 1, "latent_dim": 8, "num_codebooks": 2, "codebook_size": 8, "kmeans_iters": 1,
         "decoder_width": 8, "decoder_blocks": 1}
VOCODER = {"codec": {"name": "tsekit_vocoder", "params": {"sample_rate": RATE, "n_mels": 20, "n_fft": 256,
                                                          "hop_length": 64, "width": 8, "num_blocks": 1}},
           "data": {"chunk_seconds": 0.1, "batch_size": 2, "valid_utterances": 8},
           "loss": {"mel_scales": [[128, 32, 16]]},
           "discriminator": {"periods": [2], "period_channels": [4], "resolutions": [[128, 32]], "stft_channels": 4},
           "train": {"steps": 2}}


def _write(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """ROOT/data/test (8 rows), ROOT/spex (a tiny SpEx+ experiment), ROOT/codec (a tiny codec experiment)."""
    root = tmp_path_factory.mktemp("checks")
    rows = []
    for utts in MIXTURES:
        mixture_id = "_".join(utts)
        sources = [0.1 * np.random.default_rng(list(u.encode())).standard_normal(1200) for u in utts]
        mixture = _write(root / "mix" / f"{mixture_id}.wav", sum(sources))
        for index, (utt, source) in enumerate(zip(utts, sources, strict=True), 1):
            target = _write(root / f"s{index}" / f"{mixture_id}.wav", source)
            rows.append(Row(mixture_id, index, utt.split("-")[0], mixture, target, utt))
    write_splits(root / "data", {"test": rows_to_tables(rows, RATE)})
    enroll_data_dir(root / "data" / "test", seed=0)
    cfg = config_from_dict(SPEX)
    ckpt.save_checkpoint(root / "spex" / "stage1" / "checkpoints" / ckpt.LATEST,
                         {"model": build_model("spex_plus", cfg.model.params).state_dict(),
                          "config": config_to_dict(cfg)})
    codec_experiment(root / "codec", "tsekit_codec", CODEC, seed=0)
    return root


def bad_file(kind: str, folder: Path) -> Path:
    if kind == "missing":
        return folder / "gone.wav"
    if kind == "empty":
        return _write(folder / "empty.wav", np.zeros(0))
    if kind == "stereo":
        return _write(folder / "stereo.wav", np.zeros((1200, 2)))
    if kind == "nan":  # a float wav: its header is fine
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / "nan.wav", np.full(1200, np.nan, dtype=np.float32), RATE, subtype="FLOAT")
        return folder / "nan.wav"
    return _write(folder / "wide.wav", np.zeros(2400), 2 * RATE)  # kind == "rate"


def copy_with_bad_last_row(data: Path, folder: Path, table: str, kind: str) -> tuple[Path, str, Path]:
    """A copy of data dir ``data`` whose ``table`` sends its last row to a bad file: (copy, that row, the file)."""
    shutil.copytree(data, folder)
    entries = read_table(folder / table)
    last = sorted_keys(entries)[-1]
    bad = bad_file(kind, folder.parent / "bad")
    write_table(folder / table, {**entries, last: str(bad)})
    return folder, last, bad


def run_train(root: Path, data: Path, out: Path, workers: int = 0) -> None:
    train(config_from_dict({**SPEX, "data": {**SPEX["data"], "num_workers": workers}}), data, data, out,
          device="cpu")


def run_codec_train(root: Path, data: Path, out: Path, workers: int = 0) -> None:
    """The bad file in the training set; the validation set is good (it would be read first)."""
    config = codec_config_from_dict({**VOCODER, "data": {**VOCODER["data"], "num_workers": workers},
                                     "train": {"steps": 8}})  # 16 crops of 8 rows: the last row among them
    train_codec(config, data, root / "data" / "test", out, device="cpu")


def run_codec_train_valid(root: Path, data: Path, out: Path) -> None:
    """The bad file in the validation set only: found before the first training step, not after the last."""
    train_codec(codec_config_from_dict(VOCODER), root / "data" / "test", data, out, device="cpu")


def run_tokenize(root: Path, data: Path, out: Path) -> None:
    tokenize_data_dir(root / "codec", data, out)


def run_resynth(root: Path, data: Path, out: Path) -> None:
    resynth_data_dir(root / "codec", data, out)


def run_infer(root: Path, data: Path, out: Path) -> None:
    infer_data_dir(root / "spex", data, out, output_level="none")


def run_score(root: Path, data: Path, out: Path) -> None:
    inputs = inputs_from_manifests(str(data / "spk1.scp"), str(data / "spk1.scp"), mix=str(data / "wav.scp"))
    run_scoring(inputs, out, metrics="si_sdr")


# command -> (how to run it, the table given a bad last row, whether it reads that table at one rate)
COMMANDS = {
    "train": (run_train, "wav.scp", True),
    "codec train": (run_codec_train, "spk1.scp", False),  # audio at another rate is resampled
    "codec train (valid set)": (run_codec_train_valid, "spk1.scp", False),
    "tokenize": (run_tokenize, "spk1.scp", False),
    "codec resynth": (run_resynth, "spk1.scp", False),
    "infer": (run_infer, "wav.scp", True),
    "score": (run_score, "wav.scp", True),  # the mixture, at its reference's rate
}
CASES = [(command, kind) for command, (_, _, one_rate) in COMMANDS.items()
         for kind in ("missing", "empty", "stereo") + (("rate",) if one_rate else ())]


@pytest.mark.parametrize(("command", "kind"), CASES)
def test_a_bad_file_in_the_last_row_is_one_line_and_nothing_is_written(corpus, tmp_path, command, kind):
    run, table, _ = COMMANDS[command]
    data, last, bad = copy_with_bad_last_row(corpus / "data" / "test", tmp_path / "data", table, kind)
    out = tmp_path / "out"
    with pytest.raises(TsekitError) as err:
        run(corpus, data, out)
    message = str(err.value)
    assert "\n" not in message and f"{data / table}: {last}: {bad}" in message, message
    assert not [path for path in out.rglob("*") if path.is_file()]


def test_the_problems_are_named(corpus, tmp_path):
    expected = {"missing": "file not found", "empty": "empty audio (0 samples)",
                "stereo": "2 channels, expected mono audio",
                "rate": "16000 Hz audio, expected 8000 Hz (resample it, or prepare the data dir at 8000 Hz)"}
    for kind, problem in expected.items():
        data, _, _ = copy_with_bad_last_row(corpus / "data" / "test", tmp_path / kind, "enroll.scp", kind)
        with pytest.raises(TsekitError) as err:
            run_infer(corpus, data, tmp_path / f"out_{kind}")
        assert str(err.value).endswith(problem), err.value


@pytest.mark.parametrize("command", COMMANDS)
def test_nan_found_when_read_is_one_line_naming_the_file_and_row(corpus, tmp_path, command):
    run, table, _ = COMMANDS[command]
    data, last, bad = copy_with_bad_last_row(corpus / "data" / "test", tmp_path / "data", table, "nan")
    with pytest.raises(TsekitError) as err:
        run(corpus, data, tmp_path / "out")
    assert str(err.value) == f"{data / table}: {last}: {bad}: audio contains NaN or inf"


def test_nan_in_validation_audio_stops_codec_training_before_its_first_step(corpus, tmp_path):
    data, _, _ = copy_with_bad_last_row(corpus / "data" / "test", tmp_path / "data", "spk1.scp", "nan")
    with pytest.raises(TsekitError):
        run_codec_train_valid(corpus, data, tmp_path / "exp")
    assert not [path for path in (tmp_path / "exp").rglob("*") if path.is_file()]


@pytest.mark.parametrize("run", [run_train, run_codec_train], ids=["train", "codec train"])
def test_an_error_in_a_data_loader_worker_is_its_one_line(corpus, tmp_path, run):
    data, last, bad = copy_with_bad_last_row(corpus / "data" / "test", tmp_path / "data", "spk1.scp", "nan")
    with pytest.raises(TsekitError) as err:
        run(corpus, data, tmp_path / "out", workers=1)
    assert str(err.value) == f"{data / 'spk1.scp'}: {last}: {bad}: audio contains NaN or inf"


def test_the_config_of_the_tiny_models_trains(corpus, tmp_path):
    """The cases above fail on the bad file, not on their configs: the same runs on the good data dir work."""
    data = corpus / "data" / "test"
    for name, run in (("train", run_train), ("codec", run_codec_train), ("resynth", run_resynth),
                      ("tokenize", run_tokenize), ("infer", run_infer), ("score", run_score)):
        run(corpus, data, tmp_path / name)
    assert (tmp_path / "train" / "stage1" / "checkpoints" / "averaged.pt").is_file()
    assert (tmp_path / "codec" / "codec.pt").is_file() and (tmp_path / "infer" / "wav.scp").is_file()
    assert (tmp_path / "resynth" / "wav.scp").is_file() and (tmp_path / "score" / "parts" / "local.jsonl").is_file()
    assert yaml.safe_load((tmp_path / "tokenize" / "codec.yaml").read_text())["num_codebooks"] == 2
