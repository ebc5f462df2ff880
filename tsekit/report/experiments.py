"""What a report shows of each experiment: scores, estimates, commands, configs; the summary and the selection."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsekit import TsekitError
from tsekit.data.enroll import ENROLLMENT_FILES
from tsekit.data.table import read_lines, read_table, sorted_keys
from tsekit.metrics.results import (
    ACCEPTANCE_THRESHOLD,
    LOWER_IS_BETTER,
    ZERO_IS_BEST,
    acceptance,
    mean_std,
    read_scores,
)
from tsekit.metrics.scorer import IMPROVEMENTS, NO_BASELINE

# what best/worst selections rank by, the first that every system has: the improvement, the output's own SI-SDR,
# a conversation's SI-SDR over the target's turns, the energy an absent target's output lets through
RANKING_METRICS = ("si_sdri", "si_sdr", "si_sdr_active", "absent_energy")
SELECTIONS = ("best", "worst", "random", "list")
HEADER = re.compile(r"^# (.+)$")


@dataclass
class Command:
    """A command as the header of its log recorded it (utils/run.pl and utils/slurm.pl write one)."""

    log: Path
    command: str


@dataclass
class System:
    """One experiment's results on one data set."""

    name: str
    exp_dir: Path
    decode_dir: Path
    estimates: dict[str, str]  # utt -> scp entry of the extracted speech
    metrics: list[str]
    scores: dict[str, dict[str, float]]
    mixture: dict[str, dict[str, float]]  # the mixture's values of the non-improvement metrics (may be empty)
    enrollments: tuple[str, ...]  # data-dir keys of the enrollments it extracts from (enroll, enroll_pos, ...)
    configs: dict[str, str] = field(default_factory=dict)  # stage folder name -> config.yaml text
    # step -> commands, in the order the steps ran: teacher (its training, only when the config names a
    # distillation teacher), train, infer, score
    commands: dict[str, list[Command]] = field(default_factory=dict)


def _log_commands(logs: list[Path]) -> list[Command]:
    commands = []
    for log in logs:
        with open(log, encoding="utf-8", errors="replace") as f:
            match = HEADER.match(f.readline().rstrip("\n"))
        if match:
            commands.append(Command(log, match.group(1)))
    return commands


def _job_number(path: Path) -> tuple[int, str]:
    # infer.10.log after infer.9.log
    middle = path.name.split(".")[-2]
    return (int(middle), path.name) if middle.isdigit() else (0, path.name)


def _read_stage_config(path: Path) -> dict:
    """A stage's resolved config.yaml as data; it must name its model."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        config["model"]["name"]
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise TsekitError(f"{path}: no model.name in this config ({err})") from None
    return config


def _enrollments(config: dict | None, data_dir: Path) -> tuple[str, ...]:
    """The enrollment inputs of the system's model (by its config), or enroll when there is no config to ask."""
    if config is not None:
        from tsekit.models.registry import model_class

        return tuple(key for key in ENROLLMENT_FILES if key in model_class(config["model"]["name"]).needs)
    return ("enroll",) if (data_dir / ENROLLMENT_FILES["enroll"]).is_file() else ()


def _teacher_dir(config: dict | None, exp_dir: Path) -> Path | None:
    """The distillation teacher's experiment dir the config names (distill.teacher), if any.

    A relative path is relative to where training ran: the recipe folder, exp_dir's grandparent.
    """
    teacher = ((config or {}).get("distill") or {}).get("teacher")
    if not teacher:
        return None
    return Path(teacher) if Path(teacher).is_absolute() else exp_dir.resolve().parent.parent / teacher


