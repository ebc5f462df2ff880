"""One writer per output: the exclusive lock every tsekit command that writes an experiment or output dir holds.

Two processes writing one experiment (a recipe rerun while the killed run's job
still trains, or the same stage started twice) silently mix their results. So
every writer holds ``writer_lock(dir)`` for as long as it writes: ``tsekit
train`` on its stage dir, ``tsekit infer`` / ``tsekit score`` on their output
dir (one lock per ``--job`` shard, since the jobs of one run write one dir
together), ``tsekit score merge`` and ``tsekit report`` on theirs. Readers
(inference reading a finished checkpoint, the report reading scores) take none.

The lock is a small file beside the dir, ``.<name>[.<part>].lock`` (beside it,
not in it, so that a writer may replace the dir whole and nothing lists it
among the outputs), created with O_EXCL: exactly one process gets it. It holds
one JSON line naming the holder (host, PID, the process's start time in clock
ticks, command, start date), and the holder touches it every
``timeout / 4`` seconds (the heartbeat, its mtime), so:

- a second writer stops at once, before touching anything, with
  ``LockedError`` (exit status ``LOCKED_EXIT``) naming the holder;
- a lock whose holder is dead is taken over with a warning, so a crashed or
  killed run never blocks its rerun. Dead means: on the same host, the PID is
  gone or now belongs to a process started at another time; on another host
  (a shared file system under Slurm), the heartbeat is older than the timeout
  (``TSEKIT_LOCK_TIMEOUT`` seconds, default 120).

Two processes taking over the same stale lock: only the one holding a short
take-over guard (another O_EXCL file) removes it, after checking that it is
still the dead holder's; then all try O_EXCL again and one wins.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tsekit import TsekitError, warn

LOCKED_EXIT = 75  # sysexits' EX_TEMPFAIL: try again once the other writer is done
DEFAULT_TIMEOUT = 120.0
GUARD_STALE = 10.0  # seconds: a take-over guard older than this was left by a process that died


class LockedError(TsekitError):
    """Another live process holds the writer lock."""

    exit_code = LOCKED_EXIT


def lock_path(target: str | os.PathLike, part: str = "") -> Path:
    """The lock file of directory ``target`` (and of its shard ``part``), beside it."""
    target = Path(target)
    suffix = f".{part}" if part else ""
    return target.parent / f".{target.name}{suffix}.lock"


def lock_timeout() -> float:
    value = os.environ.get("TSEKIT_LOCK_TIMEOUT", "")
    try:
        timeout = float(value) if value else DEFAULT_TIMEOUT
    except ValueError:
        raise TsekitError(f"TSEKIT_LOCK_TIMEOUT={value!r}: expected a number of seconds") from None
    if not timeout > 0:
        raise TsekitError(f"TSEKIT_LOCK_TIMEOUT={value!r}: must be > 0")
    return timeout


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat field 22); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) is in parentheses and may hold spaces: count fields after its ')'
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return pid > 0


def _holder_alive(holder: dict, timeout: float, mtime: float) -> tuple[bool, str]:
    """(alive, why not) of the process a lock file names."""
    if holder.get("host") == socket.gethostname():
        pid = int(holder.get("pid", -1))
        if not Path("/proc/self/stat").is_file():  # no procfs (not Linux): only whether the PID exists
            return _pid_exists(pid), "the process is gone"
        ticks = process_start_ticks(pid)
        if ticks is None:
            return False, "the process is gone"
        if holder.get("start_ticks") is not None and ticks != holder["start_ticks"]:
            return False, "its PID now belongs to another process"
        return True, ""
    age = time.time() - mtime
    if age > timeout:
        return False, f"its heartbeat is {age:.0f} s old (timeout {timeout:g} s)"
    return True, ""


def _read(path: Path) -> tuple[dict, float] | None:
    """(holder, mtime) of a lock file; None when it is gone. A torn or foreign file counts as no holder."""
    try:
        text = path.read_text(encoding="utf-8")
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        holder = {}
    return (holder if isinstance(holder, dict) else {}), mtime


def describe(holder: dict) -> str:
    """Who holds a lock, for one line of an error or a warning."""
    return (f"host {holder.get('host', '?')}, PID {holder.get('pid', '?')}, `{holder.get('command', '?')}`, "
            f"started {holder.get('started', '?')}")


def _take_over(path: Path, holder: dict) -> None:
    """Remove a dead holder's lock file, unless it changed; the caller then tries O_EXCL again.

    Removal happens under a guard file (O_EXCL too), after reading the lock again: two processes taking
    over the same stale lock cannot both remove it, and none removes a fresh lock created meanwhile. A
    guard left by a process that died inside this short section is removed once it is GUARD_STALE old.
    """
    guard = path.with_name(path.name + ".takeover")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - guard.stat().st_mtime > GUARD_STALE:
                guard.unlink()
        time.sleep(0.01)
        return
    try:
        found = _read(path)
        if found is not None and found[0] == holder:
            path.unlink()
    finally:
        os.close(fd)
        guard.unlink(missing_ok=True)


def _acquire(path: Path, mine: dict, timeout: float, what: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(mine) + "\n"
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            found = _read(path)
            if found is None:
                continue  # released between our open and our read
            holder, mtime = found
            alive, why = _holder_alive(holder, timeout, mtime)
            if alive:
                raise LockedError(f"{what} is being written by another process ({describe(holder)}; lock {path}); "
                                  "wait for it to end or stop it") from None
            warn(f"taking over {path} from a dead writer ({describe(holder)}): {why}")
            _take_over(path, holder)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(line)
        return


def _heartbeat(path: Path, mine: dict, interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        found = _read(path)
        if found is None or found[0] != mine:
            return  # taken over (we were presumed dead): stop touching what is no longer ours
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)


@contextlib.contextmanager
def writer_lock(target: str | os.PathLike, part: str = "") -> Iterator[Path]:
    """Hold the exclusive writer lock of directory ``target`` (shard ``part``) while the block runs.

    Raises ``LockedError`` at once when a live process holds it; takes over a dead holder's lock with a
    warning (module docstring). Yields the lock file's path.
    """
    path = lock_path(target, part)
    timeout = lock_timeout()
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "start_ticks": process_start_ticks(os.getpid()),
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python",
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    _acquire(path, mine, timeout, f"{target} ({part})" if part else str(target))
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, mine, timeout / 4, stop), daemon=True,
                            name=f"heartbeat of {path}")
    beat.start()
    try:
        yield path
    finally:
        stop.set()
        beat.join()
        found = _read(path)
        if found is not None and found[0] == mine:
            path.unlink(missing_ok=True)
