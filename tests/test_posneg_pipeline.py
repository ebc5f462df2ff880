"""The pos/neg systems through the engine: dataset clips, teacher, distillation stage, frozen stage 2, inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from corpus_trees import make_libri2mix_tree

from tsekit import TsekitError
from tsekit import checkpoint as ckpt
from tsekit.corpora.librimix import prepare_libri2mix
from tsekit.data.audio import load_audio
from tsekit.data.dataset import TSEDataset, collate
from tsekit.data.enroll import enroll_data_dir
from tsekit.data.table import read_table
from tsekit.infer import extract_file, infer_data_dir
from tsekit.train.config import load_config
from tsekit.train.trainer import train

RATE = 8000
SIZES = {"n_fft": 32, "hop": 16, "embed_dim": 8, "lstm_hidden": 8, "heads": 2, "attention_dim": 4}
TEACHER = {"model": {"name": "tfgridnet_speaker", "params": {**SIZES, "num_blocks": 1, "speaker_dim": 8}},
           "data": {"sample_rate": RATE, "chunk_seconds": 0.3, "enroll_seconds": 0.5, "batch_size": 4,
                    "num_workers": 0},
           "loss": [{"name": "speaker_ce", "output": "speaker_logits"}],
           "train": {"epochs": 1, "log_interval": 1}}


def student(name: str, teacher: Path) -> dict:
    return {"model": {"name": name, "params": {**SIZES, "num_blocks": 1, "enroll_blocks": 1, "head_layers": 1,
                                               **({"fusion_blocks": 1} if name == "tfgridnet_posneg" else {})}},
            "data": {"sample_rate": RATE, "chunk_seconds": 0.3, "batch_size": 4, "num_workers": 0},
            "loss": [{"name": "distill", "output": "cue", "target": "teacher_features"}],
            "distill": {"teacher": str(teacher), "freeze": ["extractor"]},
            "stage2": {"enabled": True, "freeze": ["enroll_encoder", "head"], "loss": [{"name": "snr"}], "epochs": 3},
            "optim": {"lr": 0.01},
            "train": {"epochs": 2, "log_interval": 1}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("posneg")
    make_libri2mix_tree(root / "Libri2Mix", rates=(RATE,), splits=("train-100", "dev"), per_split=16)
    prepare_libri2mix(root / "Libri2Mix", root / "data", sample_rate=RATE, splits=("train-100", "dev"))
    for split in ("train-100", "dev"):
        enroll_data_dir(root / "data" / split, posneg=True)
    return root / "data"


def test_dataset_gives_whole_clips_and_the_clean_enrollment_behind_the_positive(data):
    dataset = TSEDataset(data / "dev", frozenset({"target", "enroll_pos", "enroll_neg", "enroll_clean"}), RATE,
                         train=True, chunk_seconds=0.3)
    pos, neg, enroll = (read_table(data / "dev" / f) for f in ("enroll_pos.scp", "enroll_neg.scp", "enroll.scp"))
    items = [dataset[i] for i in range(3)]
    for item in items:
        utt = item["utt"]
        assert len(item["mixture"]) == round(0.3 * RATE)  # the mixture is chunked, the clips are not
        np.testing.assert_array_equal(item["enroll_pos"].numpy(), load_audio(pos[utt], "pos")[0])
        np.testing.assert_array_equal(item["enroll_neg"].numpy(), load_audio(neg[utt], "neg")[0])
        np.testing.assert_array_equal(item["enroll_clean"].numpy(), load_audio(enroll[utt], "clean")[0])
    # cropped for training: the clean enrollment keeps the positive's span, the negative has its own
    cropped = TSEDataset(data / "dev", dataset.needs, RATE, train=True, chunk_seconds=0.3, enroll_seconds=0.25)
    crop = round(0.25 * RATE)
    for index in range(3):
        item, example = cropped[index], cropped.example(index)
        utt = item["utt"]
        span = slice(example.pos_start, example.pos_start + crop)
        assert len(item["enroll_pos"]) == len(item["enroll_neg"]) == crop
        np.testing.assert_array_equal(item["enroll_pos"].numpy(), load_audio(pos[utt], "pos")[0][span])
        np.testing.assert_array_equal(item["enroll_clean"].numpy(), load_audio(enroll[utt], "clean")[0][span])
        neg_span = slice(example.neg_start, example.neg_start + crop)
        np.testing.assert_array_equal(item["enroll_neg"].numpy(), load_audio(neg[utt], "neg")[0][neg_span])
    assert len({cropped.example(i).pos_start for i in range(len(cropped))}) > 1  # the crops are random
    batch = collate(items)
    assert batch["enroll_pos_lengths"].tolist() == [len(i["enroll_pos"]) for i in items]
    assert batch["enroll_neg_lengths"].tolist() == [len(i["enroll_neg"]) for i in items]
    assert batch["enroll_clean"].shape == batch["enroll_pos"].shape


def weights(stage: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(stage / "checkpoints" / ckpt.LATEST)["model"]


def losses(stage: Path, name: str) -> list[float]:
    rows = [line.split("\t") for line in (stage / "log" / "scalars.tsv").read_text().splitlines()]
    return [float(value) for _, key, value in rows if key == name]


@pytest.mark.parametrize("name", ["tfgridnet_posneg", "tfgridnet_posneg_early"])
def test_teacher_distillation_then_frozen_extractor_training_then_inference(data, tmp_path, name):
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(TEACHER))
    train(load_config(tmp_path / "teacher.yaml"), data / "train-100", data / "dev", tmp_path / "teacher")
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(student(name, tmp_path / "teacher")))
    cfg = load_config(tmp_path / "student.yaml")

    stage1 = train(cfg, data / "train-100", data / "dev", tmp_path / "exp")
    first = ckpt.load_checkpoint(stage1 / "checkpoints" / "epoch1.pt")["model"]
    distilled = weights(stage1)
    assert losses(stage1, "train/distill@cue:teacher_features")  # the distillation term is what trained
    assert not losses(stage1, "train/snr@estimate")
    extractor = [k for k in distilled if k.startswith("extractor.") and distilled[k].is_floating_point()]
    # epoch 2 moved the enrollment encoder, not the extractor (frozen while distilling)
    assert extractor and all(torch.equal(first[k], distilled[k]) for k in extractor)
    assert any(not torch.equal(first[k], distilled[k]) for k in distilled if k.startswith("enroll_encoder."))

    cfg.stage2.init_from = str(stage1 / "checkpoints" / ckpt.AVERAGED)
    stage2 = train(cfg, data / "train-100", data / "dev", tmp_path / "exp", stage=2)
    trained = weights(stage2)
    start = ckpt.load_checkpoint(stage1 / "checkpoints" / ckpt.AVERAGED)["model"]
    cue_path = [k for k in trained if k.startswith(("enroll_encoder.", "head.")) and trained[k].is_floating_point()]
    assert cue_path and all(torch.equal(start[k], trained[k]) for k in cue_path)
    assert any(not torch.equal(start[k], trained[k]) for k in extractor)
    assert losses(stage2, "train/snr@estimate") and not losses(stage2, "train/distill@cue:teacher_features")
    assert len(losses(stage2, "valid/loss")) == 3  # stage2.epochs

    summary = infer_data_dir(tmp_path / "exp", data / "dev", tmp_path / "out")
    rows = read_table(data / "dev" / "wav.scp")
    assert summary.extracted == len(rows) and set(read_table(tmp_path / "out" / "wav.scp")) == set(rows)
    for utt, entry in rows.items():
        estimate, rate = load_audio(str(tmp_path / "out" / "wav" / f"{utt}.wav"), utt)
        assert rate == RATE and len(estimate) == len(load_audio(entry, utt)[0]) and np.abs(estimate).max() > 0

    # one file: the same estimate from tsekit extract's library call; the wrong enrollment kind is a clear error
    utt = sorted(rows)[0]
    clips = {k: read_table(data / "dev" / f"{k}.scp")[utt] for k in ("enroll_pos", "enroll_neg")}
    extract_file(tmp_path / "exp", rows[utt], clips, tmp_path / "one.wav")
    assert (tmp_path / "one.wav").read_bytes() == (tmp_path / "out" / "wav" / f"{utt}.wav").read_bytes()
    with pytest.raises(TsekitError, match="enrolled with --enroll-neg and --enroll-pos; given: --enroll"):
        extract_file(tmp_path / "exp", rows[utt], clips["enroll_pos"], tmp_path / "two.wav")