def load_system(exp_dir: str | os.PathLike, data_dir: Path, utts: list[str]) -> System:
    """The results of EXP on DATA (EXP/decode_<basename of DATA>/); every utterance of DATA must be scored.

    EXP may also be a decode dir of DATA itself, ``exp/ddtse/decode_test_refine_zspex``: another decode of
    the same experiment (a refinement of another system's outputs), shown as system ``ddtse_refine_zspex``;
    or a codec's or vocoder's resynthesis of DATA's targets, ``exp/codec/resynth_test`` (recipe stage 3),
    shown as ``codec_resynth``: the ceiling of the systems that speak through it.
    """
    exp_dir = Path(exp_dir)
    decode = exp_dir / f"decode_{data_dir.name}"
    name = exp_dir.resolve().name
    if exp_dir.name.startswith(f"decode_{data_dir.name}_"):
        decode, exp_dir = exp_dir, exp_dir.parent
        name = f"{exp_dir.resolve().name}_{decode.name.removeprefix(f'decode_{data_dir.name}_')}"
    elif exp_dir.name == f"resynth_{data_dir.name}":
        decode, exp_dir = exp_dir, exp_dir.parent
        name = f"{exp_dir.resolve().name}_resynth"
    scores_path = decode / "scores" / "scores.tsv"
    if not scores_path.is_file():
        raise TsekitError(f"{scores_path}: not found; score {exp_dir} on {data_dir} first (recipe stage 7)")
    estimates = read_table(decode / "wav.scp")
    metrics, scores = read_scores(scores_path)
    for table, what, path in ((estimates, "estimate", decode / "wav.scp"), (scores, "score", scores_path)):
        missing = [u for u in utts if u not in table]
        if missing:
            raise TsekitError(f"{path}: no {what} for {len(missing)} of the {len(utts)} utterances of "
                              f"{data_dir / 'wav.scp'} (e.g. {missing[0]})")
    mixture_path = decode / "scores" / "mixture.tsv"
    mixture = read_scores(mixture_path)[1] if mixture_path.is_file() else {}
    # a mixture.tsv written before SAR lost its baseline holds the mixture's meaningless 100 dB: not shown
    mixture = {u: {m: v for m, v in row.items() if m not in NO_BASELINE} for u, row in mixture.items()}
    stage_dirs = sorted((p for p in exp_dir.glob("stage*") if p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))
    stage_configs = [p / "config.yaml" for p in stage_dirs if (p / "config.yaml").is_file()]
    codec_config = [exp_dir / "config.yaml"] if (exp_dir / "config.yaml").is_file() else []  # a codec's exp dir
    config = _read_stage_config(stage_configs[-1]) if stage_configs else None
    teacher = _teacher_dir(config, exp_dir)
    # in the order they ran: the page lists them so
    commands = {} if teacher is None else {"teacher": _log_commands(sorted((teacher / "log").glob("train_stage*.log")))}
    commands["train"] = _log_commands(sorted((exp_dir / "log").glob("train*.log")))  # a codec's: train.log
    runs = [*(decode / "log").glob("infer.*.log"), *(decode / "log").glob("resynth.*.log")]
    commands["infer"] = _log_commands(sorted(runs, key=_job_number))
    commands["score"] = _log_commands(sorted((decode / "scores" / "log").glob("score.*.log"), key=_job_number))
    return System(
        name=name, exp_dir=exp_dir, decode_dir=decode, estimates=estimates, metrics=metrics,
        scores=scores, mixture=mixture, enrollments=_enrollments(config, data_dir),
        configs={p.parent.name: p.read_text(encoding="utf-8") for p in stage_configs + codec_config},
        commands=commands)


@dataclass
class Cell:
    """One summary-table entry: mean ± std over the utterances, and the gain over the mixture."""

    mean: float
    std: float
    improvement: float | None = None
    best: bool = False


@dataclass
class Summary:
    metrics: list[str]
    mixture: dict[str, Cell]
    systems: dict[str, dict[str, Cell]]  # system -> metric -> cell (a metric it did not score is absent)
    acceptance: dict[str, tuple[int, int]]  # system -> (accepted, total), for systems with SI-SDRi
    threshold: float


