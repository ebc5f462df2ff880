"""Job plumbing every command shares: shards, threads, devices, atomic writes, output wavs, summaries, scalar logs.

The bottom layer, beside ``tsekit.lock`` (the writer lock): it imports no other tsekit package, and data,
codecs, metrics, train and infer all take these from here.

Jobs: ``--job J --nj N`` processes the J-th of N contiguous shards of the C-sorted utterances (``shard``);
``tsekit infer``, ``tsekit tokenize``, ``tsekit codec resynth`` and ``tsekit score`` cut the same shards, so
the Kaldi runners (``run.pl`` / ``slurm.pl``) can run any of them. Whichever job finds every output there
writes the table that lists them (``write_scp_if_complete``), so no merge step is needed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tsekit import TsekitError

if TYPE_CHECKING:
    import torch


def check_job(job: int | None, nj: int | None) -> None:
    """A one-line error unless ``job`` is None (no sharding) or a shard of ``nj`` (1 <= job <= nj)."""
    if job is not None and (nj is None or not 1 <= job <= nj):
        raise TsekitError(f"--job {job} needs --nj N with 1 <= {job} <= N (got --nj {nj})")


def shard(utts: list[str], job: int, num_jobs: int) -> list[str]:
    """The job-th (1-based) of num_jobs contiguous shards, sizes within one (as `tsekit data split`)."""
    if not 1 <= job <= num_jobs:
        raise TsekitError(f"--job must be in 1..{num_jobs}, got {job}")
    base, extra = divmod(len(utts), num_jobs)
    start = (job - 1) * base + min(job - 1, extra)
    return utts[start : start + base + (1 if job <= extra else 0)]


def set_threads(nj: int | None, job: int | None) -> int:
    """Set torch's thread count; returns the previous count (to restore).

    Without ``job``, ``nj`` is the number of torch threads of this one process (None: torch's own choice).
    With ``job``, N processes may share one machine (``run.pl``), so each takes its share of the CPUs this
    process may use, ``max(1, cpus // N)``, unless OMP_NUM_THREADS is set (e.g. Slurm jobs on separate nodes).
    """
    import torch

    previous = torch.get_num_threads()
    if job is not None:
        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // max(nj or 1, 1)))
    elif nj:
        torch.set_num_threads(nj)
    return previous


def torch_device(device: str | torch.device) -> torch.device:
    """A torch device, with a one-line error when CUDA is asked for but absent."""
    import torch

    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise TsekitError(f"--device {device}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TsekitError(f"--device {device}: CUDA is not available on this machine")
    return device


def temporary_name(path: Path) -> Path:
    """A fresh hidden name beside ``path`` for building it (a killed run's leftovers match ``.*.tmp``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success.

    The file gets the permissions ``open()`` would give it (0666 less the umask), so colleagues on a shared
    cluster can read what tsekit writes where the umask allows (``tempfile.mkstemp`` would make it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def drop_torn_line(path: Path) -> None:
    """Cut a last line that a kill left without its newline from an append-only record (a resumable run's list of
    what it has done), so appending starts on a fresh line."""
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def wav_path(out: Path, utt: str) -> Path:
    """Where a command that writes one wav per utterance (infer, codec resynth) writes that of ``utt``."""
    return out / "wav" / f"{utt}.wav"


def write_scp_if_complete(out: Path, utts: list[str]) -> bool:
    """Write OUT/wav.scp (absolute paths) when every utterance has its wav; returns whether it did.

    ``utts``: every utterance, C-sorted (``tsekit.data.table.sorted_keys``, as ``shard`` takes them): the
    table's lines are written in that order.
    """
    paths = {utt: wav_path(out, utt).resolve() for utt in utts}
    if not all(path.is_file() for path in paths.values()):
        return False
    with atomic_open(out / "wav.scp") as f:
        f.writelines(f"{utt} {path}\n" for utt, path in paths.items())
    return True


def job_and_speed(job: int | None, nj: int | None, done: int, seconds: float, audio_seconds: float) -> tuple[str, str]:
    """The parts of a job's summary line naming the job ("job 2/4: ") and its speed (" in 3.0 s (real-time
    factor 0.012)", empty when it did nothing); shared by tsekit infer and tsekit tokenize."""
    who = f"job {job}/{nj}: " if job is not None else ""
    if not done:
        return who, ""
    return who, f" in {seconds:.1f} s (real-time factor {seconds / max(audio_seconds, 1e-9):.3f})"


class ScalarLog:
    """Scalars to log/scalars.tsv, and to TensorBoard event files when tensorboard is installed."""

    def __init__(self, folder: Path, enabled: bool):
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.tsv = open(folder / "scalars.tsv", "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder))
        except ImportError:
            pass

    def add(self, name: str, value: float, step: int) -> None:
        if not self.enabled:
            return
        self.tsv.write(f"{step}\t{name}\t{value:.6g}\n")
        self.tsv.flush()
        if self.writer is not None:
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.enabled:
            self.tsv.close()
            if self.writer is not None:
                self.writer.close()
