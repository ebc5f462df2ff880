"""Experiment configuration: one YAML per experiment, typed, with every key checked.

A config is a tree of dataclasses (``ExperimentConfig`` at the top). Loading
builds that tree from plain YAML, applies ``key.sub=value`` overrides from the
command line, and validates everything before any training starts, because
a typo found after an hour of training (``optim.lr`` spelled ``optim.lrate``
silently ignored) costs the hour:

- an unknown key, in the file or in an override, is an error that names the
  dotted key and lists the valid keys at that level;
- a value of the wrong type is an error naming the key, the expected type and
  what was given (an int is accepted where a float is expected, and so is a
  string like ``1e-3``, which YAML 1.1 reads as a string);
- ``model.params`` is checked against the constructor of the registered model
  (``tsekit.models.registry.model_params``), loss names against
  ``tsekit.train.losses.LOSSES``, and a few values against their ranges.

Every error is one ``TsekitError`` line that starts with the file it comes
from, or with the override (``override 'optim.lr=x'``) that caused it.

The resolved config (``save_config``) holds every key with its value, so an
experiment dir's ``config.yaml`` alone rebuilds the same config later with
``load_config(path, [])``. Only ``yaml.safe_load`` / ``yaml.safe_dump`` are used.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import os
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tsekit import TsekitError
from tsekit.jobs import atomic_open


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
    (si_sdr, snr); speaker_ce always uses ``batch["speaker"]``.
    """

    name: str
    output: str = "estimate"
    weight: float = 1.0
    target: str = "target"

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
    path = Path(path)
    raw = read_sections(path, ExperimentConfig)
    overrides = list(overrides)
    original = copy.deepcopy(raw)
    for text in overrides:
        _apply_override(raw, text, str(path))
    return _validated(raw, str(path), overrides, original)


def read_sections(path: Path, config_class: type) -> dict:
    """The plain data of a config file: a mapping of ``config_class``'s sections (empty file: {}).

    One-line errors for a missing file, invalid YAML or anything but a mapping.
    """
    if not path.is_file():
        raise TsekitError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise TsekitError(f"{path}: not valid YAML: {_one_line(e)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TsekitError(f"{path}: expected a mapping of sections ({', '.join(_field_names(config_class))}),"
                          f" got {_kind(raw)}")
    return raw


def config_from_dict(data: dict | None, source: str = "config") -> ExperimentConfig:
    """Build and validate a config from plain data (a parsed YAML); errors start with ``source``."""
    if data is None:
        data = {}
    return _validated(data, source, [])


def config_to_dict(cfg: ExperimentConfig) -> dict:
    """Plain dict/list/scalar data of a config (tuples as lists), in field order."""
    return _plain(dataclasses.asdict(cfg))


def config_value(cfg: ExperimentConfig, key: str) -> str:
    """One resolved setting by dotted key (``distill.teacher``), as ``--print-value`` prints it for the recipes.

    Scalars as YAML writes them (``true``, ``0.004``), sections and lists in flow style on one line, null as the
    empty string.
    """
    value: Any = config_to_dict(cfg)
    for depth, part in enumerate(key.split(".")):
        if not isinstance(value, dict) or part not in value:
            where = ".".join(key.split(".")[:depth]) or "the config"
            known = ", ".join(value) if isinstance(value, dict) else f"a {type(value).__name__}, not a section"
            raise TsekitError(f"config has no {key}: {where} has {known}")
        value = value[part]
    if value is None:
        return ""
    # a bare scalar document ends with "...": the value is the first line
    text = yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=True, width=float("inf"))
    return text.splitlines()[0]


class _Dumper(yaml.SafeDumper):
    """yaml.safe_dump's dumper, writing lists of scalars on one line (``betas: [0.9, 0.999]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(item, (dict, list)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def format_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (``--print-config``); loading it back gives the same config."""
    return yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=110)


