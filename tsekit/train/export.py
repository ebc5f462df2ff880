"""``tsekit export``: a trained experiment as a packaged model (layout: ``tsekit.train.package``).

What goes in: the weights inference would load (``find_checkpoint``: averaged, else best, else latest; or the
checkpoint given) as safetensors; the resolved config; the model card (``tsekit.train.model_card``); a codec or
vocoder the toolkit trained that the system speaks through (its own files, said on export and in the card); the
manifest. Published frozen parts (Whisper, a published codec or vocoder, a pretrained speaker encoder) are recorded
by name and weight hash, never copied; paths among the parameters are made absolute, since the package leaves the
folder they were relative to.

The package is built under a temporary name, loaded once as a user would load it (a package that does not load is
never written), then renamed into place: a killed export leaves nothing, and exporting again gives the same bytes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tsekit import TsekitError, __version__
from tsekit import checkpoint as ckpt
from tsekit.train import model_card
from tsekit.train import package as pkg
from tsekit.train.experiment import find_checkpoint, find_stage, load_experiment

CARD_FILE = "model_card.yaml"  # where a recipe keeps what its models' cards say of the corpus


@dataclass
class ExportSummary:
    out: Path
    system: str
    checkpoint: Path
    size: int  # bytes of every file of the package
    copied: list[str]  # trained codecs / vocoders copied into it

    def __str__(self) -> str:
        copied = "".join(f"; with it, {c}" for c in self.copied)
        return (f"exported {self.system} ({self.checkpoint}) to {self.out}: {self.size / 1e6:.1f} MB{copied}\n"
                f"  tsekit extract --model {self.out} --mix MIXTURE.wav --enroll ENROLLMENT.wav -o TARGET.wav")


def _absolute_paths(params: dict) -> dict:
    """Parameters naming files that exist (a Whisper checkpoint, a speaker encoder's ONNX file), made absolute."""
    return {k: os.path.abspath(v) if isinstance(v, str) and ("/" in v or os.sep in v) and os.path.exists(v) else v
            for k, v in params.items()}


def _frozen_codecs(params: dict, folder: Path, copied: list[str], sources: dict[str, str]) -> dict:
    """The codec or vocoder references of ``params``, for the package in ``folder``: one the toolkit trained is
    exported into ``folder/<section>`` and named by that path; a published one keeps its name, its paths absolute."""
    from tsekit.codec.registry import SECTIONS, codec_class
    from tsekit.codec.train import export_trained

    params = dict(params)
    for section in SECTIONS:
        spec = params.get(section)
        if not isinstance(spec, str):
            continue
        if Path(spec).is_dir():
            export_trained(spec, folder / section)
            params[section] = f"./{section}"
            sources[section] = f"{section}/ (exported with the model; trained in {spec})"
            copied.append(f"the {section} trained in {spec} ({section}/)")
        elif params.get(f"{section}_params"):
            options = dict(params[f"{section}_params"])
            paths = {k: v for k, v in options.items() if k in codec_class(spec).path_params}
            params[f"{section}_params"] = {**options, **_absolute_paths(paths)}
    return params


def _usage(folder_name: str, needs: frozenset[str], transcribes: bool, rate: int) -> list[str]:
    """The card's "How to use": the command and the Python lines."""
    from tsekit.data.enroll import ENROLLMENT_FILES

    enrollments = [k for k in ENROLLMENT_FILES if k in needs]
    options = " ".join(f"--{k.replace('_', '-')} {k}.wav" for k in enrollments)
    enroll_arg = ", ".join(f"sf.read('{k}.wav')[0]" for k in enrollments) if len(enrollments) == 1 else \
        "{" + ", ".join(f"'{k}': sf.read('{k}.wav')[0]" for k in enrollments) + "}"
    lines = ["```sh", f"tsekit extract --model {folder_name} --mix mixture.wav {options} -o target.wav", "```", "",
             "```python", "import soundfile as sf", "import tsekit", "",
             f"model = tsekit.load_model('{folder_name}')",
             "mixture, rate = sf.read('mixture.wav')  # any sample rate: resampled both ways",
             f"target = model.extract(mixture, {enroll_arg}, rate)",
             "sf.write('target.wav', target, rate)"]
    if transcribes:
        lines.append(f"print(model.transcribe(mixture, {enroll_arg}, rate))")
    lines += ["```", "", f"The model runs at {rate} Hz, mono. It needs tsekit (`make install` in its repository) with "
              "the extras its frozen parts need."]
    return lines


def export_model(exp_dir: str | os.PathLike, out_dir: str | os.PathLike, checkpoint: str | None = None,
                 card_file: str | os.PathLike | None = None, name: str | None = None) -> ExportSummary:
    """Write the experiment ``exp_dir`` (root or stage folder) as a packaged model into ``out_dir`` (replaced).

    ``card_file``: the recipe's card file (``model_card.read_card_info``); None takes ``model_card.yaml`` of the
    recipe the experiment lies in (``<recipe>/exp/<system>``) when there is one. ``name``: the model's name in its
    card (default: ``<system>-<recipe>``).
    """
    from tsekit.data.datadir import atomic_dir
    from tsekit.train.config import default_chunk_seconds, format_config

    if pkg.is_package(exp_dir):
        raise TsekitError(f"{exp_dir}: already a packaged model")
    stage = find_stage(exp_dir).resolve()
    exp_root = stage.parent if re.fullmatch(r"stage\d+", stage.name) else stage
    recipe = exp_root.parent.parent if exp_root.parent.name == "exp" else None
    if card_file is None and recipe is not None and (recipe / CARD_FILE).is_file():
        card_file = recipe / CARD_FILE
    info = model_card.read_card_info(card_file)
    path = find_checkpoint(exp_dir, checkpoint)
    model, cfg = load_experiment(exp_dir, path)
    system = cfg.model.name
    name = name or (f"{system}-{recipe.name}" if recipe else system)
    parts = model.frozen_parts()
    copied: list[str] = []
    sources = {part: source for part, (source, _) in parts.items()}
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        cfg.model.params = _absolute_paths(_frozen_codecs(cfg.model.params, tmp, copied, sources))
        chunk = default_chunk_seconds(cfg, model)
        inference = [f"{cfg.data.sample_rate} Hz mono audio, mixture and enrollment "
                     "(`tsekit.load_model` resamples other rates both ways; `tsekit extract` asks for this rate)",
                     f"chunks of {chunk:g} s with 1 s of overlap, blended" if chunk else "whole inputs, no chunks",
                     f"output level: {cfg.infer.output_level}",
                     "decoding settings: the model parameters in config.yaml "
                     "(`--param NAME=VALUE` replaces one for a run)"]
        with open(tmp / pkg.CONFIG, "w", encoding="utf-8") as f:
            f.write("".join(f"# at inference: {line}\n" for line in inference) + format_config(cfg))
        ckpt.save_safetensors(tmp / pkg.WEIGHTS, model.state_dict())
        frozen = {part: {"source": sources[part], "sha256": digest} for part, (_, digest) in sorted(parts.items())}
        weights_from = path.name + (f", the average of {', '.join(avg)}"
                                    if (avg := ckpt.load_checkpoint(path, mmap=True).get("averaged_from")) else "")
        card = model_card.model_card(
            system, type(model).paper, (type(model).__doc__ or "").strip().splitlines()[0], name, info,
            model_card.training_facts(exp_root), model_card.experiment_scores(exp_root), frozen, inference,
            weights_from, sum(p.numel() for p in model.state_dict().values()),
            _usage(out.name, model.needs, model.transcribes, cfg.data.sample_rate))
        (tmp / pkg.CARD).write_text(card, encoding="utf-8")
        files = {p.relative_to(tmp).as_posix(): ckpt.file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"format": pkg.FORMAT, "system": system, "tsekit_version": __version__,
                    "exported_from": {"experiment": str(exp_dir), "checkpoint": path.name},
                    "files": files, "frozen": frozen}
        (tmp / pkg.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        pkg.load_package(tmp)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return ExportSummary(out, system, path, size, copied)
