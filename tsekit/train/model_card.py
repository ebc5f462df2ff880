"""The model card of a packaged model (``README.md``): what an experiment knows of itself, in the Hugging Face hub's
card conventions (YAML front matter: library, license, tags, datasets, metrics, ``model-index``; then prose).

Everything in it is read from the experiment, never typed in: the system and its publication (``TSEModel.paper``);
the training command lines, their hardware and run time (the first, ``hardware:`` and ``# Accounting`` lines of
``<exp>/log/train_*.log``, which the recipes' runners and the trainer write); the steps (``latest.pt``); the training
data (the command's ``--train-data``, found from the recipe folder); the scores
(``<exp>/decode_<set>/scores/RESULTS.md``, mixture beside estimate). What the experiment cannot know (license, the
corpus's name, its limits) comes from the recipe's card file (``read_card_info``: ``model_card.yaml``).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tsekit import TsekitError
from tsekit import checkpoint as ckpt

# the metrics a card's model-index lists, when scored (the mean of the estimate column)
INDEX_METRICS = ("si_sdri", "pesq", "stoi", "dnsmos_ovrl", "spk_sim", "wer", "tsasr_wer")
CARD_KEYS = {"license": str, "datasets": list, "corpus": str, "limits": list}


@dataclass
class CardInfo:
    """What a recipe says of the models it trains (its ``model_card.yaml``)."""

    license: str = "other"
    datasets: list[str] = field(default_factory=list)
    corpus: str = ""  # one sentence: what the training data is
    limits: list[str] = field(default_factory=list)  # one sentence each


def read_card_info(path: str | os.PathLike | None) -> CardInfo:
    """A recipe's card file (YAML with the keys of CardInfo); None gives the defaults."""
    if path is None:
        return CardInfo()
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise TsekitError(f"{path}: unreadable card file ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TsekitError(f"{path}: expected a mapping with keys {', '.join(CARD_KEYS)}")
    for key, value in data.items():
        if key not in CARD_KEYS:
            raise TsekitError(f"{path}: unknown key {key!r}; valid: {', '.join(CARD_KEYS)}")
        kind = CARD_KEYS[key]
        if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
            raise TsekitError(f"{path}: {key} must be {'a list of strings' if kind is list else 'a string'}")
    return CardInfo(**data)


@dataclass
class Training:
    """How an experiment was trained, as far as its files tell."""

    commands: list[str] = field(default_factory=list)
    accounting: list[str] = field(default_factory=list)  # "time=532 threads=2" per logged command
    hardware: list[str] = field(default_factory=list)  # the trainer's "hardware:" line per logged command
    steps: list[str] = field(default_factory=list)  # "stage1: 800 steps (8 epochs)"
    data: list[str] = field(default_factory=list)  # "Training data: `data/train-100`, 800 rows ..."


def training_facts(exp_root: Path) -> Training:
    """Commands, run times, steps and training data of the experiment ``exp_root`` (its stage folders and logs)."""
    facts = Training()
    recipe = exp_root.parent.parent if exp_root.parent.name == "exp" else None
    for log in sorted((exp_root / "log").glob("train*.log")):
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        if lines and lines[0].startswith("# ") and " train " in lines[0]:
            command = lines[0][2:]
            facts.commands.append(command)
            facts.data += _training_data(command, recipe)
        facts.accounting += [f"{log.name}: {line[len('# Accounting: '):]}" for line in lines
                             if line.startswith("# Accounting: ")]
        facts.hardware += [f"{log.name}: {line[len('hardware: '):]}" for line in lines if line.startswith("hardware: ")]
    for stage in sorted(p for p in exp_root.glob("stage*") if (p / "checkpoints" / ckpt.LATEST).is_file()):
        state = ckpt.load_checkpoint(stage / "checkpoints" / ckpt.LATEST, mmap=True)
        epochs = state.get("epoch")
        facts.steps.append(f"{stage.name}: {state.get('step')} steps in {epochs} epoch{'' if epochs == 1 else 's'}")
    return facts


def _training_data(command: str, recipe: Path | None) -> list[str]:
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    found = []
    for option, what in (("--train-data", "Training data"), ("--valid-data", "Validation data")):
        if option in words[:-1]:
            data = words[words.index(option) + 1]
            scp = (recipe / data if recipe else Path(data)) / "wav.scp"
            count = sum(1 for line in scp.read_text(encoding="utf-8").splitlines() if line.strip()) \
                if scp.is_file() else None
            found.append(f"{what}: `{data}`" + (f", {count} rows (a mixture and one of its speakers as the target)"
                                                if count is not None else ""))
    return found


@dataclass
class Scores:
    """One decode dir's scores: its name, its RESULTS.md table and notes, and the estimate means by metric."""

    name: str
    lines: list[str]
    means: dict[str, float]
    plain: bool  # decoded with the system's own settings (no --param, no --refine)


def experiment_scores(exp_root: Path) -> list[Scores]:
    """The scores of every decode dir of ``exp_root`` that was scored (``decode_*/scores/RESULTS.md``)."""
    found = []
    for results in sorted(exp_root.glob("decode_*/scores/RESULTS.md")):
        decode = results.parent.parent
        lines = results.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.startswith(("- ref", "- utterances"))] + [""]
        kept += [line for line in lines if line.startswith("|")] + [""]
        kept += [line for line in lines if line.startswith("Acceptance")]
        means = {}
        for line in lines:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) >= 2 and cells[0] in INDEX_METRICS and (match := re.match(r"-?[\d.]+", cells[1])):
                means[cells[0]] = float(match.group())
        params = decode / "infer_params"
        plain = "refine" not in decode.name and not (params.is_file() and params.read_text().strip())
        found.append(Scores(decode.name, kept, means, plain))
    return found


