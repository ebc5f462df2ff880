"""Checkpoints: atomic writes, safe loading, keeping the best N, averaging.

A checkpoint is a dict of tensors and plain Python values only, so it loads
with ``torch.load(..., weights_only=True)``: nothing in a checkpoint file can
run code. It is written to a temporary file and renamed, so a kill while
writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from tsekit import TsekitError
from tsekit.jobs import atomic_open

LATEST = "latest.pt"
BEST_LIST = "best.json"  # [[metric value, file name], ...] best first
AVERAGED = "averaged.pt"


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def link_checkpoint(source: Path, target: Path) -> None:
    """Make ``target`` hold ``source``'s checkpoint, atomically, without writing its bytes again: a hard link
    where the file system has them (a copy elsewhere). The two names stay independent, because checkpoints are
    only ever replaced by a rename, never written in place."""
    tmp = target.with_name(f".{target.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """Load with weights_only=True; a missing or corrupt file is a one-line TsekitError.

    ``mmap``: the tensors stay in the file (memory-mapped) until read, so the parts not used (an epoch
    checkpoint's optimizer state) cost neither reading nor memory.
    """
    path = Path(path)
    if not path.is_file():
        raise TsekitError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # pickle, zip and torch errors: all mean "not a usable checkpoint"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TsekitError(f"{path}: not a readable checkpoint ({reason})") from err
    if not isinstance(state, dict) or "model" not in state:
        raise TsekitError(f"{path}: not a tsekit checkpoint (no model weights)")
    return state


def load_weights(model: torch.nn.Module, weights: dict, path: str | os.PathLike, strict: bool = True):
    """``model.load_state_dict`` with a one-line error naming the checkpoint when shapes or names do not fit."""
    try:
        return model.load_state_dict(weights, strict=strict)
    except RuntimeError as err:
        raise TsekitError(f"{path}: weights do not fit model {getattr(model, 'registry_name', type(model).__name__)} "
                          f"as configured ({_misfit(model.state_dict(), weights, strict) or err})") from None


def _misfit(own: dict, weights: dict, strict: bool) -> str:
    """What keeps ``weights`` from loading, counted with a few names: torch's message lists every key (thousands of
    characters for a model built with another depth)."""
    def some(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

    problems = []
    reshaped = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if reshaped:
        k = reshaped[0]
        problems.append(f"{len(reshaped)} of another shape, e.g. {k}: {tuple(weights[k].shape)} in the checkpoint, "
                        f"{tuple(own[k].shape)} in the model")
    if strict:
        missing, unexpected = [k for k in own if k not in weights], [k for k in weights if k not in own]
        if missing:
            problems.append(f"{len(missing)} missing: {some(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected: {some(unexpected)}")
    return "; ".join(problems)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of process ``rank``'s random stream (from ``step`` on): stable, distinct for every triple."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed every generator a training step may draw from: torch (CPU and CUDA), numpy and Python's."""
    torch.manual_seed(seed)  # seeds every CUDA device too
    np.random.seed(seed)
    random.seed(seed)


def rng_state(device: torch.device) -> dict:
    """The generators' states as tensors and plain values, so that a checkpoint holding them still loads with
    ``weights_only=True`` (numpy's key array travels as a tensor)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position,
                                                       has_gauss, gauss), "random": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict | torch.Tensor, device: torch.device) -> None:
    """Restore what ``rng_state`` saved; a bare tensor is the torch state alone (checkpoints before 2026-12-07)."""
    if torch.is_tensor(state):
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(state["random"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def read_best(folder: Path) -> list[tuple[float, str]]:
    path = folder / BEST_LIST
    if not path.is_file():
        return []
    return [(float(value), name) for value, name in json.loads(path.read_text())]


def update_best(folder: Path, value: float, name: str, keep: int) -> bool:
    """Record checkpoint ``name`` with validation ``value`` (lower is better); delete those past ``keep``.

    Returns whether ``name`` is among the best and so must stay on disk.
    """
    best = sorted(read_best(folder) + [(value, name)])
    kept, dropped = best[:keep], best[keep:]
    with atomic_open(folder / BEST_LIST) as f:
        json.dump(kept, f)
    for _, old in dropped:
        if old != name:
            (folder / old).unlink(missing_ok=True)
    return any(n == name for _, n in kept)


def average_checkpoints(paths: list[Path], out: Path) -> Path:
    """Average the model weights of ``paths`` (floating tensors, summed in float64; others from the first) into
    ``out``.

    Only the model weights are read (memory-mapped: the epoch checkpoints' optimizer states, twice the size of
    a model under Adam, are never loaded), one checkpoint at a time beside the running sum.
    """
    if not paths:
        raise TsekitError("no checkpoints to average")
    first = load_checkpoint(paths[0], mmap=True)
    averaged = dict(first["model"])
    if len(paths) > 1:  # one checkpoint is its own average
        sums = {key: value.double() for key, value in averaged.items() if value.is_floating_point()}
        for path in paths[1:]:
            weights = load_checkpoint(path, mmap=True)["model"]
            for key, total in sums.items():
                total += weights[key]
            del weights
        for key, total in sums.items():
            averaged[key] = total.div_(len(paths)).to(averaged[key].dtype)
    save_checkpoint(out, {"model": averaged, "config": first.get("config"), "speakers": first.get("speakers"),
                          "averaged_from": [p.name for p in paths]})
    return out


def hash_weights(module: torch.nn.Module) -> str:
    """SHA-256 of a module's weights as loaded: every state-dict entry in name order, as its name, dtype, shape
    and raw bytes.

    The tensors, not the file they came from: a checkpoint saved again (another step count beside the weights,
    another zip layout or pickle protocol) or moved keeps its hash, and a codec built from several files
    (Vocos's config and weights) has one. A state dict's layout is the code's, so a code change that renames a
    layer changes the hash as a retraining would.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in blocks (a packaged model's weights can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_safetensors(path: str | os.PathLike, weights: dict[str, torch.Tensor]) -> None:
    """Weights as a safetensors file (atomic): plain tensors and a string header, nothing that can run code.

    The header's metadata is ``{"format": "pt"}`` alone, as the Hugging Face libraries write it: safetensors
    orders the metadata of its header from a hash map, so a second entry would give other bytes for the same
    weights from one run to the next. Tensors that share memory (tied weights) are stored as copies, which
    safetensors requires; ``load_state_dict`` gives them the same values.
    """
    from safetensors.torch import save

    tensors = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in weights.items()}
    with atomic_open(path, "wb") as f:
        f.write(save(tensors, metadata={"format": "pt"}))


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of a safetensors file; a missing or unreadable file is a one-line TsekitError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise TsekitError(f"{path}: weights not found")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TsekitError(f"{path}: not a readable safetensors file ({reason})") from None
