"""The writer lock (tsekit.lock): one holder, its heartbeat, and the take-over of a dead holder's lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tsekit.lock import LOCKED_EXIT, LockedError, lock_path, process_start_ticks, writer_lock


def plant(path: Path, **holder) -> dict:
    """A lock file as another writer would have left it."""
    holder = {"host": socket.gethostname(), "pid": 1, "start_ticks": None, "command": "tsekit train --config c",
              "started": "2026-01-01T00:00:00+00:00", **holder}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(holder) + "\n")
    return holder


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_lock_is_held_for_the_block_and_released(tmp_path):
    target = tmp_path / "exp" / "stage1"
    with writer_lock(target) as path:
        assert path == tmp_path / "exp" / ".stage1.lock" and not target.exists()  # beside the dir, not in it
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder["start_ticks"] == process_start_ticks(os.getpid())
        with pytest.raises(LockedError, match=rf"^{target} is being written by another process \(host "):
            with writer_lock(target):
                pass
        with writer_lock(target, "job2"):  # another shard of the same dir has a lock of its own
            assert lock_path(target, "job2").is_file()
    assert not path.exists() and not lock_path(target, "job2").exists()
    assert LockedError("x").exit_code == LOCKED_EXIT == 75


def test_a_live_holder_on_this_host_is_named_and_not_taken_over(tmp_path):
    path = lock_path(tmp_path / "out")
    parent = os.getppid()
    holder = plant(path, pid=parent, start_ticks=process_start_ticks(parent))
    with pytest.raises(LockedError) as caught:
        with writer_lock(tmp_path / "out"):
            pass
    assert f"PID {parent}, `tsekit train --config c`, started 2026-01-01T00:00:00+00:00" in str(caught.value)
    assert json.loads(path.read_text()) == holder  # untouched


@pytest.mark.parametrize("why", ["gone", "reused"])
def test_a_dead_holder_on_this_host_is_taken_over_with_a_warning(tmp_path, capsys, why):
    path = lock_path(tmp_path / "out")
    if why == "gone":
        plant(path, pid=dead_pid())
        reason = "the process is gone"
    else:  # a live PID that another process now has: its start time differs from the recorded one
        plant(path, pid=os.getppid(), start_ticks=process_start_ticks(os.getppid()) - 1)
        reason = "its PID now belongs to another process"
    with writer_lock(tmp_path / "out"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    warning = capsys.readouterr().err
    assert warning.startswith(f"tsekit: warning: taking over {path} from a dead writer") and reason in warning
    assert not path.exists()


def test_another_hosts_lock_is_judged_by_its_heartbeat(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TSEKIT_LOCK_TIMEOUT", "30")
    path = lock_path(tmp_path / "out")
    plant(path, host="node-elsewhere", pid=os.getpid())  # fresh: its holder may be alive over there
    with pytest.raises(LockedError, match="host node-elsewhere"):
        with writer_lock(tmp_path / "out"):
            pass
    old = time.time() - 31
    os.utime(path, (old, old))  # no heartbeat for longer than the timeout: that host's writer is dead
    with writer_lock(tmp_path / "out"):
        assert json.loads(path.read_text())["host"] == socket.gethostname()
    assert "its heartbeat is 31 s old (timeout 30 s)" in capsys.readouterr().err


def test_the_holder_keeps_its_heartbeat_while_it_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("TSEKIT_LOCK_TIMEOUT", "0.4")  # a beat every 0.1 s
    with writer_lock(tmp_path / "out") as path:
        old = time.time() - 100
        os.utime(path, (old, old))
        time.sleep(0.35)
        assert time.time() - path.stat().st_mtime < 0.3


def test_a_bad_timeout_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TSEKIT_LOCK_TIMEOUT", "soon")
    with pytest.raises(Exception, match="TSEKIT_LOCK_TIMEOUT='soon': expected a number of seconds"):
        with writer_lock(tmp_path / "out"):
            pass


RACER = """
import sys, time
from tsekit.lock import LockedError, writer_lock
try:
    with writer_lock(sys.argv[1]):
        print("got it", flush=True)
        time.sleep(1.5)
except LockedError:
    print("refused", flush=True)
"""


def test_racers_for_a_stale_lock_end_with_exactly_one_holder(tmp_path):
    plant(lock_path(tmp_path / "out"), pid=dead_pid())
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path / "out")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [racer.communicate(timeout=60)[0].strip() for racer in racers]
    assert sorted(results) == ["got it"] + ["refused"] * 5, results
