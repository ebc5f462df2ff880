"""Experiment configuration: one YAML per experiment, typed, with every key checked.

A config is a tree of dataclasses (``ExperimentConfig`` at the top), loaded,
overridden (``key.sub=value``) and type-checked by ``tsekit.typed_config``,
whose errors are one line naming the file or override, the dotted key, the
expected type and, for an unknown key, the valid ones. On top of the types,
``model.params`` is checked against the constructor of the registered model
(``tsekit.models.registry.model_class``), loss names against
``tsekit.train.losses.LOSSES``, and a few values against their ranges.

The resolved config (``save_config``) holds every key with its value, so an
experiment dir's ``config.yaml`` alone rebuilds the same config later with
``load_config(path, [])``.
"""

from __future__ import annotations

import math
import os
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from tsekit import TsekitError
from tsekit.jobs import atomic_open
from tsekit.typed_config import ConfigProblem, build_typed, checked_arguments, format_config, load_typed, require


@dataclass
class ModelConfig:
    """The registered system to build and its constructor arguments."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """How training examples are cut, enrolled, mixed and batched."""

    sample_rate: int = 16000
    chunk_seconds: float | None = 4.0  # random fixed-length training chunks; null = whole utterances
    # enroll.scp; drawn from spk2enroll every step; or the target utterance itself (DDTSE's training)
    enroll: Literal["fixed", "sampled", "target"] = "fixed"
    enroll_seconds: float | None = None  # random crop of the enrollment; null = whole
    dynamic_mixing: bool = False  # remix sources of different speakers on the fly
    dm_sir_range: tuple[float, float] = (-5.0, 5.0)  # dB, target vs interference
    dm_noise: bool = False  # add noise from noise1.scp when remixing
    dm_snr_range: tuple[float, float] = (0.0, 20.0)  # dB, speech vs noise
    # Absent and silent targets (docs/training.md): shares of the training examples drawn per example. Absent: the
    # enrollment is of a speaker outside the mixture and the target is silence. Partly silent: the target speaks
    # in one span of the chunk only and the mixture loses the rest of it. The rest stay present targets. 0 = off
    absent_fraction: float = 0.0
    silent_fraction: float = 0.0
    # validation rows get the same shares (fixed per row) instead of all being present targets; the valid loss
    # then also measures the silence a system keeps
    absent_in_valid: bool = False
    batch_size: int = 8
    valid_batch_size: int = 1
    num_workers: int = 2
    # tsekit tokenize's outputs, one folder per data dir (<tokens>/<name of the data dir>), for models that read
    # codec tokens; recipe stage 3 writes dump/<codec>/<set>
    tokens: str | None = None


@dataclass
class LossTerm:
    """One weighted loss term: ``weight * LOSSES[name](outputs[output], batch[target])``.

    ``target`` is the batch key of the reference signal for the signal losses
    (si_sdr, snr, tsnr); speaker_ce always uses ``batch["speaker"]``.
    """

    name: str
    output: str = "estimate"
    weight: float = 1.0
    target: str = "target"
    snr_max: float = 30.0  # tsnr: the SNR (dB) past which a speaking-target example stops pulling (MixIT's)
    silent_snr_max: float = 20.0  # tsnr: dB under the mixture past which a silent-target output stops pulling (FUSS)
    # tsnr: the weight of a silent-target example against a speaking one. At 1 a silent output earns the floor
    # (-silent_snr_max) on every absent example and costs only 0 dB on a present one, which a small model takes
    silent_weight: float = 1.0

    @property
    def label(self) -> str:
        """Name of the term in logs: ``si_sdr@estimate`` (plus ``:target_key`` for another target)."""
        label = f"{self.name}@{self.output}"
        return label if self.target == "target" else f"{label}:{self.target}"


def spex_plus_loss() -> list[LossTerm]:
    """SpEx+'s multi-task loss: SI-SDR of the three decoders (0.8/0.1/0.1) plus 0.5 x speaker CE."""
    return [
        LossTerm("si_sdr", "estimate", 0.8),
        LossTerm("si_sdr", "estimate_middle", 0.1),
        LossTerm("si_sdr", "estimate_long", 0.1),
        LossTerm("speaker_ce", "speaker_logits", 0.5),
    ]


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8  # Adam's denominator floor
    grad_clip: float = 5.0  # max gradient norm; 0 = no clipping


