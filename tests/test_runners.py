"""Tests of the Kaldi-style shell helpers: utils/parse_options.sh, utils/run.pl, utils/slurm.pl.

They run the real scripts through bash and perl. slurm.pl talks to a fake Slurm:
small sbatch/squeue/sacct/scancel programs put first on PATH that record their
arguments, and (sbatch) run the generated batch script once per array index.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parents[1] / "utils"
RUN_PL = str(UTILS / "run.pl")
SLURM_PL = str(UTILS / "slurm.pl")


# ---------------------------------------------------------------- parse_options.sh

DEMO_SCRIPT = f"""#!/usr/bin/env bash
# Demo recipe: prepares data, then trains.
#   ./demo.sh [--stage N] [--use-gpu true|false] DATA...
set -euo pipefail
stage=1
stop_stage=8
use_gpu=false
data_dir=data
. {UTILS}/parse_options.sh
echo "stage=$stage stop_stage=$stop_stage use_gpu=$use_gpu data_dir=$data_dir"
for arg in "$@"; do echo "arg=$arg"; done
"""


def run_demo(tmp_path: Path, *args: str, script: str = DEMO_SCRIPT) -> subprocess.CompletedProcess:
    path = tmp_path / "demo.sh"
    path.write_text(script)
    return subprocess.run(["bash", str(path), *args], capture_output=True, text=True, cwd=tmp_path)


def test_parse_options_sets_known_variables_in_both_forms(tmp_path):
    result = run_demo(tmp_path, "--stage", "3", "--stop-stage=5", "--data-dir", "my data", "--use-gpu=true")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "stage=3 stop_stage=5 use_gpu=true data_dir=my data\n"


def test_parse_options_without_arguments_keeps_defaults(tmp_path):
    result = run_demo(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "stage=1 stop_stage=8 use_gpu=false data_dir=data\n"


def test_parse_options_stops_at_first_positional_argument(tmp_path):
    result = run_demo(tmp_path, "--stage", "2", "data/dev", "x y", "--stage", "4")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "stage=2 stop_stage=8 use_gpu=false data_dir=data",
        "arg=data/dev",
        "arg=x y",
        "arg=--stage",
        "arg=4",
    ]


def test_parse_options_double_dash_ends_options(tmp_path):
    result = run_demo(tmp_path, "--stage", "2", "--", "--stop-stage", "1")
    assert result.stdout.splitlines()[1:] == ["arg=--stop-stage", "arg=1"]


def test_parse_options_unknown_option_is_a_one_line_error(tmp_path):
    result = run_demo(tmp_path, "--stage", "2", "--stgae", "3")
    assert result.returncode == 1
    assert result.stderr == "demo.sh: unknown option --stgae\n"
    assert result.stdout == ""


def test_parse_options_option_without_value_is_an_error(tmp_path):
    result = run_demo(tmp_path, "--stage")
    assert result.returncode == 1
    assert result.stderr == "demo.sh: option --stage needs a value\n"


def test_parse_options_boolean_takes_only_true_or_false(tmp_path):
    result = run_demo(tmp_path, "--use-gpu", "yes")
    assert result.returncode == 1
    assert "--use-gpu takes true or false" in result.stderr
    assert run_demo(tmp_path, "--use-gpu", "true").stdout.startswith("stage=1 stop_stage=8 use_gpu=true ")


def test_parse_options_config_file_is_applied_before_command_line(tmp_path):
    (tmp_path / "opts.conf").write_text("# recipe options\nstage=4\nstop_stage=6\n")
    for args in (["--config", "opts.conf", "--stop-stage", "7"], ["--stop-stage", "7", "--config=opts.conf"]):
        result = run_demo(tmp_path, *args, "rest")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "stage=4 stop_stage=7 use_gpu=false data_dir=data\narg=rest\n"
    result = run_demo(tmp_path, "--config", "missing.conf")
    assert result.returncode == 1
    assert result.stderr == "demo.sh: config file 'missing.conf' not found\n"


def test_parse_options_help_prints_leading_comment_block(tmp_path):
    for flag in ("--help", "-h"):
        result = run_demo(tmp_path, "--stage", "2", flag)
        assert result.returncode == 0
        assert result.stdout.splitlines() == [
            "Demo recipe: prepares data, then trains.",
            "  ./demo.sh [--stage N] [--use-gpu true|false] DATA...",
        ]


def test_parse_options_help_prefers_help_message(tmp_path):
    script = DEMO_SCRIPT.replace("stage=1\n", 'stage=1\nhelp_message="usage: demo.sh [options]"\n')
    result = run_demo(tmp_path, "--help", script=script)
    assert (result.returncode, result.stdout) == (0, "usage: demo.sh [options]\n")


def test_parse_options_sourced_from_bash_c_with_strict_mode(tmp_path):
    body = f'set -euo pipefail; nj=1; ngpu=0; . {UTILS}/parse_options.sh; echo "nj=$nj ngpu=$ngpu rest=$*"'
    args = ["bash", "-c", body, "prog"]
    result = subprocess.run([*args, "--nj", "4", "a", "b"], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "nj=4 ngpu=0 rest=a b\n")
    result = subprocess.run([*args, "--njobs", "4"], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (1, "prog: unknown option --njobs\n")


# ---------------------------------------------------------------- run.pl


def run_pl(tmp_path: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([RUN_PL, *args], capture_output=True, text=True, cwd=tmp_path, timeout=timeout)


def check_log(path: Path, command: str, code: int, threads: int = 1) -> list[str]:
    """Assert the Kaldi header/footer of one log; return the lines the command wrote."""
    lines = path.read_text().splitlines()
    assert lines[0] == f"# {command}"
    assert lines[1].startswith("# Started at ")
    assert lines[2] == "#"
    assert lines[-2].startswith("# Accounting: time=") and lines[-2].endswith(f" threads={threads}")
    assert lines[-1].startswith(f"# Ended (code {code}) at ")
    return lines[3:-2]


def test_run_pl_substitutes_job_in_log_and_arguments(tmp_path):
    result = run_pl(tmp_path, "JOB=1:3", "exp/log/echo.JOB.log", "echo", "job", "JOB", "of", "3")
    assert (result.returncode, result.stderr) == (0, "")
    for job in (1, 2, 3):
        output = check_log(tmp_path / f"exp/log/echo.{job}.log", f"echo job {job} of 3", 0)
        assert output == [f"job {job} of 3"]
    assert sorted(p.name for p in (tmp_path / "exp/log").iterdir()) == [f"echo.{j}.log" for j in (1, 2, 3)]


def test_run_pl_any_job_variable_and_range(tmp_path):
    result = run_pl(tmp_path, "--mem", "4G", "SPLIT=2:3", "--gpu", "1", "log/s.SPLIT.log", "echo", "SPLIT")
    assert result.returncode == 0, result.stderr
    assert check_log(tmp_path / "log/s.2.log", "echo 2", 0) == ["2"]
    assert check_log(tmp_path / "log/s.3.log", "echo 3", 0) == ["3"]
    assert not (tmp_path / "log/s.1.log").exists()


def test_run_pl_without_range_runs_one_job(tmp_path):
    result = run_pl(tmp_path, "log/one.log", "echo", "JOB")
    assert result.returncode == 0, result.stderr
    assert check_log(tmp_path / "log/one.log", "echo JOB", 0) == ["JOB"]


def test_run_pl_accepts_and_ignores_resource_options(tmp_path):
    args = ["--mem", "4G", "--gpu", "1", "--num-threads", "2", "--time", "1:00:00", "--config", "conf/none"]
    result = run_pl(tmp_path, *args, "JOB=1:1", "log/r.JOB.log", "true")
    assert result.returncode == 0, result.stderr
    check_log(tmp_path / "log/r.1.log", "true", 0, threads=2)


def job_intervals(tmp_path: Path, jobs: int) -> list[tuple[float, float]]:
    return [tuple(map(float, (tmp_path / f"t.{j}").read_text().split())) for j in range(1, jobs + 1)]


TIMED_JOB = "s=$(date +%s.%N); sleep 0.4; echo $s $(date +%s.%N) > t.JOB"


def test_run_pl_runs_jobs_in_parallel(tmp_path):
    result = run_pl(tmp_path, "--max-jobs-run", "3", "JOB=1:3", "log/p.JOB.log", TIMED_JOB)
    assert result.returncode == 0, result.stderr
    intervals = job_intervals(tmp_path, 3)
    assert max(start for start, _ in intervals) < min(end for _, end in intervals)  # all ran at once


def test_run_pl_max_jobs_run_1_serialises(tmp_path):
    result = run_pl(tmp_path, "--max-jobs-run", "1", "JOB=1:3", "log/p.JOB.log", TIMED_JOB)
    assert result.returncode == 0, result.stderr
    intervals = sorted(job_intervals(tmp_path, 3))
    for (_, end), (next_start, _) in zip(intervals, intervals[1:], strict=False):
        assert next_start >= end


def test_run_pl_failing_job_is_named(tmp_path):
    result = run_pl(tmp_path, "JOB=1:4", "exp/log/f.JOB.log", "echo JOB; test JOB -ne 3")
    assert result.returncode == 1
    assert result.stderr == "run.pl: 1 / 4 failed, log is in exp/log/f.3.log\n"
    check_log(tmp_path / "exp/log/f.3.log", "echo 3; test 3 -ne 3", 1)
    check_log(tmp_path / "exp/log/f.4.log", "echo 4; test 4 -ne 3", 0)


def test_run_pl_names_every_failed_log(tmp_path):
    result = run_pl(tmp_path, "JOB=1:4", "log/f.JOB.log", "exit $((JOB % 2 * 7))")
    assert result.returncode == 1
    assert result.stderr == "run.pl: 2 / 4 failed, logs are in log/f.1.log log/f.3.log\n"
    check_log(tmp_path / "log/f.3.log", "exit $((3 % 2 * 7))", 7)


def test_run_pl_quotes_arguments(tmp_path):
    awkward = ["a b", "it's", '"quoted"', "$HOME", "*", "", "x|y", "tab\there"]
    result = run_pl(tmp_path, "log/q.log", "printf", "[%s]\\n", *awkward)
    assert result.returncode == 0, result.stderr
    command = "printf '[%s]\\n' 'a b' 'it'\\''s' '\"quoted\"' '$HOME' '*' '' 'x|y' 'tab\there'"
    output = check_log(tmp_path / "log/q.log", command, 0)
    assert output == [f"[{arg}]" for arg in awkward]


def test_run_pl_pipes_in_one_string_or_as_bare_operator(tmp_path):
    result = run_pl(tmp_path, "JOB=1:2", "log/a.JOB.log", "echo job JOB | tr a-z A-Z")
    assert result.returncode == 0, result.stderr
    assert check_log(tmp_path / "log/a.2.log", "echo job 2 | tr a-z A-Z", 0) == ["JOB 2"]
    result = run_pl(tmp_path, "log/b.log", "printf", "a b", "|", "tr", "a-z", "A-Z")
    assert result.returncode == 0, result.stderr
    # the output has no final newline; the footer still starts a line of its own
    assert check_log(tmp_path / "log/b.log", "printf 'a b' | tr a-z A-Z", 0) == ["A B"]


def test_run_pl_range_needs_job_in_log_name(tmp_path):
    result = run_pl(tmp_path, "JOB=1:2", "log/shared.log", "true")
    assert result.returncode == 1
    assert "2 jobs would share one log file log/shared.log" in result.stderr


def test_run_pl_sigterm_stops_jobs_and_their_children(tmp_path):
    process = subprocess.Popen([RUN_PL, "JOB=1:2", "log/l.JOB.log", "sleep 30 | cat"], cwd=tmp_path,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    while not all((tmp_path / f"log/l.{j}.log").exists() for j in (1, 2)) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 128 + signal.SIGTERM
    assert "run.pl: 2 / 2 failed, logs are in log/l.1.log log/l.2.log" in stderr
    check_log(tmp_path / "log/l.1.log", "sleep 30 | cat", 128 + signal.SIGTERM)


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for a parent that does not reap it counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def wait_for_files(paths: list[Path], seconds: float = 10) -> None:
    deadline = time.time() + seconds
    while not all(p.is_file() and p.read_text().strip() for p in paths) and time.time() < deadline:
        time.sleep(0.02)


def test_run_pl_sigint_still_reaches_the_jobs_first(tmp_path):
    """Graceful stop: the job gets SIGINT (its trap runs), not a kill."""
    command = "trap 'echo stopped > stopped.JOB; exit 3' INT; echo $$ > shell.JOB; while true; do sleep 0.05; done"
    process = subprocess.Popen([RUN_PL, "JOB=1:2", "log/l.JOB.log", command], cwd=tmp_path, stderr=subprocess.PIPE,
                               text=True)
    wait_for_files([tmp_path / f"shell.{j}" for j in (1, 2)])
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 128 + signal.SIGINT
    assert [(tmp_path / f"stopped.{j}").read_text() for j in (1, 2)] == ["stopped\n"] * 2
    check_log(tmp_path / "log/l.1.log", command.replace("JOB", "1"), 3)


@pytest.mark.parametrize("kill", ["launcher", "its process group"])
def test_run_pl_jobs_die_within_a_second_of_a_sigkilled_launcher(tmp_path, kill):
    # a job whose command has a child of its own (as a training job has its data workers)
    command = "sleep 60 & echo $! > child.JOB; echo $$ > shell.JOB; wait"
    process = subprocess.Popen([RUN_PL, "JOB=1:2", "log/l.JOB.log", command], cwd=tmp_path,
                               start_new_session=True, stderr=subprocess.DEVNULL)
    files = [tmp_path / f"{name}.{j}" for name in ("shell", "child") for j in (1, 2)]
    wait_for_files(files)
    pids = [int(p.read_text()) for p in files]
    assert all(alive(pid) for pid in pids)
    if kill == "launcher":
        os.kill(process.pid, signal.SIGKILL)
    else:  # what a scheduler's time limit does to the submitting shell's group
        os.killpg(process.pid, signal.SIGKILL)
    killed = time.time()
    process.wait()
    while any(alive(pid) for pid in pids) and time.time() - killed < 1.0:
        time.sleep(0.02)
    assert not any(alive(pid) for pid in pids), [pid for pid in pids if alive(pid)]
    time.sleep(0.3)  # the watchers finish the logs
    assert "# Ended (code 137)" in (tmp_path / "log/l.1.log").read_text()


# ---------------------------------------------------------------- slurm.pl with a fake Slurm

FAKE_TOOL = """#!{python}
import json, os, subprocess, sys
state = os.environ["FAKE_SLURM_DIR"]
with open(os.path.join(state, "{name}.calls"), "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
{body}
"""
FAKE_BODIES = {
    "sbatch": """
array = [a for a in sys.argv if a.startswith("--array=")][0][len("--array="):].split("%")[0]
first, last = map(int, array.split("-"))
skipped = os.environ.get("FAKE_SBATCH_SKIP", "").split()
if os.environ.get("FAKE_SBATCH_HOLD") != "1":
    for task in range(first, last + 1):
        if str(task) not in skipped:
            env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(task))
            subprocess.run(["bash", sys.argv[-1]], env=env, stdout=subprocess.DEVNULL)
