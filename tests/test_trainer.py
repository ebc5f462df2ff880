"""The trainer: loss goes down, a SIGKILLed run resumes to the same weights, guards and errors, torchrun."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from corpus_trees import make_libri2mix_tree

from tsekit import TsekitError
from tsekit import checkpoint as ckpt
from tsekit.corpora.librimix import prepare_libri2mix
from tsekit.data.datadir import subset_data_dir
from tsekit.data.enroll import enroll_data_dir
from tsekit.data.table import read_table
from tsekit.lock import writer_lock
from tsekit.train.config import load_config
from tsekit.train.trainer import train

TSEKIT = Path(sys.executable).parent / "tsekit"
TINY = {
    "model": {"name": "spex_plus", "params": {
        "num_filters": 16, "channels": 16, "hidden_channels": 32, "num_blocks": 2, "num_stacks": 2,
        "embed_dim": 16, "speaker_hidden": 16, "speaker_blocks": 1}},
    "data": {"sample_rate": 8000, "chunk_seconds": 0.3, "batch_size": 4, "num_workers": 0},
    "optim": {"lr": 0.003},
    "train": {"epochs": 3, "save_interval": 1, "log_interval": 1},
}


def tiny_data(root: Path, rate: int) -> Path:
    make_libri2mix_tree(root / "Libri2Mix", rates=(rate,), splits=("train-100", "dev"), per_split=16)
    prepare_libri2mix(root / "Libri2Mix", root / "data", sample_rate=rate, splits=("train-100", "dev"))
    for split in ("train-100", "dev"):
        enroll_data_dir(root / "data" / split)
    return root / "data"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_data(tmp_path_factory.mktemp("train"), 8000)


@pytest.fixture(scope="module")
def data16k(tmp_path_factory) -> Path:
    return tiny_data(tmp_path_factory.mktemp("train16k"), 16000)


def write_config(path: Path, **sections) -> Path:
    config = {key: {**TINY.get(key, {}), **sections.get(key, {})} for key in {*TINY, *sections} if key != "loss"}
    if "loss" in sections:  # a list of terms: replaced, not merged
        config["loss"] = sections["loss"]
    path.write_text(yaml.safe_dump(config))
    return path


def train_command(config: Path, data: Path, exp: Path, *extra: str) -> list[str]:
    return [str(TSEKIT), "train", "--config", str(config), "--train-data", str(data / "train-100"),
            "--valid-data", str(data / "dev"), "--exp-dir", str(exp), *extra]


def weights(exp: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(exp / "stage1" / "checkpoints" / ckpt.LATEST)["model"]


def test_training_lowers_the_loss_and_writes_the_experiment(data, tmp_path):
    config = write_config(tmp_path / "c.yaml")
    proc = subprocess.run(train_command(config, data, tmp_path / "exp"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    stage = tmp_path / "exp" / "stage1"
    valid = logged(stage, "valid/loss")
    assert len(valid) == 3 and valid[-1] < valid[0]
    saved = load_config(stage / "config.yaml", [])
    assert saved.model.params["num_speakers"] == len((stage / "speakers.txt").read_text().split())
    best = ckpt.read_best(stage / "checkpoints")
    assert [value for value, _ in best] == pytest.approx(sorted(valid)[: len(best)], rel=1e-5)
    assert (stage / "checkpoints" / ckpt.AVERAGED).is_file()
    # a finished stage is a no-op when run again
    again = subprocess.run(train_command(config, data, tmp_path / "exp"), capture_output=True, text=True)
    assert again.returncode == 0 and "already trained (3 epochs); nothing to do" in again.stdout


# a system that draws inside its loss (diffusion times and noise): per-rank streams and saved states matter
TINY_DDTSE = {
    "model": {"name": "ddtse", "params": {
        "nf": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "speaker_encoder": "learned",
        "embed_dim": 16, "min_enroll_seconds": 0.3, "steps": 2}},
    "data": {"sample_rate": 16000, "enroll": "target"},
    "loss": [{"name": "objective", "output": "objective"}],
}


@pytest.mark.parametrize("sections, data_fixture", [({}, "data"), (TINY_DDTSE, "data16k")], ids=["spex_plus", "ddtse"])
def test_sigkill_then_resume_gives_the_weights_of_an_uninterrupted_run(request, tmp_path, sections, data_fixture):
    data = request.getfixturevalue(data_fixture)
    config = write_config(tmp_path / "c.yaml", **sections)
    straight = subprocess.run(train_command(config, data, tmp_path / "straight"), capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    killed = subprocess.Popen(train_command(config, data, tmp_path / "killed"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    latest = tmp_path / "killed" / "stage1" / "checkpoints" / ckpt.LATEST
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it from mid-epoch 2 on, some steps after a checkpoint
        if latest.is_file():
            try:
                state = torch.load(latest, weights_only=True)
            except Exception:
                state = None
            # at or past the point, not only inside epoch 2: a poll may miss that epoch's few steps
            if state and (state["epoch"], state["batches_done"]) >= (1, 2):
                break
        time.sleep(0.05)
    assert killed.poll() is None, "training ended before the test could kill it"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    resumed = subprocess.run(train_command(config, data, tmp_path / "killed"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_trainer_of_the_same_experiment_is_refused_and_the_first_is_unharmed(data, tmp_path):
    config = write_config(tmp_path / "c.yaml")
    straight = subprocess.run(train_command(config, data, tmp_path / "straight"), capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    first = subprocess.Popen(train_command(config, data, tmp_path / "exp"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "exp" / ".stage1.lock"
    deadline = time.time() + 60
    while not lock.is_file() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    second = subprocess.run(train_command(config, data, tmp_path / "exp"), capture_output=True, text=True)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 75, second.stderr
    line, = second.stderr.strip().splitlines()  # one line, naming the holder
    assert line.startswith(f"tsekit: error: {tmp_path / 'exp' / 'stage1'} is being written by another process")
    assert f"PID {first.pid}," in line and "tsekit train --config" in line and "started 20" in line
    assert second.stdout == ""
    assert not lock.exists()  # released at the end
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "exp")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_write_that_dies_half_way_leaves_the_previous_one(tmp_path):
    path = tmp_path / "checkpoints" / ckpt.LATEST
    path.parent.mkdir()
    ckpt.save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 1})
    with pytest.raises((AttributeError, pickle.PicklingError)):  # torch.save fails part-way: a lambda
        ckpt.save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "step": 2, "bad": lambda: None})
    assert ckpt.load_checkpoint(path)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == [ckpt.LATEST]  # no temporary file left behind


def test_averaging_takes_the_mean_of_the_model_weights_only(tmp_path):
    paths = []
    for index, value in enumerate([1.0, 2.0, 6.0]):
        paths.append(tmp_path / f"epoch{index + 1}.pt")
        ckpt.save_checkpoint(paths[-1], {"model": {"w": torch.full((3,), value), "count": torch.tensor(index)},
                                         "optimizer": {"m": torch.ones(5)}, "config": {"c": index}, "speakers": []})
    averaged = ckpt.load_checkpoint(ckpt.average_checkpoints(paths, tmp_path / ckpt.AVERAGED))
    assert torch.equal(averaged["model"]["w"], torch.full((3,), 3.0)) and averaged["model"]["count"] == 0
    assert averaged["config"] == {"c": 0} and averaged["averaged_from"] == ["epoch1.pt", "epoch2.pt", "epoch3.pt"]
    assert "optimizer" not in averaged
    alone = ckpt.load_checkpoint(ckpt.average_checkpoints(paths[1:2], tmp_path / "alone.pt"))
    assert torch.equal(alone["model"]["w"], torch.full((3,), 2.0))


def test_a_linked_checkpoint_outlives_its_source_and_is_replaced_alone(tmp_path):
    epoch, latest = tmp_path / "epoch1.pt", tmp_path / ckpt.LATEST
    ckpt.save_checkpoint(latest, {"model": {"w": torch.zeros(2)}, "step": 0})
    ckpt.save_checkpoint(epoch, {"model": {"w": torch.ones(2)}, "step": 1})
    ckpt.link_checkpoint(epoch, latest)
    assert ckpt.load_checkpoint(latest)["step"] == 1
    ckpt.save_checkpoint(latest, {"model": {"w": torch.ones(2)}, "step": 2})  # a later save replaces the name
    assert ckpt.load_checkpoint(epoch)["step"] == 1
    epoch.unlink()  # dropped from the best: latest.pt stays
    assert ckpt.load_checkpoint(latest)["step"] == 2 and sorted(p.name for p in tmp_path.iterdir()) == [ckpt.LATEST]


def test_corrupt_checkpoint_and_unknown_key_give_one_line_errors(data, tmp_path):
    config = write_config(tmp_path / "c.yaml", train={"epochs": 1})
    folder = tmp_path / "exp" / "stage1" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / ckpt.LATEST).write_bytes(b"not a checkpoint")
    proc = subprocess.run(train_command(config, data, tmp_path / "exp"), capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"tsekit: error: {folder / ckpt.LATEST}: not a readable checkpoint "
        + proc.stderr.split("not a readable checkpoint ", 1)[1].strip()]
    proc = subprocess.run(train_command(config, data, tmp_path / "exp2", "optim.lrate=1"), capture_output=True,
                          text=True)
    assert proc.returncode == 1 and "lrate" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_nonfinite_guard_stops_after_too_many_bad_steps(data, tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml"), ["train.max_nonfinite=2", "optim.lr=1e30",
                                                          "optim.grad_clip=0"])
    with pytest.raises(TsekitError, match="non-finite loss or gradient"):
        train(cfg, data / "train-100", data / "dev", tmp_path / "exp")


def test_stage2_starts_from_stage1_and_freezes(data, tmp_path):
    config = write_config(tmp_path / "c.yaml", train={"epochs": 1})
    assert subprocess.run(train_command(config, data, tmp_path / "exp"), capture_output=True).returncode == 0
    stage1 = tmp_path / "exp" / "stage1" / "checkpoints" / ckpt.AVERAGED
    cfg = load_config(config, [f"stage2.init_from={stage1}", "stage2.freeze=[speaker_encoder]"])
    train(cfg, data / "train-100", data / "dev", tmp_path / "exp", stage=2)
    before = ckpt.load_checkpoint(stage1)["model"]
    after = ckpt.load_checkpoint(tmp_path / "exp" / "stage2" / "checkpoints" / ckpt.LATEST)["model"]
    frozen = [k for k in before if k.startswith("speaker_encoder") and before[k].is_floating_point()]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if not k.startswith("speaker_encoder"))
    # a stage-1 checkpoint of another model size: one line naming it, nothing trained
    wider = write_config(tmp_path / "wider.yaml", train={"epochs": 1},
                         model={"params": {**TINY["model"]["params"], "embed_dim": 24}})
    proc = subprocess.run(train_command(wider, data, tmp_path / "exp_wider", "--stage", "2", "--init-from",
                                        str(stage1)), capture_output=True, text=True)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"{stage1}: weights do not fit model spex_plus as configured (" in proc.stderr
    assert "of another shape, e.g. " in proc.stderr and " in the checkpoint, " in proc.stderr
    assert not (tmp_path / "exp_wider" / "stage2" / "checkpoints").exists()


def test_stage1_fine_tunes_from_an_experiment(data, tmp_path):
    config = write_config(tmp_path / "c.yaml", train={"epochs": 1})
    assert subprocess.run(train_command(config, data, tmp_path / "base"), capture_output=True).returncode == 0
    base = ckpt.load_checkpoint(tmp_path / "base" / "stage1" / "checkpoints" / ckpt.AVERAGED)["model"]
    proc = subprocess.run(train_command(config, data, tmp_path / "tuned", "--init-from", str(tmp_path / "base"),
                                        "train.max_steps_per_epoch=1", "optim.lr=1e-9"),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    averaged = tmp_path / "base" / "stage1" / "checkpoints" / ckpt.AVERAGED
    assert f"initialised from {averaged}" in proc.stdout + proc.stderr
    tuned = ckpt.load_checkpoint(tmp_path / "tuned" / "stage1" / "checkpoints" / ckpt.LATEST)["model"]
    # one step at a vanishing learning rate: the weights are the base's, not a fresh initialisation
    weights = [k for k in base if base[k].is_floating_point() and not k.endswith(("running_mean", "running_var"))]
    assert weights and all(torch.allclose(base[k], tuned[k], atol=1e-5) for k in weights)
    # an experiment that is not there: one line naming the setting, before any training
    proc = subprocess.run(train_command(config, data, tmp_path / "lost", f"train.init_from={tmp_path / 'nowhere'}"),
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        f"tsekit: error: train.init_from: {tmp_path / 'nowhere'}: no such experiment directory or packaged model")


def test_two_process_torchrun_trains(data, tmp_path):
    config = write_config(tmp_path / "c.yaml", train={"epochs": 2})
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "tsekit",
               *train_command(config, data, tmp_path / "exp")[1:]]
    with writer_lock(tmp_path / "exp" / "stage1"):  # another writer: both ranks stop, none waits for ever
        refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "is being written by another process" in refused.stderr
    assert not (tmp_path / "exp" / "stage1").exists()
    odd = subprocess.run([*command, "data.batch_size=3"], capture_output=True, text=True, timeout=120)
    assert odd.returncode != 0 and "data.batch_size 3 is the batch of all 2 processes together" in odd.stderr
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("trained:") == 1  # only rank 0 reports and writes
    assert "batch 4 in all (2 in each of 2 processes)" in proc.stdout
    latest = ckpt.load_checkpoint(tmp_path / "exp" / "stage1" / "checkpoints" / ckpt.LATEST)
    assert (tmp_path / "exp" / "stage1" / "checkpoints" / ckpt.AVERAGED).is_file()
    # each rank drew from its own stream: the saved states give different draws
    draws = []
    for state in latest["rng"]:
        ckpt.set_rng_state(state, torch.device("cpu"))
        draws.append((torch.rand(4), np.random.rand(4).tolist(), random.random()))
    assert len(draws) == 2
    assert not torch.equal(draws[0][0], draws[1][0]) and draws[0][1] != draws[1][1] and draws[0][2] != draws[1][2]


def logged(stage: Path, name: str) -> list[float]:
    return [float(line.split("\t")[2]) for line in (stage / "log" / "scalars.tsv").read_text().splitlines()
            if line.split("\t")[1] == name]


def test_two_processes_with_half_batches_train_like_one_process(data, tmp_path):
    """torchrun with 2 processes = 1 process at the same data.batch_size (4: 2 in each process): the same loss at
    every step and validation.

    Stage 2 with the speaker encoder frozen: its BatchNorm layers then use their
    running statistics, which do not depend on how a batch is split (in training
    mode each process would normalise with its half's statistics). Validation
    has an odd number of rows, so the ranks' shards are uneven. The runs agree
    to float rounding, which Adam slowly amplifies (a parameter whose true
    gradient is zero, like the decoder bias under the mean-removing SI-SDR,
    moves by +-lr in the direction of its rounding noise): after 16 steps the
    validation losses drifted 0.1% apart, so the runs are kept to 8 steps.
    """
    config = write_config(tmp_path / "c.yaml", train={"epochs": 1})
    assert subprocess.run(train_command(config, data, tmp_path / "init"), capture_output=True).returncode == 0
    rows = sorted(read_table(data / "dev" / "wav.scp"))[:-1]
    (tmp_path / "rows").write_text("".join(f"{row}\n" for row in rows))
    subset_data_dir(data / "dev", tmp_path / "rows", tmp_path / "data" / "dev")
    (tmp_path / "data" / "train-100").symlink_to(data / "train-100")
    stage2 = ["--stage", "2", "--init-from", str(tmp_path / "init" / "stage1" / "checkpoints" / ckpt.AVERAGED),
              "stage2.freeze=[speaker_encoder]", "train.epochs=2", "train.max_steps_per_epoch=4"]
    one = subprocess.run(train_command(config, tmp_path / "data", tmp_path / "one", *stage2),
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m",
                "tsekit"]
    two = subprocess.run([*torchrun, *train_command(config, tmp_path / "data", tmp_path / "two", *stage2)[1:]],
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("trained:") == 1  # only rank 0 reports and writes
    for name in ("train/loss", "valid/loss"):
        expected = logged(tmp_path / "one" / "stage2", name)
        assert len(set(expected)) == len(expected) > 1  # it trains: the losses move
        assert logged(tmp_path / "two" / "stage2", name) == pytest.approx(expected, rel=1e-3), name


def test_best_checkpoints_follow_the_chosen_valid_metric(data, tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml"), ["train.epochs=3", "train.keep_best=1",
                                                          "train.valid_metric=si_sdr@estimate_long"])
    stage = train(cfg, data / "train-100", data / "dev", tmp_path / "exp")
    logged = {}
    for line in (stage / "log" / "scalars.tsv").read_text().splitlines():
        step, name, value = line.split("\t")
        logged.setdefault(name, []).append(float(value))
    chosen = logged["valid/si_sdr@estimate_long"]
    assert len(chosen) == 3 and len(logged["valid/loss"]) == 3
    [(value, name)] = ckpt.read_best(stage / "checkpoints")
    assert value == pytest.approx(min(chosen), rel=1e-5)
    assert name == f"epoch{chosen.index(min(chosen)) + 1}.pt"


def test_training_with_absent_and_silent_targets_gives_finite_losses(data, tmp_path):
    """SpEx+ with a third of absent and a third of partly silent examples, in training and validation, and the
    thresholded SNR: no step has a non-finite loss (max_nonfinite 0 stops at the first), every logged loss is
    finite, and the config keeps the model's output level."""
    tsnr = [{"name": "tsnr", "output": output, "weight": weight}
            for output, weight in (("estimate", 0.8), ("estimate_middle", 0.1), ("estimate_long", 0.1))]
    config = write_config(tmp_path / "c.yaml", train={"epochs": 2, "max_nonfinite": 0},
                          loss=[*tsnr, {"name": "speaker_ce", "output": "speaker_logits"}],
                          data={"absent_fraction": 0.34, "silent_fraction": 0.33, "absent_in_valid": True})
    cfg = load_config(config)
    assert cfg.infer.output_level == "none"
    train(cfg, data / "train-100", data / "dev", tmp_path / "exp")
    stage = tmp_path / "exp" / "stage1"
    for name in ("train/loss", "train/tsnr@estimate", "valid/loss", "valid/tsnr@estimate"):
        values = logged(stage, name)
        assert values and np.isfinite(values).all(), (name, values)
    assert len(logged(stage, "valid/loss")) == 2
