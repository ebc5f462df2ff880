"""A packaged model: a trained system outside its experiment, as ``tsekit export`` writes it, loaded by path.

Layout of a package folder::

    model.safetensors   the weights inference uses (no pickle: safetensors holds tensors and a string header)
    config.yaml         the experiment's resolved config: the system and its parameters, the sample rate, the
                        training chunk (inference chunks are 4 x it), the output level, the decoding settings
    README.md           the model card (Hugging Face hub conventions: YAML front matter, then prose)
    manifest.json       the sha256 of every other file; the frozen parts by name and weight hash
    codec/, vocoder/    a codec or vocoder the toolkit trained that the system speaks through, exported with it
                        (its own model.safetensors and config.yaml); published ones are never copied

Frozen parts (``TSEModel.frozen_parts``: Whisper, a published codec or vocoder, a pretrained speaker encoder) are
loaded where this machine has them, by the name or path the config gives, and must hold the weights the manifest
names (their sha256, as ``tsekit.checkpoint.hash_weights`` computes it): a missing part or other weights is a
one-line error. Every file loading reads is checked against the manifest first; the card is not read, so it may be
edited as hub users edit theirs.

A folder laid out as the Hugging Face hub's local cache keeps a package too: ``models--ORG--NAME`` with ``refs/``
and ``snapshots/<revision>/`` (whose files link into ``blobs/``); ``package_dir`` finds the snapshot, offline.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tsekit import TsekitError
from tsekit import checkpoint as ckpt

if TYPE_CHECKING:
    from tsekit.models.registry import TSEModel
    from tsekit.train.config import ExperimentConfig

FORMAT = "tsekit-model/1"
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
CARD = "README.md"
UNCHECKED = (CARD,)  # listed in the manifest, not checked on loading: nothing loading does reads it


def is_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a packaged model (or a hub cache folder holding one)."""
    try:
        return (package_dir(path) / MANIFEST).is_file()
    except TsekitError:
        return False


def package_dir(path: str | os.PathLike) -> Path:
    """The folder holding the package's files: ``path`` itself, or in a hub cache folder (``models--ORG--NAME``)
    the snapshot that ``refs/main`` names (the only snapshot when there is no ``refs/main``)."""
    path = Path(path)
    snapshots = path / "snapshots"
    if (path / MANIFEST).is_file() or not snapshots.is_dir():
        return path
    ref = path / "refs" / "main"
    if ref.is_file():
        revision = ref.read_text().strip()
        if not (snapshots / revision).is_dir():
            raise TsekitError(f"{ref}: names snapshot {revision}, which {snapshots} does not hold")
        return snapshots / revision
    found = sorted(p for p in snapshots.iterdir() if p.is_dir())
    if len(found) != 1:
        raise TsekitError(f"{path}: a hub cache folder without refs/main and with {len(found)} snapshots; "
                          "give the snapshot folder itself")
    return found[0]


def read_manifest(folder: Path) -> dict:
    """The manifest of the package in ``folder``, checked for the keys loading uses."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TsekitError(f"{path}: unreadable ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise TsekitError(f"{path}: not a tsekit packaged model (format {found!r}, expected {FORMAT!r})")
    for key, kind in (("files", dict), ("frozen", dict), ("system", str)):
        if not isinstance(manifest.get(key), kind):
            raise TsekitError(f"{path}: no {key!r} entry of the right kind")
    return manifest


def check_files(folder: Path, manifest: dict) -> None:
    """Every file the manifest lists that loading reads is there and has its sha256."""
    for name, digest in sorted(manifest["files"].items()):
        if name in UNCHECKED:
            continue
        path = folder / name
        if not path.is_file():
            raise TsekitError(f"{path}: missing (listed in {folder / MANIFEST})")
        if ckpt.file_sha256(path) != digest:
            raise TsekitError(f"{path}: sha256 differs from {folder / MANIFEST}: the file was changed or damaged "
                              "since export; export the model again")


def check_frozen_parts(model: TSEModel, recorded: dict, folder: Path) -> None:
    """The frozen parts ``model`` loads are those the manifest names, with the same weights."""
    from tsekit.data.tokens import short_hash

    try:
        parts = model.frozen_parts()
    except TsekitError as err:
        raise TsekitError(f"{folder}: a frozen part of {model.registry_name} cannot be loaded: {err}") from None
    if set(parts) != set(recorded):
        raise TsekitError(f"{folder / MANIFEST}: frozen parts {sorted(recorded)}, but the model has {sorted(parts)}")
    for name, (source, digest) in sorted(parts.items()):
        if digest != recorded[name]["sha256"]:
            raise TsekitError(f"{folder}: frozen part {name} ({source}) holds weights sha256 {short_hash(digest)}, the "
                              f"model was trained through sha256 {short_hash(recorded[name]['sha256'])} (its "
                              f"manifest): bring the {name} it names ({recorded[name]['source']})")


def load_package(path: str | os.PathLike, device: str | torch.device = "cpu",
                 model_params: dict | None = None) -> tuple[TSEModel, ExperimentConfig]:
    """(model in eval mode on ``device``, its ExperimentConfig) of a packaged model; ``model_params`` as
    ``load_experiment``'s. Nothing is unpickled: weights from safetensors, config and manifest as plain data."""
    from tsekit.codec.registry import resolve_codec_references
    from tsekit.models.registry import build_model
    from tsekit.train.config import checked_model_params, load_config

    folder = package_dir(path)
    manifest = read_manifest(folder)
    check_files(folder, manifest)
    cfg = load_config(folder / CONFIG)
    if cfg.model.name != manifest["system"]:
        raise TsekitError(f"{folder / CONFIG}: system {cfg.model.name}, but {folder / MANIFEST} says "
                          f"{manifest['system']}")
    if model_params:
        cfg.model.params = {**cfg.model.params, **checked_model_params(cfg.model.name, model_params)}
    cfg.model.params = resolve_codec_references(cfg.model.params, folder)
    try:
        model = build_model(cfg.model.name, cfg.model.params)
    except TsekitError as err:  # a frozen part it loads on construction (Whisper) is not on this machine
        raise TsekitError(f"{folder}: {cfg.model.name} cannot be built here: {err}") from None
    ckpt.load_weights(model, ckpt.load_safetensors(folder / WEIGHTS), folder / WEIGHTS)
    check_frozen_parts(model, manifest["frozen"], folder)
    return model.to(device).eval(), cfg