@dataclass
class SchedulerConfig:
    """Learning-rate schedule; plateau (SpEx+'s halving) steps per epoch, warmup_decay per step."""

    name: Literal["none", "plateau", "warmup_decay"] = "plateau"
    factor: float = 0.5  # plateau: lr multiplier when the valid metric stops improving
    patience: int = 2  # plateau: epochs without improvement before reducing
    warmup_steps: int = 1000  # warmup_decay: linear warmup from 0
    decay: Literal["cosine", "linear", "exponential"] = "cosine"  # warmup_decay: shape down to min_lr
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 100
    seed: int = 0
    amp: bool = True  # mixed precision; only on GPU
    keep_best: int = 5  # best checkpoints kept (by valid_metric) besides latest
    valid_metric: str = "loss"  # "loss" or a loss term label such as si_sdr@estimate; lower is better
    max_nonfinite: int = 100  # steps with a NaN/inf loss or gradient skipped before training stops
    log_interval: int = 50  # steps between logged training scalars
    save_interval: int = 0  # steps between mid-epoch checkpoints; 0 = only at the end of an epoch
    max_steps_per_epoch: int | None = None  # null = the whole training set every epoch
    # decay of an exponential moving average of the weights; 0 = off. When on, validation, the saved
    # epochN.pt/averaged.pt weights and so inference use the average (latest.pt keeps both, for resuming)
    ema: float = 0.0
    # an experiment (root, stage folder or packaged model) or checkpoint file whose weights stage 1 starts from
    # (fine-tuning); a resumed run takes its own latest.pt instead
    init_from: str | None = None


@dataclass
class Stage2Config:
    enabled: bool = False  # the system trains a second stage (recipe stage 5)
    init_from: str | None = None  # stage-1 checkpoint to start from
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes that stay fixed
    loss: list[LossTerm] | None = None  # stage 2's loss; null = the top-level loss
    epochs: int | None = None  # stage 2's train.epochs; null = the same
    lr: float | None = None  # stage 2's optim.lr; null = the same
    params: dict[str, Any] = field(default_factory=dict)  # model.params that change in stage 2


@dataclass
class DistillConfig:
    """Stage-1 distillation towards a frozen teacher (tfgridnet_posneg): the teacher's targets join the batch.

    The teacher is a trained experiment (its root, a stage folder or a checkpoint file); its
    ``distillation_targets(batch)`` adds the batch keys a ``distill`` loss term compares the student's output
    with, and the student's ``distill_needs`` are read from the data besides its ``needs``.
    """

    teacher: str | None = None  # null: no distillation
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes that stay fixed while distilling


OutputLevel = Literal["mixture_fit", "none", "peak"]
OUTPUT_LEVELS: tuple[str, ...] = typing.get_args(OutputLevel)


@dataclass
class InferConfig:
    """How inference sets the level of an extracted waveform (``tsekit.infer.level``).

    A model trained with a scale-invariant loss (SI-SDR) outputs speech at an arbitrary level;
    ``mixture_fit`` rescales it by the least-squares gain to the mixture, which is the target's level
    when the estimate is the target. ``peak`` scales the output's peak to ``peak``; ``none`` keeps the
    model's level. Null resolves from the loss when the config is loaded (``default_output_level``), so
    the saved config records the choice.
    """

    output_level: OutputLevel | None = None
    peak: float = 0.9  # the output's peak amplitude with output_level: peak