def save_config(cfg: ExperimentConfig, path: str | os.PathLike) -> None:
    """Write the resolved config atomically (never a half-written config.yaml)."""
    with atomic_open(path) as f:
        f.write(format_config(cfg))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as a YAML scalar/list/mapping)."""
    key, sep, raw_value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(part.strip() for part in parts):
        raise TsekitError(f"override {text!r}: expected key.sub=value")
    return [part.strip() for part in parts], parse_yaml_value(raw_value, f"override {text!r}")


def parse_yaml_value(text: str, blame: str) -> Any:
    """A value given on the command line, as YAML (scalar, list or mapping); ``yaml.safe_load``, so a ``!!python``
    tag is refused. Errors are one line starting with ``blame`` (the option as given)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TsekitError(f"{blame}: value is not valid YAML: {_one_line(e)}") from None


def checked_model_params(model: str, params: dict[str, Any]) -> dict[str, Any]:
    """Values replacing a trained system's ``model.params`` for one run (infer's and extract's ``--param``),
    checked as a config's are: names the model's constructor takes, values of its annotated types (converted as
    there: an int where a float is expected)."""
    try:
        return _checked_params(model, params, "model.params", complete=False)
    except _Problem as problem:
        raise TsekitError(f"--param: {problem.message}") from None


# ---------------------------------------------------------------------------------------------------------
# validation


