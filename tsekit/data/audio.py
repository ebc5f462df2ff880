"""Audio io for Kaldi scp entries: plain paths, ``ark:offset`` and pipes.

An scp value is one of
  * a path to an audio file soundfile reads (wav, flac, ...),
  * ``file.ark:offset`` (optionally with a ``[start:end]`` slice), read with kaldiio,
  * a Kaldi pipe ``command args |`` whose stdout is a wav file.
Pipes run a shell command written in a data file, so they are refused unless
the environment says TSEKIT_ALLOW_PIPES=1 (set it for data you trust).
Samples come back as float32 in [-1, 1], shape (samples,) or (samples, channels).

Long recordings are read forward in blocks (``AudioBlocks``) and written
piece by piece (``audio_writer``), so extraction never holds a whole file.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np
import soundfile as sf

from tsekit import TsekitError

K = TypeVar("K")  # how a caller names its scp files (a path, or a folder for tsekit score)
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


def audio_header(entry: str, what: str = "") -> tuple[int, int, int]:
    """(sample rate, number of samples, channels) of an scp value; reads only the header of plain files (ark
    and pipe entries are decoded whole, so their problems, NaN included, show here too)."""
    entry = entry.strip()
    if is_pipe(entry) or is_ark(entry):
        samples, rate = load_audio(entry, what)
        return rate, samples.shape[0], 1 if samples.ndim == 1 else samples.shape[1]
    where = f"{what}: " if what else ""
    if not Path(entry).is_file():
        raise TsekitError(f"{where}{entry}: file not found")
    try:
        info = sf.info(entry)
    except Exception as err:
        raise TsekitError(f"{where}{entry}: cannot read audio header ({err})") from err
    return int(info.samplerate), int(info.frames), int(info.channels)


def audio_info(entry: str, what: str = "") -> tuple[int, int]:
    """(sample rate, number of samples) of an scp value; reads only the header of plain files."""
    rate, frames, _ = audio_header(entry, what)
    return rate, frames


def check_audio(tables: Mapping[K, Mapping[str, str]], rate: int | None = None) -> dict[K, dict[str, tuple[int, int]]]:
    """Check every entry of ``tables`` (scp file -> utt -> entry) as a command must before it writes anything:
    the file exists, its header reads, it holds samples, one channel and, unless ``rate`` is None (a command
    that resamples), ``rate`` samples a second.

    Returns scp file -> utt -> (sample rate, number of samples). Raises TsekitError
    ``"<scp file>: <utt>: <entry>: <problem>"`` on the first problem. Headers only, so NaN is found when the
    samples are read (``load_audio``); ark and pipe entries are decoded (``audio_header``). An entry that
    several rows share is read once.
    """
    from tqdm import tqdm

    seen: dict[str, tuple[int, int, int]] = {}
    result: dict[K, dict[str, tuple[int, int]]] = {}
    bar = tqdm(total=sum(map(len, tables.values())), desc="checking audio headers", unit="file", disable=None,
               leave=False)
    with bar:
        for scp, table in tables.items():
            result[scp] = {}
            for utt, entry in table.items():
                where = f"{scp}: {utt}"
                if entry not in seen:
                    seen[entry] = audio_header(entry, where)
                file_rate, frames, channels = seen[entry]
                if frames == 0:
                    raise TsekitError(f"{where}: {entry}: empty audio (0 samples)")
                if channels != 1:
                    raise TsekitError(f"{where}: {entry}: {channels} channels, expected mono audio")
                if rate is not None and file_rate != rate:
                    raise TsekitError(f"{where}: {entry}: {file_rate} Hz audio, expected {rate} Hz (resample it, "
                                      f"or prepare the data dir at {rate} Hz)")
                result[scp][utt] = (file_rate, frames)
                bar.update(1)
    return result


def is_written(path: str | os.PathLike, rate: int, frames: int) -> bool:
    """Whether ``path`` holds audio as ``write_audio`` wrote it for a signal of ``frames`` samples at ``rate``:
    its header reads and says mono, ``rate`` and ``frames``. A file cut short (a copy that stopped, a full disk)
    is not, so resuming redoes it."""
    try:
        return audio_header(str(path)) == (rate, frames, 1)
    except TsekitError:
        return False


@functools.cache
def _writable_formats() -> list[str]:
    """soundfile's formats that hold 16-bit PCM, asked once (every wav written is checked against them); not RAW,
    which holds no header: nothing could tell its rate when reading it back."""
    return sorted(f for f in sf.available_formats() if f != "RAW" and sf.check_format(f, "PCM_16"))


def audio_format(path: str | os.PathLike) -> str:
    """The soundfile format ``write_audio`` writes ``path`` in, named by its suffix (.wav: WAV, .flac: FLAC, any
    other of soundfile's that holds 16-bit PCM); a one-line TsekitError for any other suffix, so a command can
    refuse its output name before doing the work."""
    suffix = Path(path).suffix
    name = suffix[1:].upper()
    writable = _writable_formats()
    if name not in writable:
        raise TsekitError(f"{path}: cannot write audio {f'as {suffix}' if suffix else 'without a suffix'}; "
                          f"the suffix names the format: {', '.join('.' + f.lower() for f in writable)}")
    return name


class AudioBlocks:
    """One scp entry read forward in blocks of at most ``block`` samples (float32, (samples,) or (samples,
    channels)): how extraction reads a recording of any length (``tsekit.infer.extract``).

    Plain files are read from disk one block at a time (soundfile), so a file of any length costs one block of
    memory; ark and pipe entries are decoded whole first (kaldiio and a pipe's stdout give the whole signal
    only), then handed out in the same blocks. ``rate``, ``frames`` and ``channels`` are the header's. Every
    block is checked for NaN and inf as it is read (``load_audio`` checks a whole file before it returns), so
    such an error comes after earlier blocks were used: the caller writes nothing final until the end.
    Made, it has read the header (a caller checks it); entered as a context manager, it holds the file open.
    """

    def __init__(self, entry: str, what: str = "", block: int = 1 << 18):
        self.entry, self.block = entry.strip(), block
        self.name = f"{what}: {self.entry}" if what else self.entry  # what errors name
        self._whole: np.ndarray | None = None
        self._file: sf.SoundFile | None = None
        if is_pipe(self.entry) or is_ark(self.entry):
            self._whole, self.rate = load_audio(self.entry, what)
            self.frames = self._whole.shape[0]
            self.channels = 1 if self._whole.ndim == 1 else self._whole.shape[1]
        else:
            self.rate, self.frames, self.channels = audio_header(self.entry, what)
            if self.frames == 0:
                raise TsekitError(f"{self.name}: empty audio")
        self.position = 0  # samples handed out so far

    def __enter__(self) -> AudioBlocks:
        if self._whole is None:
            try:
                self._file = sf.SoundFile(self.entry)
            except Exception as err:
                raise TsekitError(f"{self.name}: cannot read audio ({err})") from err
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        """The blocks from the current position to the end."""
        while (samples := self.read()).shape[0]:
            yield samples

    def again(self) -> Iterator[np.ndarray]:
        """A new pass over the whole entry, in the same blocks: a plain file is opened again; a decoded ark or
        pipe entry is handed out again from memory (a pipe is not run twice: both passes see the same samples)."""
        if self._whole is not None:
            for start in range(0, self.frames, self.block):
                yield self._whole[start : start + self.block]
            return
        with AudioBlocks(self.entry, block=self.block) as fresh:
            fresh.name = self.name
            yield from fresh

    def read(self) -> np.ndarray:
        """The next block; empty at the end."""
        if self._whole is not None:
            samples = self._whole[self.position : self.position + self.block]
        else:
            try:
                samples = self._file.read(self.block, dtype="float32")
            except Exception as err:
                raise TsekitError(f"{self.name}: cannot read audio ({err})") from err
        if not np.isfinite(samples).all():
            raise TsekitError(f"{self.name}: audio contains NaN or inf")
        self.position += samples.shape[0]
        return samples


@contextlib.contextmanager
def audio_writer(path: str | os.PathLike, rate: int, channels: int = 1) -> Iterator[Callable[[np.ndarray], None]]:
    """Write 16-bit PCM piece by piece: the block gets a function that appends samples ((samples,) or (samples,
    channels), clipped to [-1, 1]); they go to a temporary file beside ``path``, renamed onto it when the block
    ends without an error (atomic: ``path`` is the whole output or untouched), in the format the suffix names
    (``audio_format``: .wav, .flac, ...)."""
    from tsekit.jobs import atomic_open

    audio_type = audio_format(path)
    # the SoundFile closes (writing the header's final length) before atomic_open renames the file
    with atomic_open(path, "wb") as f, sf.SoundFile(f, "w", rate, channels, "PCM_16", format=audio_type) as sink:
        yield lambda samples: sink.write(np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0))


def write_audio(path: str | os.PathLike, samples: np.ndarray, rate: int) -> None:
    """Write 16-bit PCM atomically (temp file + rename), clipping to [-1, 1], in the format the suffix names
    (``audio_format``: .wav, .flac, ...); ``audio_writer`` in one piece."""
    samples = np.asarray(samples)
    with audio_writer(path, rate, 1 if samples.ndim == 1 else samples.shape[1]) as write:
        write(samples)