print("Submitted batch job 123")
""",
    "squeue": 'reason = os.environ.get("FAKE_SQUEUE_REASON", "Priority")\n'
              'print("\\n".join(f"{t} PENDING {reason}" for t in os.environ.get("FAKE_SQUEUE_TASKS", "").split()))',
    "sacct": 'print(os.environ.get("FAKE_SACCT_STATE", "FAILED"))',
    "scancel": "",
}


@pytest.fixture
def slurm(tmp_path):
    """A fake Slurm on PATH; returns (env, calls) where calls(name) lists one tool's argument lists."""
    bin_dir = tmp_path / "fake_bin"
    bin_dir.mkdir()
    for name, body in FAKE_BODIES.items():
        tool = bin_dir / name
        tool.write_text(FAKE_TOOL.format(python=sys.executable, name=name, body=body))
        tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_SLURM_DIR=str(tmp_path),
               SLURM_PL_POLL="0.05")
    env.pop("SLURM_PL_DRY_RUN", None)

    def calls(name: str) -> list[list[str]]:
        path = tmp_path / f"{name}.calls"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    return env, calls


def slurm_pl(tmp_path: Path, env: dict, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([SLURM_PL, *args], capture_output=True, text=True, cwd=tmp_path,
                          env=dict(env, **extra_env), timeout=30)


def array_options(first_last: str, base: str = "infer", log_dir: str = "exp/log") -> list[str]:
    return [f"--array={first_last}", f"--job-name={base}", f"--output={log_dir}/q/{base}.%a.out",
            f"{log_dir}/q/{base}.sh"]


INFER = ["JOB=1:3", "exp/log/infer.JOB.log", "echo", "task", "JOB", "a b"]


def test_slurm_pl_maps_resource_options_with_builtin_config(tmp_path, slurm):
    env, calls = slurm
    args = ["--mem", "4G", "--num-threads", "2", "--gpu", "1", "--time", "2:00:00", "--max-jobs-run", "2"]
    result = slurm_pl(tmp_path, env, *args, *INFER)
    assert (result.returncode, result.stderr) == (0, "")
    assert calls("sbatch") == [["--export=ALL", "--mem=4G", "--cpus-per-task=2", "--gres=gpu:1",
                                "--time=2:00:00", *array_options("1-3%2")]]
    assert calls("squeue") == []  # the tasks left their markers at once: no need to ask Slurm


def test_slurm_pl_gpu_0_and_mem_0_add_nothing(tmp_path, slurm):
    env, calls = slurm
    result = slurm_pl(tmp_path, env, "--gpu", "0", "--mem", "0", *INFER)
    assert result.returncode == 0, result.stderr
    assert calls("sbatch") == [["--export=ALL", *array_options("1-3")]]


def test_slurm_pl_writes_per_task_logs(tmp_path, slurm):
    env, _ = slurm
    (tmp_path / "path.sh").write_text("export GREETING=hello\n")  # sourced by every task, as in Kaldi
    command = "echo $GREETING JOB; printf '<%s>' 'a b'"  # no final newline
    result = slurm_pl(tmp_path, env, "--num-threads", "2", *INFER[:2], command)
    assert result.returncode == 0, result.stderr
    for task in (1, 2, 3):
        log = tmp_path / f"exp/log/infer.{task}.log"
        output = check_log(log, command.replace("JOB", str(task)), 0, threads=2)
        assert output == [f"hello {task}", "<a b>"]
    result = slurm_pl(tmp_path, env, *INFER)
    assert check_log(tmp_path / "exp/log/infer.3.log", "echo task 3 'a b'", 0) == ["task 3 a b"]
    assert not list((tmp_path / "exp/log/q").glob("*done*"))  # markers are cleaned up


SITE_CONF = """# partitions of our cluster
command sbatch --export=PATH --account=speech
option mem=* --mem=$0
option gpu=0 --partition=cpu
option gpu=* --gres=gpu:$0 --partition=gpu  # GPU nodes
default gpu=0
"""


def test_slurm_pl_uses_conf_slurm_conf_of_current_directory(tmp_path, slurm):
    env, calls = slurm
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/slurm.conf").write_text(SITE_CONF)
    assert slurm_pl(tmp_path, env, *INFER).returncode == 0
    assert slurm_pl(tmp_path, env, "--gpu", "2", "--mem", "8G", *INFER).returncode == 0
    assert calls("sbatch") == [
        ["--export=PATH", "--account=speech", "--partition=cpu", *array_options("1-3")],
        ["--export=PATH", "--account=speech", "--gres=gpu:2", "--partition=gpu", "--mem=8G",
         *array_options("1-3")],
    ]


def test_slurm_pl_config_option_and_unknown_options(tmp_path, slurm):
    env, calls = slurm
    (tmp_path / "site.conf").write_text(SITE_CONF)
    result = slurm_pl(tmp_path, env, "--config", "site.conf", "log/one.log", "true")
    assert result.returncode == 0, result.stderr
    assert calls("sbatch") == [["--export=PATH", "--account=speech", "--partition=cpu",
                                *array_options("1-1", base="one", log_dir="log")]]
    result = slurm_pl(tmp_path, env, "--config", "site.conf", "--num-threads", "4", *INFER)
    assert result.returncode == 1
    assert result.stderr == "slurm.pl: option --num-threads 4 is not allowed by site.conf\n"
    result = slurm_pl(tmp_path, env, "--config", "nowhere.conf", *INFER)
    assert (result.returncode, result.stderr) == (1, "slurm.pl: config file nowhere.conf not found\n")
    assert len(calls("sbatch")) == 1


def test_slurm_pl_reads_the_recipe_template_config(tmp_path, slurm):
    env, _ = slurm
    template = Path(__file__).resolve().parents[1] / "egs/TEMPLATE/slurm.conf"
    if not template.exists():
        pytest.skip("no egs/TEMPLATE/slurm.conf")
    options = ["--dry-run", "--config", str(template), "--gpu", "1", "--mem", "4G"]
    result = slurm_pl(tmp_path, env, *options, *INFER)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("sbatch --export=PATH --gres=gpu:1 ")


def test_slurm_pl_dry_run_submits_nothing(tmp_path, slurm):
    env, calls = slurm
    expected = " ".join(["sbatch", "--export=ALL", "--mem=2G", *array_options("1-3")])
    expected += "\nbatch script: exp/log/q/infer.sh\n"
    result = slurm_pl(tmp_path, env, "--dry-run", "--mem", "2G", *INFER)
    assert (result.returncode, result.stdout) == (0, expected)
    result = slurm_pl(tmp_path, env, "--mem", "2G", *INFER, SLURM_PL_DRY_RUN="1")
    assert (result.returncode, result.stdout) == (0, expected)
    assert calls("sbatch") == []
    assert (tmp_path / "exp/log/q/infer.sh").exists()
    assert not (tmp_path / "exp/log/infer.1.log").exists()


def test_slurm_pl_failing_task_is_named(tmp_path, slurm):
    env, _ = slurm
    result = slurm_pl(tmp_path, env, "JOB=1:3", "exp/log/f.JOB.log", "test JOB -ne 2")
    assert result.returncode == 1
    assert result.stderr == "slurm.pl: 1 / 3 failed, log is in exp/log/f.2.log\n"
    check_log(tmp_path / "exp/log/f.2.log", "test 2 -ne 2", 1)


def test_slurm_pl_task_that_died_without_marker_is_found_through_squeue(tmp_path, slurm):
    env, calls = slurm
    result = slurm_pl(tmp_path, env, *INFER, FAKE_SBATCH_SKIP="2", FAKE_SACCT_STATE="TIMEOUT")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "slurm.pl: 1 / 3 failed, log is in exp/log/infer.2.log"
    assert "task 2 of job 123" in lines[1] and "TIMEOUT" in lines[1] and "exp/log/q/infer.2.out" in lines[1]
    assert calls("squeue")[0] == ["--noheader", "--array", "--jobs=123", "--format=%K %T %r"]
    assert calls("sacct") == [
        ["--noheader", "--parsable2", "--allocations", "--jobs=123_2", "--format=State"]
    ]


def test_slurm_pl_cancels_a_job_pending_for_a_reason_that_never_clears(tmp_path, slurm):
    env, calls = slurm
    env = dict(env, FAKE_SBATCH_HOLD="1", FAKE_SQUEUE_TASKS="1 2 3", FAKE_SQUEUE_REASON="PartitionTimeLimit")
    result = subprocess.run([SLURM_PL, *INFER], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and calls("scancel") == [["123"]]
    assert result.stderr.startswith("slurm.pl: job 123 (log exp/log/infer.JOB.log) cannot start: squeue says it is "
                                    "pending for PartitionTimeLimit, its time limit exceeds the partition's;")
    assert len(calls("squeue")) == 2  # two looks, so a passing state is not taken for a lasting one


def test_slurm_pl_sigterm_cancels_the_job(tmp_path, slurm):
    env, calls = slurm
    env = dict(env, FAKE_SBATCH_HOLD="1", FAKE_SQUEUE_TASKS="1 2 3")  # tasks stay queued
    process = subprocess.Popen([SLURM_PL, *INFER], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    while not calls("squeue") and time.time() < deadline:  # it is waiting
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 128 + signal.SIGTERM
    assert calls("scancel") == [["123"]]
    assert "cancelled job 123" in stderr
