"""A recipe killed as a whole process group, at any stage, and rerun at once ends as if never killed.

What a scheduler's time limit on the submitting node or the OOM killer does: SIGKILL to run.sh's whole
process group. utils/run.pl's jobs must not outlive it (else the rerun would meet a job of the killed run
still writing, which the writer locks refuse), and the rerun must take over the dead writers' locks and
resume to the very bytes of an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from recipe_runs import TINY_ZSPEX, recipe_copy, run_recipe

from tsekit.corpora.tts import missing_packages

pytestmark = [
    pytest.mark.tts,
    pytest.mark.skipif(bool(missing_packages()), reason="TTS voices missing (tools/system_packages.sh)"),
]

TINY = {**TINY_ZSPEX, "data": {**TINY_ZSPEX["data"], "num_workers": 1},  # a data worker: a child to orphan
        # a checkpoint every 2 steps: a kill lands between checkpoints, and the rerun resumes mid-epoch
        "train": {"epochs": 2, "log_interval": 1, "save_interval": 2}}


def options(corpus: Path) -> list[str]:
    return ["--size", "tiny", "--corpus-dir", str(corpus), "--system", "tiny", "--nj", "2",
            "--score-metrics", "si_sdr,stoi", "--stop-stage", "7"]


def tiny_recipe(root: Path) -> Path:
    recipe = recipe_copy(root, "mini_libri2mix")
    (recipe / "conf").mkdir()
    (recipe / "conf" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return recipe


def outputs(recipe: Path) -> dict[str, bytes]:
    """Data dirs, extracted audio and scores, by path inside the recipe; the recipe's own path made neutral."""
    decode = recipe / "exp" / "tiny" / "decode_test"
    files = [*(recipe / "data").rglob("*"), *(decode / "wav").glob("*.wav"), decode / "wav.scp",
             *(decode / "scores" / name for name in ("scores.tsv", "mixture.tsv", "RESULTS.md"))]
    return {str(p.relative_to(recipe)): p.read_bytes().replace(str(recipe).encode(), b"RECIPE")
            for p in sorted(files) if p.is_file()}


def kill_when(recipe: Path, corpus: Path, moment: Callable[[], bool], what: str) -> None:
    """Start run.sh in a process group of its own, SIGKILL the whole group once ``moment()`` holds."""
    env = {k: v for k, v in os.environ.items() if k != "TSEKIT_BACKEND"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    run = subprocess.Popen(["./run.sh", *options(corpus)], cwd=recipe, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not moment():
        assert run.poll() is None, f"the recipe ended before it was {what}"
        assert time.time() < deadline, f"never {what}"
        time.sleep(0.005)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()


def test_killed_during_training_inference_and_scoring_then_rerun_gives_the_uninterrupted_bytes(tmp_path):
    corpus = tmp_path / "corpus"
    straight = tiny_recipe(tmp_path / "straight")
    done = run_recipe(straight, *options(corpus))
    assert done.returncode == 0, done.stdout + done.stderr
    expected = outputs(straight)
    assert sum(name.endswith(".wav") for name in expected) == 6 and "exp/tiny/decode_test/scores/scores.tsv" in expected

    recipe = tiny_recipe(tmp_path / "killed")
    exp = recipe / "exp" / "tiny"
    decode = exp / "decode_test"
    checkpoints = exp / "stage1" / "checkpoints"
    moments = {
        "training, after a checkpoint": lambda: (exp / ".stage1.lock").is_file() and (checkpoints / "latest.pt")
        .is_file() and not (checkpoints / "averaged.pt").is_file(),
        "extracting, some wavs written": lambda: any(decode.parent.glob(".decode_test.job*.lock"))
        and any((decode / "wav").glob("*.wav")) and not (decode / "wav.scp").is_file(),
        "scoring": lambda: any(decode.glob(".scores.job*.lock")) and not (decode / "scores" / "scores.tsv").is_file(),
    }
    for what, moment in moments.items():
        kill_when(recipe, corpus, moment, what)
    rerun = run_recipe(recipe, *options(corpus))  # at once: no job of the killed runs may still be writing
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    # the last kill left a scoring job's lock behind: its rerun took it over, saying so in its log
    logs = "".join(p.read_text() for p in (decode / "scores" / "log").glob("score.*.log"))
    assert "tsekit: warning: taking over" in logs and "the process is gone" in logs
    assert outputs(recipe) == expected
    assert not list(recipe.rglob("*.lock"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict[str, bytes], float]:
    """(corpus, outputs, seconds) of one uninterrupted run of the tiny recipe."""
    root = tmp_path_factory.mktemp("uninterrupted")
    corpus = root / "corpus"
    run_recipe(tiny_recipe(root / "warm"), *options(corpus))  # synthesizes the corpus, outside the timing
    recipe = tiny_recipe(root / "straight")
    started = time.time()
    done = run_recipe(recipe, *options(corpus))
    assert done.returncode == 0, done.stdout + done.stderr
    return corpus, outputs(recipe), time.time() - started


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [i / 10 for i in range(10)])
def test_killed_at_any_moment_then_rerun_gives_the_uninterrupted_bytes(uninterrupted, tmp_path, fraction):
    """The issue's measurement: ten kill moments spread over the run (stage 0 to scoring), each rerun at once."""
    corpus, expected, seconds = uninterrupted
    recipe = tiny_recipe(tmp_path)
    started = time.time()
    kill_when(recipe, corpus, lambda: time.time() - started >= fraction * seconds, f"{fraction:.0%} through")
    rerun = run_recipe(recipe, *options(corpus))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert outputs(recipe) == expected