@dataclass
class CodecRef:
    """A codec or vocoder a system speaks through (``tsekit.codec``), built in recipe stage 3.

    ``spec`` is a registered name (a pretrained codec whose weights are on disk, ``encodec_24khz``; ``params``
    go to its constructor: bandwidth, weights) or the experiment dir of one the toolkit trains, ``exp/<name>``,
    which stage 3 trains from ``conf/<name>.yaml`` when it is not trained yet. Null: the system needs none.
    """

    spec: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    loss: list[LossTerm] = field(default_factory=spex_plus_loss)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    distill: DistillConfig = field(default_factory=DistillConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    codec: CodecRef = field(default_factory=CodecRef)  # tokens and their decoder (token systems)
    vocoder: CodecRef = field(default_factory=CodecRef)  # mel -> waveform (mel systems)


# ---------------------------------------------------------------------------------------------------------
# public API


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read an experiment YAML, apply ``key.sub=value`` overrides in order, validate everything."""
    return load_typed(path, ExperimentConfig, _check_experiment, overrides)


def config_from_dict(data: dict | None, source: str = "config") -> ExperimentConfig:
    """Build and validate a config from plain data (a parsed YAML); errors start with ``source``."""
    return build_typed(data, ExperimentConfig, _check_experiment, source)


def save_config(cfg: ExperimentConfig, path: str | os.PathLike) -> None:
    """Write the resolved config atomically (never a half-written config.yaml)."""
    with atomic_open(path) as f:
        f.write(format_config(cfg))


def checked_model_params(model: str, params: dict[str, Any]) -> dict[str, Any]:
    """Values replacing a trained system's ``model.params`` for one run (infer's and extract's ``--param``),
    checked as a config's are: names the model's constructor takes, values of its annotated types (converted as
    there: an int where a float is expected)."""
    from tsekit.models.registry import model_class

    try:
        return checked_arguments(model_class(model), params, "model.params", f"model {model}")
    except ConfigProblem as problem:
        raise TsekitError(f"--param: {problem.message}") from None


CHUNK_FACTOR = 4  # default inference chunk = 4 x the training chunk (data.chunk_seconds)


def default_chunk_seconds(cfg: ExperimentConfig, model: object = None) -> float | None:
    """Inference chunk length: CHUNK_FACTOR x the training chunk; None (whole input) without one. Never longer
    than the longest input the loaded ``model`` takes at once (its ``longest_input_seconds``, e.g. whisper_cfm's
    share of Whisper's 30 s), so a system trained on whole utterances still takes a recording of any length."""
    chunk = None if cfg.data.chunk_seconds is None else CHUNK_FACTOR * cfg.data.chunk_seconds
    longest = getattr(model, "longest_input_seconds", None)
    if longest is not None and (chunk is None or chunk > longest):
        return longest
    return chunk


def default_output_level(cfg: ExperimentConfig) -> str:
    """``mixture_fit`` when the last training stage learns ``estimate`` with a scale-invariant loss, else ``none``.

    A loss that fixes the scale (SNR) already trains the output at the target's level.
    """
    from tsekit.train.losses import SCALE_INVARIANT

    last = cfg.stage2.loss if cfg.stage2.enabled and cfg.stage2.loss is not None else cfg.loss
    learns_level_free = any(t.output == "estimate" and t.name in SCALE_INVARIANT for t in last)
    return "mixture_fit" if learns_level_free else "none"


# ---------------------------------------------------------------------------------------------------------
# validation


def _check_experiment(cfg: ExperimentConfig) -> None:
    """What the types do not say (model params, ranges); fills ``infer.output_level`` when it is null."""
    _check_model_params(cfg)
    _check_values(cfg)
    if cfg.infer.output_level is None:
        cfg.infer.output_level = default_output_level(cfg)


def _check_model_params(cfg: ExperimentConfig) -> None:
    """``model.params`` and ``stage2.params`` against the registered model's constructor: names, types."""
    from tsekit.models.registry import model_class

    try:
        cls = model_class(cfg.model.name)
    except TsekitError as e:
        raise ConfigProblem("model.name", f"model.name: {e}") from None
    owner = f"model {cfg.model.name}"
    # num_speakers may stay unset: the trainer fills it from the training speaker list
    cfg.model.params = checked_arguments(cls, cfg.model.params, "model.params", owner, complete=True,
                                         filled_later=("num_speakers",))
    cfg.stage2.params = checked_arguments(cls, cfg.stage2.params, "stage2.params", owner)
def _check_loss(terms: list[LossTerm], key: str, known: dict) -> list[str]:
    """The labels of a loss list, checked: known names, weights >= 0, no label twice."""
    if not terms:
        raise ConfigProblem(key, f"{key}: needs at least one term")
    labels: list[str] = []
    for i, term in enumerate(terms):
        if term.name not in known:
            raise ConfigProblem(f"{key}.{i}.name", f"{key}.{i}.name: unknown loss {term.name!r};"
                                                   f" valid losses: {', '.join(sorted(known))}")
        require(math.isfinite(term.weight) and term.weight >= 0, f"{key}.{i}.weight", ">= 0", term.weight)
        for name in ("snr_max", "silent_snr_max"):
            value = getattr(term, name)
            require(math.isfinite(value) and value > 0, f"{key}.{i}.{name}", "> 0 (dB)", value)
        require(math.isfinite(term.silent_weight) and term.silent_weight >= 0, f"{key}.{i}.silent_weight", ">= 0",
                term.silent_weight)
        if term.label in labels:
            raise ConfigProblem(f"{key}.{i}", f"{key}.{i}: a second {term.label!r} term; "
                                              "terms need different names, outputs or targets")
        labels.append(term.label)
    return labels


def _check_silence_losses(cfg: ExperimentConfig) -> None:
    """Absent targets are all zeros: a loss on the target must stay defined there (``UNDEFINED_ON_SILENCE``)."""
    from tsekit.train.losses import UNDEFINED_ON_SILENCE

    for key, terms in (("loss", cfg.loss), ("stage2.loss", cfg.stage2.loss or [])):
        for i, term in enumerate(terms):
            if term.name in UNDEFINED_ON_SILENCE and term.target == "target":
                raise ConfigProblem(f"{key}.{i}.name", f"{key}.{i}.name: {term.name} is undefined on the silent "
                                                       "target of an absent-target example (data.absent_fraction "
                                                       f"{cfg.data.absent_fraction:g}); use tsnr")


def _check_values(cfg: ExperimentConfig) -> None:
    """Ranges and cross-field rules that the types alone do not express."""
    from tsekit.train.losses import LOSSES

    data, optim, sched, train = cfg.data, cfg.optim, cfg.scheduler, cfg.train
    require(data.sample_rate > 0, "data.sample_rate", "> 0", data.sample_rate)
    for name in ("chunk_seconds", "enroll_seconds"):
        value = getattr(data, name)
        require(value is None or (math.isfinite(value) and value > 0), f"data.{name}", "> 0 or null", value)
    for name in ("dm_sir_range", "dm_snr_range"):
        low, high = getattr(data, name)
        require(math.isfinite(low) and math.isfinite(high) and low <= high, f"data.{name}",
                 "[low, high] with low <= high", [low, high])
    for name in ("absent_fraction", "silent_fraction"):
        value = getattr(data, name)
        require(math.isfinite(value) and 0 <= value <= 1, f"data.{name}", "in [0, 1] (0 = off)", value)
    require(data.absent_fraction + data.silent_fraction <= 1, "data.silent_fraction",
            f"<= 1 - data.absent_fraction ({1 - data.absent_fraction:g}): the two shares together are at most "
            "every example", data.silent_fraction)
    require(data.batch_size >= 1, "data.batch_size", ">= 1", data.batch_size)
    require(data.valid_batch_size >= 1, "data.valid_batch_size", ">= 1", data.valid_batch_size)
    require(data.num_workers >= 0, "data.num_workers", ">= 0", data.num_workers)

    labels = _check_loss(cfg.loss, "loss", LOSSES)
    if cfg.stage2.loss is not None:
        labels += _check_loss(cfg.stage2.loss, "stage2.loss", LOSSES)
    if data.absent_fraction > 0:
        _check_silence_losses(cfg)

    require(math.isfinite(optim.lr) and optim.lr > 0, "optim.lr", "> 0", optim.lr)
    require(optim.weight_decay >= 0, "optim.weight_decay", ">= 0", optim.weight_decay)
    require(all(0 <= b < 1 for b in optim.betas), "optim.betas", "two values in [0, 1)", list(optim.betas))
    require(math.isfinite(optim.eps) and optim.eps > 0, "optim.eps", "> 0", optim.eps)
    require(optim.grad_clip >= 0, "optim.grad_clip", ">= 0 (0 = off)", optim.grad_clip)

    require(0 < sched.factor < 1, "scheduler.factor", "in (0, 1)", sched.factor)
    require(sched.patience >= 0, "scheduler.patience", ">= 0", sched.patience)
    require(sched.warmup_steps >= 0, "scheduler.warmup_steps", ">= 0", sched.warmup_steps)
    require(0 <= sched.min_lr <= optim.lr, "scheduler.min_lr", f">= 0 and <= optim.lr ({optim.lr:g})",
             sched.min_lr)
    if sched.name == "warmup_decay" and sched.decay == "exponential":
        require(sched.min_lr > 0, "scheduler.min_lr", "> 0 for exponential decay (it decays towards min_lr)",
                 sched.min_lr)

    require(train.epochs >= 1, "train.epochs", ">= 1", train.epochs)
    require(cfg.stage2.epochs is None or cfg.stage2.epochs >= 1, "stage2.epochs", ">= 1 or null", cfg.stage2.epochs)
    require(cfg.stage2.lr is None or (math.isfinite(cfg.stage2.lr) and cfg.stage2.lr > 0), "stage2.lr",
             "> 0 or null", cfg.stage2.lr)
    require(0 <= train.ema < 1, "train.ema", "in [0, 1) (0 = off)", train.ema)
    require(train.keep_best >= 1, "train.keep_best", ">= 1", train.keep_best)
    require(train.max_nonfinite >= 0, "train.max_nonfinite", ">= 0", train.max_nonfinite)
    require(train.log_interval >= 1, "train.log_interval", ">= 1", train.log_interval)
    require(train.save_interval >= 0, "train.save_interval", ">= 0 (0 = off)", train.save_interval)
    require(train.max_steps_per_epoch is None or train.max_steps_per_epoch >= 1, "train.max_steps_per_epoch",
             ">= 1 or null", train.max_steps_per_epoch)
    if train.valid_metric != "loss" and train.valid_metric not in labels:
        raise ConfigProblem("train.valid_metric", f"train.valid_metric: expected one of loss, {', '.join(labels)};"
                                                  f" got {train.valid_metric!r}")
    require(math.isfinite(cfg.infer.peak) and 0 < cfg.infer.peak <= 1, "infer.peak", "in (0, 1]", cfg.infer.peak)
    for i, prefix in enumerate(cfg.stage2.freeze):
        require(bool(prefix.strip()), f"stage2.freeze.{i}", "a non-empty parameter-name prefix", prefix)
