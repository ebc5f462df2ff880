"""Neural audio codecs and mel vocoders by name: looking up, building and loading them (name -> class).

Codecs and vocoders (``tsekit.pretrained.codec_base``: `Codec`, `Vocoder`, the ``CODECS`` registry) work at their
own sample rate: callers resample with `resample` (tokenizing a 16 kHz data dir with a 24 kHz codec, scoring a
resynthesis at the data's rate).

`load_codec` is what commands call: a registered name (a pretrained codec whose weights are on disk, e.g.
``encodec_24khz``) or the experiment dir of a codec or vocoder the toolkit trained (``exp/<codec>``).

A codec is known by its weights (``hash_weights``), not by the name or path it was loaded from: a codec
retrained in the same ``exp/<codec>`` gives other tokens for the same audio, so the token dirs it wrote
(``codec.yaml``) and the experiments that speak through it (``model.params``: ``codec_sha256``,
``vocoder_sha256``) record the hash of its weights, and whoever reads them with a codec of other weights
stops with one line naming both. An experiment names its codec or vocoder by a path relative to its stage
folder (``record_codec_references``), so it loads from any working directory and after its recipe folder
moves (``resolve_codec_references``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Collection, Mapping
from pathlib import Path

import torch

from tsekit import TsekitError
from tsekit.checkpoint import hash_weights
from tsekit.data.tokens import same_weights, short_hash
from tsekit.pretrained.codec_base import CODECS, Codec, Vocoder


def codec_params(name: str) -> dict[str, inspect.Parameter]:
    """The constructor parameters of a registered codec or vocoder."""
    return dict(list(inspect.signature(codec_class(name).__init__).parameters.items())[1:])


def codec_class(name: str) -> type[Codec] | type[Vocoder]:
    import tsekit.codec  # noqa: F401  (importing the package registers every codec)

    if name not in CODECS:
        raise TsekitError(f"unknown codec {name!r}; registered codecs: {', '.join(sorted(CODECS))}")
    return CODECS[name]


def build_codec(name: str, params: dict | None = None) -> Codec | Vocoder:
    """Instantiate a registered codec or vocoder; unknown parameters are an error listing the valid ones."""
    params = dict(params or {})
    valid = codec_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TsekitError(f"codec {name}: unknown parameter {unknown[0]!r}; valid: {', '.join(valid)}")
    return codec_class(name)(**params)


TRAINED_PARAMS = ("use_codebooks",)  # what load_codec takes for a trained codec


def load_codec(spec: str | os.PathLike, **params) -> Codec | Vocoder:
    """A registered codec by name (``params`` go to its constructor, e.g. bandwidth, weights), or the codec or
    vocoder trained in the experiment dir ``spec`` (evaluation mode, on the CPU; ``params`` may hold only
    ``use_codebooks``: the first N of its codebooks, N at most those it was trained with), with ``weights_sha256`` set:
    the hash of the weights it loaded, or None for a toolkit codec built by name (``random_init``: random
    weights, as tests use them, are nothing to be known by)."""
    path = Path(spec)
    if path.is_dir():
        from tsekit.codec.train import load_trained

        # its training fixed every other parameter; how many of its codebooks to use (the bandwidth) stays a choice,
        # as a pretrained codec's bandwidth is
        fixed = sorted(set(params) - set(TRAINED_PARAMS))
        if fixed:
            raise TsekitError(f"{spec} is a trained codec: of its parameters only {', '.join(TRAINED_PARAMS)} may be "
                              f"set, not {', '.join(fixed)} (other parameters apply to a registered codec name, e.g. "
                              "encodec_24khz)")
        module = load_trained(path)
        if "use_codebooks" in params:
            if not hasattr(module, "use_codebooks"):
                raise TsekitError(f"{spec} is a trained {type(module).__name__}, which has no codebooks to choose "
                                  "(use_codebooks)")
            try:
                module.use_codebooks(params["use_codebooks"])
            except TsekitError as err:
                raise TsekitError(f"{spec}: {err}") from None
    elif _is_path(str(spec)):
        raise TsekitError(f"{spec}: no such experiment dir (a trained codec), and not a registered codec name")
    else:
        module = build_codec(str(spec), params).eval()
    module.weights_sha256 = None if module.random_init and not path.is_dir() else hash_weights(module)
    return module


def load_for_system(spec: str | None, params: dict, kind: type[Codec] | type[Vocoder], system: str,
                    section: str, sha256: str | None = None) -> Codec | Vocoder:
    """The codec or vocoder a TSE system speaks through (its config's ``section``, ``spec`` and ``params``), frozen
    in evaluation mode; a one-line error when the section is empty, names the other kind, or holds weights other
    than those the system was trained through (``sha256``, recorded by ``record_codec_references``)."""
    if spec is None:
        raise TsekitError(f"{system}: no {section}; set the config's {section} section ({section}.spec: "
                          f"exp/<name> or a registered {section} with its params)")
    module = load_codec(spec, **params)
    if not isinstance(module, kind):
        wanted = "a codec with tokens" if kind is Codec else "a mel vocoder"
        raise TsekitError(f"{system}: {section} {spec} is not {wanted}")
    if not same_weights(sha256, module.weights_sha256):
        raise TsekitError(f"{system}: {section} {spec} holds weights sha256 {short_hash(module.weights_sha256)}, but "
                          f"the experiment was trained through weights sha256 {short_hash(sha256)} ({section}_sha256 "
                          f"of its config.yaml): the {section} was retrained or replaced since; restore it or train "
                          f"{system} again")
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval()


# ---------------------------------------------------------------------------------------------------------
# what an experiment records of the codec or vocoder it speaks through

SECTIONS = ("codec", "vocoder")  # model parameters naming it; <section>_params and <section>_sha256 go with them


def record_codec_references(params: dict, accepted: Collection[str], configured: Mapping[str, object],
                            stage_dir: str | os.PathLike) -> dict:
    """``model.params`` of a system as its experiment (``stage_dir``) records them; relative paths are read from
    the working directory, as the recipe gives them.

    For each section (``SECTIONS``) the model takes (``accepted``: its constructor's parameters): the config's
    section (``configured[section]``, with ``spec`` and ``params``) fills ``<section>`` and ``<section>_params``
    when model.params has none; the codec is loaded to record the hash of its weights (``<section>_sha256``);
    and its relative paths (an experiment dir ``exp/<name>``, a weights file among its ``path_params``) are
    rewritten relative to ``stage_dir``. Relative to the experiment, not absolute: moving the recipe folder moves
    the experiment and its codec together, and the path still leads from one to the other.
    """
    params = dict(params)
    for section in SECTIONS:
        if section not in accepted:
            continue
        reference = configured.get(section)
        if section not in params and reference is not None and reference.spec:
            params.update({section: reference.spec, f"{section}_params": dict(reference.params)})
        spec = params.get(section)
        if spec is None:
            continue
        options = dict(params.get(f"{section}_params") or {})
        if f"{section}_sha256" in accepted:
            params[f"{section}_sha256"] = load_codec(spec, **options).weights_sha256
        if Path(spec).is_dir():
            params[section] = _relative_to(str(spec), Path(stage_dir))
        elif options and not _is_path(str(spec)):
            for name in set(codec_class(str(spec)).path_params) & set(options):
                if isinstance(options[name], str):
                    options[name] = _relative_to(options[name], Path(stage_dir))
            params[f"{section}_params"] = options
    return params


def resolve_codec_references(params: dict, stage_dir: str | os.PathLike) -> dict:
    """``model.params`` as ``record_codec_references`` recorded them in ``stage_dir``, with every relative path of
    a codec or vocoder made usable from the working directory.

    A relative path is looked for in order: relative to ``stage_dir`` (how experiments record it); relative to
    the recipe folder, the parent of the ``exp`` folder above ``stage_dir`` (experiments written before paths were
    recorded this way named ``exp/<codec>`` as the recipe saw it); and as it is. The first that exists is taken;
    none is a one-line error naming the stage folder and the places tried.
    """
    params = dict(params)
    for section in SECTIONS:
        spec = params.get(section)
        if not isinstance(spec, str):
            continue
        if _is_path(spec):
            params[section] = _locate(spec, Path(stage_dir), section)
        elif params.get(f"{section}_params"):
            options = dict(params[f"{section}_params"])
            for name in set(codec_class(spec).path_params) & set(options):
                if isinstance(options[name], str):
                    options[name] = _locate(options[name], Path(stage_dir), f"{section} {spec} {name}")
            params[f"{section}_params"] = options
    return params


def _is_path(spec: str) -> bool:
    """A path, not a registered name: what ``load_codec`` refuses to take for a name."""
    return os.sep in spec or "/" in spec or spec.startswith(".")


def _relative_to(path: str, folder: Path) -> str:
    """``path`` (relative to the working directory) relative to ``folder``; an absolute path stays as it is."""
    if os.path.isabs(path):
        return path
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    return relative if _is_path(relative) else os.path.join(".", relative)


def _locate(path: str, stage_dir: Path, what: str) -> str:
    if os.path.isabs(path):
        return path
    # lexical joins (normpath), as _relative_to computed them: '..' must not follow a symlinked experiment dir
    tried = [os.path.normpath(os.path.join(stage_dir, path))]
    above = [parent for parent in Path(os.path.abspath(stage_dir)).parents if parent.name == "exp"]
    if above:
        tried.append(os.path.normpath(os.path.join(above[0].parent, path)))
    tried.append(path)
    for candidate in tried:
        if os.path.exists(candidate):
            return candidate
    raise TsekitError(f"{stage_dir}: {what} {path} not found (tried {', '.join(dict.fromkeys(tried))})")


def codec_options(params: str | None, **named) -> dict:
    """Constructor params of a registered codec from the command line: ``--params`` (a YAML mapping, as
    ``tsekit train --print-value codec.params`` prints it) updated by the named options that are not None."""
    import yaml

    try:
        parsed = yaml.safe_load(params) if params else {}
    except yaml.YAMLError:
        parsed = None
    if not isinstance(parsed, dict):
        raise TsekitError(f"--params {params!r}: expected a YAML mapping such as '{{bandwidth: 6.0}}'")
    return {**parsed, **{k: v for k, v in named.items() if v is not None}}


def resample(wav: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Resample (..., T) with torchaudio's windowed sinc (its pure-Python part, which runs without the extension)."""
    if from_rate == to_rate:
        return wav
    import torchaudio.functional

    return torchaudio.functional.resample(wav, from_rate, to_rate)