class _Problem(Exception):
    """A validation failure at a dotted key; the caller adds which file or override it comes from."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


class _Unsupported(Exception):
    """A type annotation the checker does not know (only possible for model params: left unchecked)."""


def _validated(raw: dict, source: str, overrides: list[str], original: dict | None = None) -> ExperimentConfig:
    """The config of ``raw`` (the file's data with ``overrides`` applied; ``original`` = without them)."""
    try:
        return _checked(raw)
    except _Problem as problem:
        blame = _blame(problem, source, overrides, original)
        raise TsekitError(f"{blame}: {problem.message}") from None


def _checked(raw: dict) -> ExperimentConfig:
    cfg = _build(ExperimentConfig, raw, "")
    _check_model_params(cfg)
    _check_values(cfg)
    if cfg.infer.output_level is None:
        cfg.infer.output_level = default_output_level(cfg)
    return cfg


def default_output_level(cfg: ExperimentConfig) -> str:
    """``mixture_fit`` when the last training stage learns ``estimate`` with a scale-invariant loss, else ``none``.

    A loss that fixes the scale (SNR) already trains the output at the target's level.
    """
    from tsekit.train.losses import SCALE_INVARIANT

    last = cfg.stage2.loss if cfg.stage2.enabled and cfg.stage2.loss is not None else cfg.loss
    learns_level_free = any(t.output == "estimate" and t.name in SCALE_INVARIANT for t in last)
    return "mixture_fit" if learns_level_free else "none"


def _blame(problem: _Problem, source: str, overrides: list[str], original: dict | None) -> str:
    """Who to name in an error: the file when it fails alone the same way, else the override to blame.

    That is the last override whose key contains, or lies inside, the failing
    key; else the last one in the same section (``scheduler.decay=exponential``
    for a ``scheduler.min_lr`` problem); else all of them.
    """
    if not overrides:
        return source
    if original is not None:
        try:
            _checked(copy.deepcopy(original))
        except _Problem as alone:
            if alone.message == problem.message:
                return source
    failing = problem.key.split(".")
    keys = [(text, text.partition("=")[0].strip().split(".")) for text in reversed(overrides)]
    for text, parts in keys:
        common = min(len(parts), len(failing))
        if parts[:common] == failing[:common]:
            return f"override {text!r}"
    for text, parts in keys:
        if parts[0] == failing[0]:
            return f"override {text!r}"
    return f"{source} with overrides {' '.join(overrides)}"


def _build(cls: type, value: Any, key: str) -> Any:
    """A dataclass instance from a mapping: unknown keys and missing required keys are problems."""
    if not isinstance(value, dict):
        raise _Problem(key, f"{key}: expected a mapping, got {_kind(value)} {_show(value)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in value:
        if name not in fields:
            where = f"under {key!r}" if key else "at the top level"
            raise _Problem(_join(key, str(name)), f"unknown key {_join(key, str(name))!r};"
                                                  f" valid keys {where}: {', '.join(fields)}")
    kwargs = {}
    for name, spec in fields.items():
        if name in value:
            kwargs[name] = _coerce(value[name], hints[name], _join(key, name))
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise _Problem(_join(key, name), f"missing key {_join(key, name)!r}")
    return cls(**kwargs)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (and converted: int -> float, list -> tuple)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _coerce(value, option, key)
            except _Problem:
                if len(options) == 1:
                    break
        raise _type_problem(value, tp, key)
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise _Problem(key, f"{key}: expected one of {', '.join(map(str, args))}, got {_show(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is list or tp is list:
        if isinstance(value, (list, tuple)):
            item = args[0] if args else Any
            return [_coerce(v, item, f"{key}.{i}") for i, v in enumerate(value)]
    elif origin is tuple or tp is tuple:
        if isinstance(value, (list, tuple)):
            if not args or (len(args) == 2 and args[1] is Ellipsis):
                item = args[0] if args else Any
                return tuple(_coerce(v, item, f"{key}.{i}") for i, v in enumerate(value))
            if len(value) == len(args):
                return tuple(_coerce(v, a, f"{key}.{i}") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            item = args[1] if args else Any
            return {str(k): _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    else:
        raise _Unsupported(tp)
    raise _type_problem(value, tp, key)


def _type_problem(value: Any, tp: Any, key: str) -> _Problem:
    return _Problem(key, f"{key}: expected {_type_name(tp)}, got {_kind(value)} {_show(value)}")


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is list or tp is list:
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is tuple or tp is tuple:
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} {_type_name(args[0])}"
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict or tp is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _check_model_params(cfg: ExperimentConfig) -> None:
    """``model.params`` and ``stage2.params`` against the registered model's constructor: names, types."""
    from tsekit.models.registry import model_class

    try:
        model_class(cfg.model.name)
    except TsekitError as e:
        raise _Problem("model.name", f"model.name: {e}") from None
    cfg.model.params = _checked_params(cfg.model.name, cfg.model.params, "model.params", complete=True)
    cfg.stage2.params = _checked_params(cfg.model.name, cfg.stage2.params, "stage2.params", complete=False)


def _checked_params(model: str, given: dict, key: str, complete: bool) -> dict:
    """``given`` with values coerced to the constructor's annotations; unknown names (and, when
    ``complete``, missing required ones) are errors."""
    from tsekit.models.registry import model_class, model_params

    signature = model_params(model)
    kinds = {name: parameter.kind for name, parameter in signature.items()}
    if inspect.Parameter.VAR_KEYWORD in kinds.values():
        return given  # the model takes **kwargs: any name may be valid
    signature = {name: p for name, p in signature.items() if p.kind != inspect.Parameter.VAR_POSITIONAL}
    for name in given:
        if name not in signature:
            raise _Problem(f"{key}.{name}", f"unknown key '{key}.{name}'; valid parameters of model {model}: "
                                            f"{', '.join(signature) or '(none)'}")
    for name, parameter in signature.items():
        if complete and parameter.default is parameter.empty and name not in given and name != "num_speakers":
            # num_speakers may stay unset: the trainer fills it from the training speaker list
            raise _Problem(f"{key}.{name}", f"missing key '{key}.{name}' (model {model} has no default for it)")
    try:
        hints = typing.get_type_hints(model_class(model).__init__)
    except Exception:  # noqa: BLE001  (annotations we cannot resolve are simply not type-checked)
        hints = {}
    params = dict(given)
    for name, value in params.items():
        if name in hints:
            try:
                params[name] = _coerce(value, hints[name], f"{key}.{name}")
            except _Unsupported:
                pass
    return params


def _check_loss(terms: list[LossTerm], key: str, known: dict) -> list[str]:
    """The labels of a loss list, checked: known names, weights >= 0, no label twice."""
    if not terms:
        raise _Problem(key, f"{key}: needs at least one term")
    labels: list[str] = []
    for i, term in enumerate(terms):
        if term.name not in known:
            raise _Problem(f"{key}.{i}.name", f"{key}.{i}.name: unknown loss {term.name!r};"
                                              f" valid losses: {', '.join(sorted(known))}")
        _require(math.isfinite(term.weight) and term.weight >= 0, f"{key}.{i}.weight", ">= 0", term.weight)
        if term.label in labels:
            raise _Problem(f"{key}.{i}", f"{key}.{i}: a second {term.label!r} term; "
                                         "terms need different names, outputs or targets")
        labels.append(term.label)
    return labels


def _check_values(cfg: ExperimentConfig) -> None:
    """Ranges and cross-field rules that the types alone do not express."""
    from tsekit.train.losses import LOSSES

    data, optim, sched, train = cfg.data, cfg.optim, cfg.scheduler, cfg.train
    _require(data.sample_rate > 0, "data.sample_rate", "> 0", data.sample_rate)
    for name in ("chunk_seconds", "enroll_seconds"):
        value = getattr(data, name)
        _require(value is None or (math.isfinite(value) and value > 0), f"data.{name}", "> 0 or null", value)
    for name in ("dm_sir_range", "dm_snr_range"):
        low, high = getattr(data, name)
        _require(math.isfinite(low) and math.isfinite(high) and low <= high, f"data.{name}",
                 "[low, high] with low <= high", [low, high])
    _require(data.batch_size >= 1, "data.batch_size", ">= 1", data.batch_size)
    _require(data.valid_batch_size >= 1, "data.valid_batch_size", ">= 1", data.valid_batch_size)
    _require(data.num_workers >= 0, "data.num_workers", ">= 0", data.num_workers)

    labels = _check_loss(cfg.loss, "loss", LOSSES)
    if cfg.stage2.loss is not None:
        labels += _check_loss(cfg.stage2.loss, "stage2.loss", LOSSES)

    _require(math.isfinite(optim.lr) and optim.lr > 0, "optim.lr", "> 0", optim.lr)
    _require(optim.weight_decay >= 0, "optim.weight_decay", ">= 0", optim.weight_decay)
    _require(all(0 <= b < 1 for b in optim.betas), "optim.betas", "two values in [0, 1)", list(optim.betas))
    _require(math.isfinite(optim.eps) and optim.eps > 0, "optim.eps", "> 0", optim.eps)
    _require(optim.grad_clip >= 0, "optim.grad_clip", ">= 0 (0 = off)", optim.grad_clip)

    _require(0 < sched.factor < 1, "scheduler.factor", "in (0, 1)", sched.factor)
    _require(sched.patience >= 0, "scheduler.patience", ">= 0", sched.patience)
    _require(sched.warmup_steps >= 0, "scheduler.warmup_steps", ">= 0", sched.warmup_steps)
    _require(0 <= sched.min_lr <= optim.lr, "scheduler.min_lr", f">= 0 and <= optim.lr ({optim.lr:g})",
             sched.min_lr)
    if sched.name == "warmup_decay" and sched.decay == "exponential":
        _require(sched.min_lr > 0, "scheduler.min_lr", "> 0 for exponential decay (it decays towards min_lr)",
                 sched.min_lr)

    _require(train.epochs >= 1, "train.epochs", ">= 1", train.epochs)
    _require(cfg.stage2.epochs is None or cfg.stage2.epochs >= 1, "stage2.epochs", ">= 1 or null", cfg.stage2.epochs)
    _require(cfg.stage2.lr is None or (math.isfinite(cfg.stage2.lr) and cfg.stage2.lr > 0), "stage2.lr",
             "> 0 or null", cfg.stage2.lr)
    _require(0 <= train.ema < 1, "train.ema", "in [0, 1) (0 = off)", train.ema)
    _require(train.keep_best >= 1, "train.keep_best", ">= 1", train.keep_best)
    _require(train.max_nonfinite >= 0, "train.max_nonfinite", ">= 0", train.max_nonfinite)
    _require(train.log_interval >= 1, "train.log_interval", ">= 1", train.log_interval)
    _require(train.save_interval >= 0, "train.save_interval", ">= 0 (0 = off)", train.save_interval)
    _require(train.max_steps_per_epoch is None or train.max_steps_per_epoch >= 1, "train.max_steps_per_epoch",
             ">= 1 or null", train.max_steps_per_epoch)
    if train.valid_metric != "loss" and train.valid_metric not in labels:
        raise _Problem("train.valid_metric", f"train.valid_metric: expected one of loss, {', '.join(labels)};"
                                             f" got {train.valid_metric!r}")
    _require(math.isfinite(cfg.infer.peak) and 0 < cfg.infer.peak <= 1, "infer.peak", "in (0, 1]", cfg.infer.peak)
    for i, prefix in enumerate(cfg.stage2.freeze):
        _require(bool(prefix.strip()), f"stage2.freeze.{i}", "a non-empty parameter-name prefix", prefix)


def _require(ok: bool, key: str, what: str, value: Any) -> None:
    if not ok:
        raise _Problem(key, f"{key}: must be {what}, got {_show(value)}")


# ---------------------------------------------------------------------------------------------------------
# overrides


def _apply_override(raw: dict, text: str, source: str) -> None:
    """Set one ``a.b.c=value`` in the raw config, checking each key of the path against the schema.

    Sections absent from the file are filled with their defaults first, so
    ``loss.1.weight=0.2`` works on the default loss list. The value replaces
    what is there (a mapping value replaces the whole section); its type is
    checked afterwards with the rest of the config.
    """
    parts, value = parse_override(text)
    blame = f"override {text!r}"
    tp: Any = ExperimentConfig
    node: Any = raw
    for depth, part in enumerate(parts):
        key, parent = ".".join(parts[: depth + 1]), ".".join(parts[:depth])
        last = depth == len(parts) - 1
        tp = _without_none(tp)
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            fields = {f.name: f for f in dataclasses.fields(tp)}
            if part not in fields:
                where = f"under {parent!r}" if parent else "at the top level"
                raise TsekitError(f"{blame}: unknown key {key!r}; valid keys {where}: {', '.join(fields)}")
            if not isinstance(node, dict):
                raise TsekitError(f"{source}: {parent}: expected a mapping, got {_kind(node)} {_show(node)}")
            tp = typing.get_type_hints(tp)[part]
            if not last and node.get(part) is None:
                node[part] = _default_plain(fields[part])
        elif origin in (list, tuple):
            if not isinstance(node, list):
                raise TsekitError(f"{source}: {parent}: expected a list, got {_kind(node)} {_show(node)}")
            if not part.isdigit() or int(part) >= len(node):
                raise TsekitError(f"{blame}: {key}: {parent} is a list of {len(node)} items; "
                                  f"use an index 0..{len(node) - 1} or set the whole list")
            part = int(part)
            args = typing.get_args(tp)
            tp = args[0] if len(args) == 2 and args[1] is Ellipsis else args[min(part, len(args) - 1)]
        elif origin is dict or tp is Any:
            if not isinstance(node, dict):
                raise TsekitError(f"{blame}: {key}: {parent} is {_kind(node)}, not a mapping")
            tp = typing.get_args(tp)[1] if origin is dict else Any
            if not last and not isinstance(node.get(part), dict):
                node[part] = {}
        else:
            raise TsekitError(f"{blame}: {key}: {parent} is a single value ({_type_name(tp)}), it has no keys")
        if last:
            node[part] = value
        else:
            node = node[part]


def _default_plain(spec: dataclasses.Field) -> Any:
    """A field's default as plain data (a section the file left out), {} for a required section."""
    if spec.default_factory is not dataclasses.MISSING:
        value = spec.default_factory()
    elif spec.default is not dataclasses.MISSING:
        value = spec.default
    else:
        return {}
    if dataclasses.is_dataclass(value):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, list):
        return [_plain(dataclasses.asdict(v)) if dataclasses.is_dataclass(v) else _plain(v) for v in value]
    return _plain(value)


# ---------------------------------------------------------------------------------------------------------
# small helpers


def _without_none(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return options[0]
    return tp


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def _show(value: Any, limit: int = 60) -> str:
    text = repr(_plain(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
