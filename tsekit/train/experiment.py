"""A trained experiment: which checkpoint to load, and the model and config it rebuilds.

An experiment dir alone is enough: the checkpoint holds the resolved config,
which rebuilds the model (``config_from_dict`` + ``build_model``), and the
weights load with ``weights_only=True``, so nothing in the file can run code.
The codec or vocoder a system speaks through is recorded relative to the
stage folder, and found from there (``registry.resolve_codec_references``):
an experiment loads from any working directory and after its recipe folder
moved; the codec loaded must hold the weights it was trained through.

Which checkpoint (``find_checkpoint``): in the last training stage that has
one (``stage2`` before ``stage1``; or the stage folder given), ``averaged.pt``,
else the best entry of ``best.json``, else ``latest.pt``.

A packaged model (``tsekit export``; ``tsekit.train.package``) loads wherever an experiment does: its one set of
weights is its checkpoint.

Inference loads experiments, and so does training (a distillation teacher): it lives here, below both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tsekit import TsekitError
from tsekit import checkpoint as ckpt

if TYPE_CHECKING:
    from tsekit.models.registry import TSEModel
    from tsekit.train.config import ExperimentConfig


def _has_checkpoint(stage_dir: Path) -> bool:
    return any((stage_dir / "checkpoints").glob("*.pt"))


def find_stage(exp_dir: str | os.PathLike) -> Path:
    """The stage folder to load: ``exp_dir`` itself when it has checkpoints/, else its last trained stage."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise TsekitError(f"{exp_dir}: no such experiment directory or packaged model")
    if (exp_dir / "checkpoints").is_dir():
        return exp_dir
    stages = sorted((p for p in exp_dir.glob("stage*") if p.name[5:].isdigit()), key=lambda p: -int(p.name[5:]))
    for stage in stages:
        if _has_checkpoint(stage):
            return stage
    raise TsekitError(f"{exp_dir}: no trained stage (no stage*/checkpoints/*.pt); train it first")


def find_checkpoint(exp_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> Path:
    """The checkpoint file inference uses (see the module docstring).

    ``checkpoint`` may be a file path, or a file name inside the stage's checkpoints/ folder (``epoch3.pt``).
    A packaged model has one: its weights file.
    """
    from tsekit.train import package

    if package.is_package(exp_dir):
        if checkpoint is not None:
            raise TsekitError(f"{exp_dir}: a packaged model has one set of weights; --checkpoint applies to "
                              "experiment dirs")
        return package.package_dir(exp_dir) / package.WEIGHTS
    if checkpoint is not None:
        path = Path(checkpoint)
        if path.is_file():
            return path
        inside = find_stage(exp_dir) / "checkpoints" / path
        if inside.is_file():
            return inside
        raise TsekitError(f"{checkpoint}: checkpoint not found (neither a file nor in {inside.parent})")
    folder = find_stage(exp_dir) / "checkpoints"
    if (folder / ckpt.AVERAGED).is_file():
        return folder / ckpt.AVERAGED
    try:
        best = ckpt.read_best(folder)
    except (ValueError, TypeError) as err:
        raise TsekitError(f"{folder / ckpt.BEST_LIST}: unreadable ({err})") from None
    for _, name in best:
        if (folder / name).is_file():
            return folder / name
    if (folder / ckpt.LATEST).is_file():
        return folder / ckpt.LATEST
    raise TsekitError(f"{folder}: no checkpoint ({ckpt.AVERAGED}, the best of {ckpt.BEST_LIST} or {ckpt.LATEST})")


def load_experiment(exp_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu",
                    model_params: dict | None = None) -> tuple[TSEModel, ExperimentConfig]:
    """(model in eval mode on ``device``, its ExperimentConfig) of a trained experiment or stage folder.

    ``model_params`` replace model parameters of the stored config for this inference (a generative system's
    decoding settings: steps, guidance, temperature), checked against the model's constructor as the config's
    are (names, types); the returned config holds them, and the paths of its
    codec or vocoder as found from the working directory. ``device`` as torch takes it (the callers check a
    user's ``--device`` with ``torch_device``). ``exp_dir`` may be a packaged model (``checkpoint`` then None or its
    weights file).
    """
    from tsekit.codec.registry import resolve_codec_references
    from tsekit.models.registry import build_model
    from tsekit.train.config import checked_model_params, config_from_dict, load_config
    from tsekit.train.package import is_package, load_package

    if is_package(exp_dir):
        if checkpoint is not None and Path(checkpoint) != find_checkpoint(exp_dir):
            raise TsekitError(f"{checkpoint}: not the weights of packaged model {exp_dir}")
        return load_package(exp_dir, device, model_params)
    path = find_checkpoint(exp_dir, checkpoint)
    state = ckpt.load_checkpoint(path)
    if state.get("config") is not None:
        cfg = config_from_dict(state["config"], source=f"{path} (stored config)")
    elif (path.parent.parent / "config.yaml").is_file():  # a checkpoint written without its config
        cfg = load_config(path.parent.parent / "config.yaml")
    else:
        raise TsekitError(f"{path}: holds no config and there is no {path.parent.parent / 'config.yaml'}")
    if model_params:
        cfg.model.params = {**cfg.model.params, **checked_model_params(cfg.model.name, model_params)}
    cfg.model.params = resolve_codec_references(cfg.model.params, path.parent.parent)  # <stage>/checkpoints/<file>
    model = build_model(cfg.model.name, cfg.model.params)
    ckpt.load_weights(model, state["model"], path)
    return model.to(device).eval(), cfg
