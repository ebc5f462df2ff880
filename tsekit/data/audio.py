"""Audio io for Kaldi scp entries: plain paths, ``ark:offset`` and pipes.

An scp value is one of
  * a path to an audio file soundfile reads (wav, flac, ...),
  * ``file.ark:offset`` (optionally with a ``[start:end]`` slice), read with kaldiio,
  * a Kaldi pipe ``command args |`` whose stdout is a wav file.
Pipes run a shell command written in a data file, so they are refused unless
the environment says TSEKIT_ALLOW_PIPES=1 (set it for data you trust).
Samples come back as float32 in [-1, 1], shape (samples,) or (samples, channels).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from tsekit import TsekitError

ARK_ENTRY = re.compile(r"^(?P<path>.+\.ark):(?P<offset>\d+)(\[[0-9:, ]*\])?$")


def is_pipe(entry: str) -> bool:
    return entry.rstrip().endswith("|")


def is_ark(entry: str) -> bool:
    return ARK_ENTRY.match(entry) is not None


def entry_path(entry: str) -> Path | None:
    """The file an entry reads from (None for a pipe)."""
    if is_pipe(entry):
        return None
    match = ARK_ENTRY.match(entry)
    return Path(match.group("path") if match else entry)


def _run_pipe(entry: str) -> bytes:
    if os.environ.get("TSEKIT_ALLOW_PIPES") != "1":
        raise TsekitError(
            f"pipe entry {entry!r} runs a shell command from a data file; "
            "set TSEKIT_ALLOW_PIPES=1 to allow it for data you trust"
        )
    proc = subprocess.run(entry.rstrip()[:-1], shell=True, capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise TsekitError(f"pipe {entry!r} failed (exit {proc.returncode}): {err[-1] if err else ''}")
    return proc.stdout


def _to_float(samples: np.ndarray) -> np.ndarray:
    if samples.dtype.kind == "i":
        return (samples / float(-np.iinfo(samples.dtype).min)).astype(np.float32)
    return samples.astype(np.float32, copy=False)


def load_audio(entry: str, what: str = "", start: int = 0, frames: int = -1) -> tuple[np.ndarray, int]:
    """Read one scp value, or ``frames`` samples of it from ``start``; returns (float32 samples, rate).

    Plain files are read only over the span asked for; ark and pipe entries
    are decoded whole, then cut. ``what`` names the source (e.g.
    ``"data/dev/wav.scp: utt1"``) in errors. Raises TsekitError for a missing or
    unreadable file, empty audio or NaN/inf.
    """
    where = f"{what}: " if what else ""
    entry = entry.strip()
    try:
        if is_pipe(entry):
            samples, rate = sf.read(io.BytesIO(_run_pipe(entry)), dtype="float32")
        elif is_ark(entry):
            import kaldiio

            if not Path(ARK_ENTRY.match(entry).group("path")).is_file():
                raise TsekitError(f"{where}{entry_path(entry)}: file not found")
            loaded = kaldiio.load_mat(entry)
            if not isinstance(loaded, tuple):
                raise TsekitError(f"{where}{entry}: ark entry holds a matrix, not audio")
            rate, samples = loaded
            samples = _to_float(np.asarray(samples))
        else:
            if not Path(entry).is_file():
                raise TsekitError(f"{where}{entry}: file not found")
            samples, rate = sf.read(entry, start=start, frames=frames, dtype="float32")
            start, frames = 0, -1  # already cut
    except TsekitError:
        raise
    except Exception as err:  # soundfile/kaldiio raise many kinds; report them uniformly
        raise TsekitError(f"{where}{entry}: cannot read audio ({err})") from err
    if start or frames >= 0:
        samples = samples[start : None if frames < 0 else start + frames]
    if samples.size == 0:
        raise TsekitError(f"{where}{entry}: empty audio")
    if not np.isfinite(samples).all():
        raise TsekitError(f"{where}{entry}: audio contains NaN or inf")
    return samples, int(rate)


def audio_info(entry: str, what: str = "") -> tuple[int, int]:
    """(sample rate, number of samples) of an scp value; reads only the header of plain files."""
    entry = entry.strip()
    if is_pipe(entry) or is_ark(entry):
        samples, rate = load_audio(entry, what)
        return rate, samples.shape[0]
    where = f"{what}: " if what else ""
    if not Path(entry).is_file():
        raise TsekitError(f"{where}{entry}: file not found")
    try:
        info = sf.info(entry)
    except Exception as err:
        raise TsekitError(f"{where}{entry}: cannot read audio header ({err})") from err
    return int(info.samplerate), int(info.frames)


def write_audio(path: str | os.PathLike, samples: np.ndarray, rate: int) -> None:
    """Write a 16-bit PCM wav atomically (temp file + rename), clipping to [-1, 1]."""
    from tsekit.data.table import atomic_open

    samples = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    with atomic_open(path, "wb") as f:
        sf.write(f, samples, rate, subtype="PCM_16", format="WAV")
