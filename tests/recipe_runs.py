"""Running a recipe's run.sh from a temporary copy, for the recipe tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = ("utils", "tse.sh", "path.sh", "cmd.sh", "defaults.sh")
# a zspex that trains in seconds: the recipe tests' conf/tiny.yaml
TINY_ZSPEX = {
    "model": {"name": "zspex", "params": {
        "sample_rate": 16000, "num_filters": 16, "channels": 16, "hidden_channels": 32, "num_blocks": 2,
        "num_stacks": 1, "embed_dim": 16, "speaker_hidden": 16, "speaker_blocks": 1, "scaleinter_hidden": 16,
        "modulation_hidden": 16}},
    "data": {"sample_rate": 16000, "chunk_seconds": 0.5, "batch_size": 2, "num_workers": 0},
    "train": {"epochs": 1, "log_interval": 1},
}


def recipe_copy(tmp_path: Path, name: str) -> Path:
    """egs/<name> copied under tmp_path, its shared parts linked to this checkout."""
    recipe = tmp_path / "egs" / name
    recipe.mkdir(parents=True)
    shutil.copy(REPO / "egs" / name / "run.sh", recipe / "run.sh")
    for link in SHARED:
        (recipe / link).symlink_to((REPO / "egs" / name / link).resolve())
    return recipe


def run_recipe(recipe: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """./run.sh ARGS in ``recipe`` with this Python's tsekit first on PATH; the local runner unless ``env`` says."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "TSEKIT_BACKEND"}
    env = {**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}
    return subprocess.run(["./run.sh", *args], cwd=recipe, env=env, capture_output=True, text=True, timeout=600)
