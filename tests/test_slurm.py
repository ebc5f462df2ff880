"""utils/slurm.pl and the recipes against a real Slurm: one node on localhost (tests/slurm_cluster.py).

These need root and the Debian packages slurmctld, slurmd, slurm-client and
munge (``tools/system_packages.sh --slurm``); without them they are skipped,
unless TSEKIT_REQUIRE_SLURM=1 (CI) makes that an error.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from corpus_trees import make_libri2mix_tree
from recipe_runs import TINY_ZSPEX, recipe_copy, run_recipe
from slurm_cluster import LocalSlurm, free_ports, missing_programs

from tsekit.corpora.librimix import prepare_libri2mix
from tsekit.data.enroll import enroll_data_dir
from tsekit.data.table import read_table, write_table

pytestmark = pytest.mark.slurm

UTILS = Path(__file__).resolve().parents[1] / "utils"
SLURM_PL = str(UTILS / "slurm.pl")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_programs()
    why = (f"Slurm programs missing: {', '.join(missing)} (tools/system_packages.sh --slurm)" if missing
           else "the local Slurm cluster needs root" if os.geteuid() != 0 else "")
    if why:
        if os.environ.get("TSEKIT_REQUIRE_SLURM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    with LocalSlurm(tmp_path_factory.mktemp("tsekit-slurm-")) as running:
        yield running


def slurm_pl(cluster: LocalSlurm, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**cluster.env, "SLURM_PL_POLL": "0.5"}
    return subprocess.run([SLURM_PL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_array_job_runs_every_task_with_its_log(cluster, tmp_path):
    # any job variable, as in Kaldi: JOB itself would also be replaced inside $SLURM_JOB_PARTITION
    proc = slurm_pl(cluster, tmp_path, "TASK=1:3", "log/hello.TASK.log",
                    "bash", "-c", "echo task TASK of $SLURM_ARRAY_JOB_ID in $SLURM_JOB_PARTITION")
    assert proc.returncode == 0, proc.stderr
    for task in (1, 2, 3):
        log = (tmp_path / "log" / f"hello.{task}.log").read_text()
        body = [line for line in log.splitlines() if not line.startswith("#")]
        # the cluster's default partition, since neither a config nor an option names one
        assert len(body) == 1 and body[0].startswith(f"task {task} of ") and body[0].endswith(" in debug")
        assert "# Ended (code 0)" in log
    assert cluster.wait_empty()


def test_config_file_gives_partition_and_resources(cluster, tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "slurm.conf").write_text(
        "command sbatch --export=ALL --partition=short\n"
        "option mem=* --mem=$0\n"
        "option num_threads=* --cpus-per-task=$0\n"
        "option time=* --time=$0\n"
    )
    proc = slurm_pl(cluster, tmp_path, "--mem", "100M", "--num-threads", "2", "--time", "0:05:00", "log/env.log",
                    "bash", "-c", "echo $SLURM_JOB_PARTITION $SLURM_CPUS_PER_TASK $SLURM_MEM_PER_NODE")
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "log" / "env.log").read_text()
    assert "short 2 100\n" in log


def test_failed_task_fails_the_run_names_its_log_and_reruns_alone(cluster, tmp_path):
    # task 2 fails until the file 'fixed' exists
    command = ["bash", "-c", "test JOB -ne 2 || test -f fixed && echo ran JOB >> ran.txt"]
    proc = slurm_pl(cluster, tmp_path, "JOB=1:3", "log/work.JOB.log", *command)
    assert proc.returncode == 1
    assert "1 / 3 failed" in proc.stderr and "log/work.2.log" in proc.stderr
    assert "log/work.1.log" not in proc.stderr and "log/work.3.log" not in proc.stderr
    assert "# Ended (code 1)" in (tmp_path / "log" / "work.2.log").read_text()
    (tmp_path / "fixed").touch()
    again = slurm_pl(cluster, tmp_path, "JOB=2:2", "log/work.JOB.log", *command)
    assert again.returncode == 0, again.stderr
    assert sorted((tmp_path / "ran.txt").read_text().split("\n")) == ["", "ran 1", "ran 2", "ran 3"]


def test_job_the_partition_cannot_hold_fails_instead_of_waiting(cluster, tmp_path):
    # more CPUs per task than the node has: Slurm queues it for ever (reason PartitionConfig)
    proc = slurm_pl(cluster, tmp_path, "--num-threads", str(2 * (os.cpu_count() or 1)), "log/big.log", "true")
    assert proc.returncode == 1
    assert "cannot start: squeue says it is pending for PartitionConfig" in proc.stderr and "log/big.log" in proc.stderr
    assert cluster.wait_empty(timeout=20), cluster.jobs()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_submitter_leaves_no_job_in_the_queue(cluster, tmp_path, stop):
    env = {**cluster.env, "SLURM_PL_POLL": "0.5"}
    submitter = subprocess.Popen([SLURM_PL, "JOB=1:4", "log/sleep.JOB.log", "sleep", "300"], cwd=tmp_path,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not cluster.run("squeue", "--noheader", "--states=RUNNING", "--format=%i").stdout.split():
        assert time.monotonic() < deadline and submitter.poll() is None, "the array never started"
        time.sleep(0.2)
    submitter.send_signal(stop)
    _, stderr = submitter.communicate(timeout=30)
    assert submitter.returncode == 128 + stop
    assert f"caught {stop.name}, cancelled job" in stderr
    assert cluster.wait_empty(timeout=20), cluster.jobs()


@pytest.mark.tts
def test_mini_recipe_stages_4_7_on_slurm_equal_the_local_runner(cluster, tmp_path):
    recipe = recipe_copy(tmp_path, "mini_libri2mix")
    (recipe / "conf").mkdir()
    (recipe / "conf" / "slurm.conf").symlink_to(Path(__file__).resolve().parents[1] / "egs/TEMPLATE/slurm.conf")
    (recipe / "conf" / "tiny.yaml").write_text(yaml.safe_dump(TINY_ZSPEX))
    options = ["--size", "tiny", "--corpus-dir", str(tmp_path / "corpus"), "--system", "tiny", "--nj", "2",
               "--score-metrics", "si_sdr,stoi"]
    local = run_recipe(recipe, *options, "--stop-stage", "7")
    assert local.returncode == 0, local.stdout + local.stderr
    decode = recipe / "exp" / "tiny" / "decode_test"
    shutil.move(decode, recipe / "local_decode")

    env = {**cluster.env, "TSEKIT_BACKEND": "slurm", "SLURM_PL_POLL": "0.5"}
    on_slurm = run_recipe(recipe, *options, "--stage", "4", "--stop-stage", "7", env=env)
    assert on_slurm.returncode == 0, on_slurm.stdout + on_slurm.stderr
    # the training job (already trained: it only checks) ran on Slurm with the mini recipe's 2 cores, which this
    # node has (the 4 every recipe used to ask for left it pending for ever)
    train_log = (recipe / "exp" / "tiny" / "log" / "train_stage1.log").read_text()
    assert "already trained" in train_log and "threads=2\n" in train_log
    assert (recipe / "exp" / "tiny" / "log" / "q" / "train_stage1.sh").is_file()
    # both stages went through sbatch as 2-task arrays (slurm.pl's batch script and per-task output)
    for queue, name in ((decode / "log" / "q", "infer"), (decode / "scores" / "log" / "q", "score")):
        assert {p.name for p in queue.iterdir()} >= {f"{name}.sh", f"{name}.1.out", f"{name}.2.out"}
    for name in ("scores.tsv", "mixture.tsv", "RESULTS.md"):
        assert (decode / "scores" / name).read_text() == (recipe / "local_decode" / "scores" / name).read_text()
    for key, path in read_table(decode / "wav.scp").items():
        assert Path(path).read_bytes() == (recipe / "local_decode" / "wav" / Path(path).name).read_bytes(), key

    # a task that fails makes the stage fail and names its log; a rerun redoes only what is missing
    enroll = read_table(recipe / "data" / "test" / "enroll.scp")
    last = sorted(enroll)[-1]  # in the last job's share
    write_table(recipe / "data" / "test" / "enroll.scp", {**enroll, last: str(tmp_path / "missing.wav")})
    shutil.rmtree(decode)
    failed = run_recipe(recipe, *options, "--stage", "6", "--stop-stage", "6", env=env)
    assert failed.returncode != 0
    assert f"{decode.relative_to(recipe)}/log/infer.2.log" in failed.stderr
    assert "missing.wav" in (decode / "log" / "infer.2.log").read_text()
    finished = {p.name: p.stat().st_mtime_ns for p in (decode / "wav").glob("*.wav")}
    assert 0 < len(finished) < len(enroll) and f"{last}.wav" not in finished
    write_table(recipe / "data" / "test" / "enroll.scp", enroll)
    rerun = run_recipe(recipe, *options, "--stage", "6", "--stop-stage", "6", env=env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (decode / "wav").glob("*.wav")}
    assert len(after) == len(enroll) and all(after[name] == mtime for name, mtime in finished.items())
    assert cluster.wait_empty()


def test_multinode_launcher_trains_with_torchrun_under_srun(cluster, tmp_path):
    make_libri2mix_tree(tmp_path / "Libri2Mix", rates=(8000,), splits=("train-100", "dev"), per_split=16)
    prepare_libri2mix(tmp_path / "Libri2Mix", tmp_path / "data", sample_rate=8000, splits=("train-100", "dev"))
    for split in ("train-100", "dev"):
        enroll_data_dir(tmp_path / "data" / split)
    config = {"model": {"name": "spex_plus", "params": {
        "num_filters": 8, "channels": 8, "hidden_channels": 16, "num_blocks": 1, "num_stacks": 1,
        "embed_dim": 8, "speaker_hidden": 8, "speaker_blocks": 1}},
        "data": {"sample_rate": 8000, "chunk_seconds": 0.3, "batch_size": 4, "num_workers": 0},
        "train": {"epochs": 1, "log_interval": 1}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "train.sbatch").write_text(f"""#!/usr/bin/env bash
#SBATCH --nodes=1 --ntasks-per-node=1 --cpus-per-task=2 --output={tmp_path}/train.out
srun {UTILS}/slurm_torchrun.sh 2 train --config c.yaml --train-data data/train-100 --valid-data data/dev \\
  --exp-dir exp --device cpu
""")
    env = {**cluster.env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "TSEKIT_RDZV_PORT": str(free_ports(1)[0])}
    proc = subprocess.run(["sbatch", "--wait", "train.sbatch"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    output = (tmp_path / "train.out").read_text()
    assert proc.returncode == 0, output[-3000:]
    assert output.count("trained:") == 1  # rank 0 alone reports
    assert "batch 4 in all (2 in each of 2 processes)" in output
    # 32 rows in global batches of 4: 8 steps, each process taking 2 rows of every step
    steps = {int(line.split("\t")[0]) for line in (tmp_path / "exp/stage1/log/scalars.tsv").read_text().splitlines()}
    assert max(steps) == 8
