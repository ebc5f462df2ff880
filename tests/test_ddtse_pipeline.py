"""DDTSE through the trainer and inference: EMA weights, both training stages, --refine, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from trained import train_tiny

from tsekit import TsekitError
from tsekit import checkpoint as ckpt
from tsekit.data.table import read_table, write_table
from tsekit.infer import infer_data_dir
from tsekit.train.experiment import load_experiment
from tsekit.train.trainer import WeightAverage, train

RATE = 16000
CONFIG = {
    "model": {"name": "ddtse", "params": {
        "nf": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "speaker_encoder": "learned",
        "embed_dim": 16, "min_enroll_seconds": 0.3, "steps": 2, "concat_mixture": True}},
    "data": {"sample_rate": RATE, "chunk_seconds": 0.3, "enroll": "target", "batch_size": 4, "num_workers": 0},
    "loss": [{"name": "objective", "output": "objective"},
             {"name": "objective", "output": "first_error", "weight": 0.0}],
    "optim": {"lr": 0.002},
    "scheduler": {"name": "none"},
    "train": {"epochs": 2, "log_interval": 1, "ema": 0.9, "keep_best": 1, "valid_metric": "objective@first_error"},
    "stage2": {"enabled": True, "epochs": 1, "lr": 0.001,
               "params": {"emulate_inference": True, "emulate_ramp_epochs": 1}},
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(experiment root, test data dir): the tiny DDTSE trained through stage 1 and stage 2."""
    root = tmp_path_factory.mktemp("ddtse")
    cfg, data = train_tiny(root, CONFIG, RATE)
    cfg.stage2.init_from = str(root / "exp" / "stage1" / "checkpoints" / ckpt.AVERAGED)
    train(cfg, data / "train-100", data / "dev", root / "exp", stage=2, device="cpu")
    return root / "exp", data / "dev"


def test_weight_average_is_the_exponential_moving_average():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, 0.5)
    for value in (1.0, 3.0):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update(model)
    assert torch.allclose(average.state["weight"], torch.full((1, 2), 0.5 * (0.5 * 0 + 0.5 * 1) + 0.5 * 3))
    with average.applied(model):
        assert torch.allclose(model.weight, average.state["weight"])
    assert torch.allclose(model.weight, torch.full((1, 2), 3.0))


def test_inference_loads_the_ema_weights(trained):
    exp, _ = trained
    latest = ckpt.load_checkpoint(exp / "stage1" / "checkpoints" / ckpt.LATEST)
    trained_weights, averaged = latest["train_weights"], latest["model"]
    assert any(not torch.equal(trained_weights[k], averaged[k]) for k in averaged)
    model, _ = load_experiment(exp / "stage1")
    loaded = model.state_dict()
    # keep_best 1: averaged.pt is the best epoch's EMA weights; the last epoch is the best or not, but the
    # loaded weights are an EMA state and never the raw ones
    best = ckpt.load_checkpoint(exp / "stage1" / "checkpoints" / ckpt.read_best(exp / "stage1" / "checkpoints")[0][1])
    assert all(torch.equal(loaded[k], best["model"][k]) for k in loaded)
    assert "train_weights" in best and any(not torch.equal(loaded[k], best["train_weights"][k]) for k in loaded)


def test_best_checkpoint_is_chosen_by_the_first_predictions_error(trained):
    exp, _ = trained
    for stage in ("stage1", "stage2"):
        logged: dict[str, list[float]] = {}
        for line in (exp / stage / "log" / "scalars.tsv").read_text().splitlines():
            _, name, value = line.split("\t")
            logged.setdefault(name, []).append(float(value))
        first_errors = logged["valid/objective@first_error"]
        assert len(first_errors) == len(logged["valid/loss"]) > 0
        assert "train/objective@objective" in logged  # a watching term costs no training step a network evaluation
        assert "train/objective@first_error" not in logged
        [(best, _)] = ckpt.read_best(exp / stage / "checkpoints")
        assert best == pytest.approx(min(first_errors), rel=1e-5)
        assert all(best != pytest.approx(loss, rel=1e-3) for loss in logged["valid/loss"])


def test_stage2_trains_with_its_own_params_and_learning_rate(trained):
    exp, _ = trained
    stage2 = yaml.safe_load((exp / "stage2" / "config.yaml").read_text())
    assert stage2["model"]["params"]["emulate_inference"] is True
    assert stage2["optim"]["lr"] == 0.001
    stage1 = yaml.safe_load((exp / "stage1" / "config.yaml").read_text())
    assert stage1["model"]["params"].get("emulate_inference", False) is False
    model, _ = load_experiment(exp)
    assert model.emulate_inference  # the last stage is what inference loads


def test_infer_and_refine_a_data_dir(trained, tmp_path):
    exp, data = trained
    rows = len(read_table(data / "wav.scp"))
    summary = infer_data_dir(exp, data, tmp_path / "plain")
    assert summary.extracted == rows and (tmp_path / "plain" / "wav.scp").is_file()
    refined = infer_data_dir(exp, data, tmp_path / "refined", refine=tmp_path / "plain" / "wav.scp", refine_passes=2)
    assert refined.extracted == rows
    utt = sorted(read_table(data / "wav.scp"))[0]
    plain, _ = sf.read(tmp_path / "plain" / "wav" / f"{utt}.wav")
    again, _ = sf.read(tmp_path / "refined" / "wav" / f"{utt}.wav")
    mixture, _ = sf.read(read_table(data / "wav.scp")[utt])
    assert plain.shape == again.shape == mixture.shape and not np.allclose(plain, again)


def test_refine_scp_missing_a_key_writes_nothing(trained, tmp_path):
    exp, data = trained
    table = read_table(data / "spk1.scp")
    dropped = sorted(table)[3]
    del table[dropped]
    write_table(tmp_path / "other.scp", table)
    expected = rf"other.scp: no estimate for 1 of {len(table) + 1} utterances \(e.g. {dropped}\)"
    with pytest.raises(TsekitError, match=expected):
        infer_data_dir(exp, data, tmp_path / "out", refine=tmp_path / "other.scp")
    assert not (tmp_path / "out" / "wav").exists()


def test_short_enrollment_and_wrong_rate_stop_before_any_output(trained, tmp_path):
    exp, data = trained
    bad = tmp_path / "data"
    shutil.copytree(data, bad)
    enroll = read_table(bad / "enroll.scp")
    utt = sorted(enroll)[-1]
    sf.write(tmp_path / "short.wav", np.full(RATE // 10, 0.1, dtype=np.float32), RATE)
    enroll[utt] = str(tmp_path / "short.wav")
    write_table(bad / "enroll.scp", enroll)
    with pytest.raises(TsekitError, match=rf"enroll.scp: {utt}: enrollment of 0.10 s is shorter than the 0.30 s"):
        infer_data_dir(exp, bad, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.wav"))
    sf.write(tmp_path / "short.wav", np.full(RATE, 0.1, dtype=np.float32), 8000)
    with pytest.raises(TsekitError, match=r"short.wav: 8000 Hz audio, expected 16000 Hz"):
        infer_data_dir(exp, bad, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.wav"))