def summarize(systems: list[System], utts: list[str], threshold: float = ACCEPTANCE_THRESHOLD) -> Summary:
    """Mean ± std per system and metric over ``utts``, as RESULTS.md computes them; the best value per column marked.

    The improvement is the system's mean minus the mean of its own mixture.tsv
    (SI-SDRi and SNRi are improvements already). The mixture row shows the
    first system's baseline that has the metric.
    """
    metrics = list(dict.fromkeys(m for system in systems for m in system.metrics))
    mixture: dict[str, Cell] = {}
    table: dict[str, dict[str, Cell]] = {}
    for system in systems:
        cells = {}
        for metric in system.metrics:
            mean, std, _ = mean_std([system.scores[u][metric] for u in utts])
            cell = Cell(mean, std)
            if metric not in IMPROVEMENTS and system.mixture and metric in system.mixture[utts[0]]:
                mix_mean, mix_std, _ = mean_std([system.mixture[u][metric] for u in utts])
                cell.improvement = mean - mix_mean
                mixture.setdefault(metric, Cell(mix_mean, mix_std))
            cells[metric] = cell
        table[system.name] = cells
    for metric in metrics:
        cells = [c[metric] for c in table.values() if metric in c and not math.isnan(c[metric].mean)]
        if cells:
            best = max(goodness(metric, c.mean) for c in cells)
            for cell in cells:
                cell.best = goodness(metric, cell.mean) == best
    accepted = {s.name: acceptance([s.scores[u]["si_sdri"] for u in utts], threshold)
                for s in systems if "si_sdri" in s.metrics}
    return Summary(metrics, mixture, table, accepted, threshold)


def goodness(metric: str, value: float) -> float:
    """``value`` turned so that larger is better (LOWER_IS_BETTER negated, ZERO_IS_BEST by its distance to 0)."""
    if metric in LOWER_IS_BETTER:
        return -value
    return -abs(value) if metric in ZERO_IS_BEST else value


def ranking_metric(systems: list[System]) -> str:
    """The metric best/worst selections rank by: the first of RANKING_METRICS that every system has."""
    for metric in RANKING_METRICS:
        if all(metric in s.metrics for s in systems):
            return metric
    raise TsekitError(f"--select best/worst ranks by one of {', '.join(RANKING_METRICS)}, none of which every "
                      "system has scored; use --select random or --utt-list")


def select_utterances(systems: list[System], utts: list[str], how: str, n: int, seed: int = 0,
                      utt_list: str | os.PathLike | None = None) -> list[str]:
    """The utterances to show.

    best / worst: the ``n`` with the best / worst mean over the systems of
    `ranking_metric` (ties by id); random: ``n`` drawn with ``seed``, in id
    order; list: the ids of ``utt_list`` (first field per line) in its order,
    all of them (``n`` does not apply).
    """
    if how not in SELECTIONS:
        raise TsekitError(f"unknown selection {how!r}; choose one of {', '.join(SELECTIONS)}")
    if how == "list":
        if utt_list is None:
            raise TsekitError("--select list needs --utt-list FILE")
        path = Path(utt_list)
        chosen = list(dict.fromkeys(line.split()[0] for line in read_lines(path) if line.strip()))
        known = set(utts)
        unknown = [u for u in chosen if u not in known]
        if unknown:
            raise TsekitError(f"{path}: {len(unknown)} ids are not utterances of the data dir (e.g. {unknown[0]})")
        if not chosen:
            raise TsekitError(f"{path}: no utterance ids")
        return chosen
    if how == "random":
        rng = np.random.default_rng(seed)
        return sorted_keys(utts[i] for i in rng.choice(len(utts), size=min(n, len(utts)), replace=False))
    metric = ranking_metric(systems)

    def mean_over_systems(utt: str) -> float:
        values = [s.scores[utt][metric] for s in systems if not math.isnan(s.scores[utt][metric])]
        return goodness(metric, float(np.mean(values))) if values else -math.inf

    ranked = sorted(sorted_keys(utts), key=mean_over_systems, reverse=how == "best")
    return ranked[:n]
