"""A tiny experiment trained on a fake Libri2Mix, for the tests that need a trained model on disk."""

from __future__ import annotations

from pathlib import Path

import yaml
from corpus_trees import make_libri2mix_tree

from tsekit.corpora.librimix import prepare_libri2mix
from tsekit.data.enroll import enroll_data_dir
from tsekit.train.config import ExperimentConfig, load_config
from tsekit.train.trainer import train

TINY_RATE = 8000
# SpEx+ small enough to train an epoch in seconds: the tests of inference and packaged models train it
TINY_SPEX_PLUS = {
    "model": {"name": "spex_plus", "params": {
        "num_filters": 16, "channels": 16, "hidden_channels": 32, "num_blocks": 2, "num_stacks": 2,
        "embed_dim": 16, "speaker_hidden": 16, "speaker_blocks": 1}},
    "data": {"sample_rate": TINY_RATE, "chunk_seconds": 0.3, "batch_size": 4, "num_workers": 0},
    "train": {"epochs": 1, "log_interval": 1},
}


def prepare_tiny(root: Path, rate: int, per_split: int = 16) -> Path:
    """Prepare and enroll ROOT/data/{train-100,dev} from a fake Libri2Mix at ``rate``; returns ROOT/data."""
    make_libri2mix_tree(root / "Libri2Mix", rates=(rate,), splits=("train-100", "dev"), per_split=per_split)
    prepare_libri2mix(root / "Libri2Mix", root / "data", sample_rate=rate, splits=("train-100", "dev"))
    for split in ("train-100", "dev"):
        enroll_data_dir(root / "data" / split)
    return root / "data"


def train_tiny(root: Path, config: dict, rate: int, per_split: int = 16) -> tuple[ExperimentConfig, Path]:
    """Prepare and enroll ROOT/data/{train-100,dev} at ``rate``, train ``config`` into ROOT/exp (stage 1).

    Returns the loaded config and the data folder.
    """
    prepare_tiny(root, rate, per_split)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    cfg = load_config(root / "config.yaml")
    train(cfg, root / "data" / "train-100", root / "data" / "dev", root / "exp", device="cpu")
    return cfg, root / "data"


def codec_experiment(exp: Path, name: str, params: dict, seed: int) -> Path:
    """A codec or vocoder experiment dir as ``tsekit codec train`` leaves it (config.yaml, codec.pt), holding the
    random weights ``seed`` gives: another seed is the same codec retrained."""
    import torch

    from tsekit import checkpoint as ckpt
    from tsekit.codec.registry import build_codec

    torch.manual_seed(seed)
    codec = build_codec(name, params)
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "config.yaml").write_text(yaml.safe_dump({"codec": {"name": name, "params": params}}))
    ckpt.save_checkpoint(exp / "codec.pt", {"model": codec.state_dict(), "step": 0})
    return exp