def model_card(system: str, paper: str, summary: str, name: str, info: CardInfo, training: Training,
               scores: list[Scores], frozen: dict, inference: list[str], weights_from: str,
               parameters: int, usage: list[str]) -> str:
    """The card's text (README.md): front matter, then the sections of the module docstring."""
    index_scores = [s for s in scores if s.plain and s.means]
    front = {
        "library_name": "tsekit",
        "license": info.license,
        "tags": ["tsekit", "target-speaker-extraction", "speech-separation", "audio-to-audio", system],
        "pipeline_tag": "audio-to-audio",
    }
    if info.datasets:
        front["datasets"] = list(info.datasets)
    if index_scores:
        front["metrics"] = sorted({m for s in index_scores for m in s.means})
        front["model-index"] = [{"name": name, "results": [{
            "task": {"type": "audio-to-audio", "name": "Target speaker extraction"},
            "dataset": {"name": f"{', '.join(info.datasets) or 'test set'} ({s.name.removeprefix('decode_')})",
                        "type": info.datasets[0] if info.datasets else "unknown",
                        "split": s.name.removeprefix("decode_")},
            "metrics": [{"type": m, "value": v, "name": m} for m, v in s.means.items()],
        } for s in index_scores]}]
    out = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
           f"# {name}", "",
           f"A `{system}` target speaker extraction model trained with tsekit: given a mixture and a short enrollment "
           "clip of one speaker, it returns that speaker's speech.", "",
           "## The system", "", f"- Paper: {paper or 'none recorded'}",
           f"- What tsekit built: {summary}",
           "- tsekit's description of every system, with the choices where the paper is silent: `docs/systems.md`.",
           f"- Parameters: {parameters / 1e6:.2f} M in `model.safetensors` ({weights_from}).", ""]
    out += ["## Training", ""]
    if info.corpus:
        out += [f"- Corpus: {info.corpus}"]
    out += [f"- {d}" for d in training.data]
    out += [f"- Steps: {s}" for s in training.steps]
    out += [f"- Hardware: {h}" for h in training.hardware]
    out += [f"- Run time (the runner's accounting): {a}" for a in training.accounting]
    if training.commands:
        out += ["- Command lines:", "", "```", *training.commands, "```"]
    out += ["", "## Scores", ""]
    if not scores:
        out += ["No decode dir of the experiment was scored (`tsekit score`).", ""]
    for s in scores:
        out += [f"### {s.name}", "", *s.lines, ""]
    out += ["## At inference", "", *[f"- {line}" for line in inference], ""]
    if frozen:
        out += ["Frozen parts it runs through (not in `model.safetensors`; loading checks their weights):", "",
                "| part | name | sha256 |", "|---|---|---|"]
        out += [f"| {part} | {entry['source']} | `{entry['sha256']}` |" for part, entry in sorted(frozen.items())]
        out += [""]
    out += ["## Limits", ""]
    out += [f"- {limit}" for limit in info.limits] or ["- None recorded by the recipe."]
    out += ["", "## How to use", "", *usage, ""]
    return "\n".join(out)
