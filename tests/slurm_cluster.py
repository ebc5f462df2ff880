"""A real single-node Slurm cluster on localhost, for the tests of utils/slurm.pl and the recipes.

It runs Debian's own daemons (packages slurmctld, slurmd, slurm-client, munge;
``tools/system_packages.sh --slurm`` installs them), each in the foreground as
a child of the test process, with every file in one temporary folder:

    ROOT/munge/         private munge key and socket (the folder is mode 755, as munged requires)
    ROOT/slurm.conf     SLURM_CONF of every client the tests start (``cluster.env``)
    ROOT/state, spool/  slurmctld's state and slurmd's spool
    ROOT/log/           the daemons' logs: the first place to look when a test fails here

Nothing is installed or changed outside ROOT, and the ports are free ones
picked at start, so a cluster the machine already runs is left alone. Every
daemon's command line names a file in ROOT, so a CI script can find and stop
daemons that a killed test run left behind (``pkill -f ROOT``).
``stop`` cancels every job first, then stops the daemons by their PIDs.
Root is needed: slurmd starts jobs as the submitting user.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
PARTITIONS = ("debug", "short")  # debug is the default partition


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p) is None]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def memory_mb() -> int:
    with open("/proc/meminfo") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return kb // 1024 - 512  # what slurmd finds, less a margin, or it refuses to register the node


class LocalSlurm:
    """Start with ``start()`` (or ``with LocalSlurm(root) as cluster``); ``env`` is for every client."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.root / "slurm.conf")}

    def __enter__(self) -> LocalSlurm:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        munge, log = self.root / "munge", self.root / "log"
        for folder in (munge, log, self.root / "state", self.root / "spool"):
            folder.mkdir(parents=True, exist_ok=True)
        munge.chmod(0o755)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._spawn("munged", ["munged", "--foreground", "--force", f"--key-file={key}",
                               f"--socket={munge / 'munge.socket'}", f"--pid-file={munge / 'munged.pid'}",
                               f"--seed-file={munge / 'munged.seed'}", f"--log-file={log / 'munged.log'}"])
        self._wait(lambda: (munge / "munge.socket").exists(), timeout, "munged to create its socket")
        self._write_config()
        config = str(self.root / "slurm.conf")
        self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-i", "-f", config])
        self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", config])
        self._wait(self._node_ready, timeout, "the node to become idle (sinfo)")

    def _write_config(self) -> None:
        ctld_port, node_port = free_ports(2)
        root = self.root
        partitions = "\n".join(
            f"PartitionName={name} Nodes=localhost Default={'YES' if name == PARTITIONS[0] else 'NO'} "
            "MaxTime=INFINITE State=UP"
            for name in PARTITIONS
        )
        (root / "slurm.conf").write_text(f"""\
ClusterName=tsekit-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root / 'munge' / 'munge.socket'}
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'log' / 'slurmctld.log'}
SlurmdLogFile={root / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MinJobAge=5
KillWait=3
NodeName=localhost CPUs={os.cpu_count()} RealMemory={memory_mb()} State=UNKNOWN
{partitions}
""")

    def _spawn(self, name: str, command: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.out", "wb")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL)
        out.close()

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [name for name, p in self.processes.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"timed out after {timeout:.0f} s"
                raise RuntimeError(f"local Slurm: waiting for {what}: {why}; logs in {self.root / 'log'}")
            time.sleep(0.2)

    def _node_ready(self) -> bool:
        proc = self.run("sinfo", "--noheader", "--format=%T", check=False)
        return proc.returncode == 0 and set(proc.stdout.split()) == {"idle"}

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def jobs(self) -> list[str]:
        """Job ids still in the queue (pending, running or completing)."""
        return self.run("squeue", "--noheader", "--format=%i").stdout.split()

    def wait_empty(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.jobs():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.3)
        return True

    def stop(self) -> None:
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user", str(os.getuid()), check=False)
            self.wait_empty(timeout=15)
        for name in ("slurmd", "slurmctld", "munged"):  # clients first, munge last
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
