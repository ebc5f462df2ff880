"""bench/gpu_smoke.py: its CPU run, where every published config (egs/*/conf/*.yaml but the mini recipe's) at its
published size takes a training step through the trainer and, for an extraction system, an inference; and the
pieces of its GPU measurement that run anywhere.

The CPU run catches config and shape errors at the published sizes, which no other test builds, so it runs in
CI (not marked slow: about 7 min on one thread). Its short examples (0.5 s chunks, 1 s rows and enrollments,
0.5 s inference) and its samplers' fewest steps (the bench's FEWEST_STEPS) do not make the models small:
Whisper large-v2 and EnCodec 24 kHz are built at their size with random weights, and HiFi-GAN V1 too where
make install did not bring the real universal generator.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tsekit.models.registry import MODELS, model_class
from tsekit.train.config import load_config

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench" / "gpu_smoke.py"


@pytest.fixture(scope="module")
def smoke():
    """bench/gpu_smoke.py as a module."""
    spec = importlib.util.spec_from_file_location("gpu_smoke", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_smoke"] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_smoke"]


def published() -> dict[str, Path]:
    configs = sorted(p for p in REPO.glob("egs/*/conf/*.yaml") if p.parent.parent.name != "mini_libri2mix")
    return {f"{p.parent.parent.name}/{p.stem}": p for p in configs}


def table(path: Path) -> list[dict[str, str]]:
    """The rows of the bench's markdown table, by column name."""
    lines = path.read_text().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]


def test_every_published_config_takes_a_step_and_an_inference(smoke, tmp_path):
    out = tmp_path / "smoke.md"
    # about 7 min on one thread of a loaded 2-core machine; the limit only stops a hang
    done = subprocess.run([sys.executable, str(BENCH), "--device", "cpu", "--out", str(out)], capture_output=True,
                          text=True, timeout=25 * 60)
    assert done.returncode == 0 and out.is_file(), done.stdout[-4000:] + done.stderr[-4000:]
    rows = table(out)
    configs = published()
    assert sorted({row["config"] for row in rows}) == sorted(configs)
    for row in rows:
        assert math.isfinite(float(row["trainer steps/s"])) and float(row["trainer steps/s"]) > 0, row
        assert row["peak memory"].endswith("GiB") and row["parameters"].endswith(" M"), row
    for name, path in configs.items():
        cfg = load_config(path, [])
        stages = [row for row in rows if row["config"] == name]
        assert [row["stage"] for row in stages] == (["1", "2"] if cfg.stage2.enabled else ["1"])
        if cfg.model.name in smoke.FEWEST_STEPS:  # the CPU's default, said in the notes
            assert "sampling: " in stages[-1]["notes"], stages[-1]
        if smoke.extracts(model_class(cfg.model.name)):  # an extraction system: its last stage extracted
            assert float(stages[-1]["inference RTF"].split()[0]) > 0, stages[-1]
        else:  # the pos/neg systems' distillation teacher, a speaker encoder
            assert stages[-1]["inference RTF"] == "-"


def test_systems_that_extract_are_those_that_learn_a_target(smoke):
    assert not smoke.extracts(model_class("tfgridnet_speaker"))  # (looking it up registers every system)
    assert {name for name in MODELS if smoke.extracts(model_class(name))} >= {
        "spex_plus", "zspex", "tfgridnet_posneg", "tfgridnet_posneg_early", "ddtse", "maskgit_tse", "whisper_cfm"}


def test_selection_by_glob_brings_a_distillation_teacher_first(smoke):
    names = [f"{p.parent.parent.name}/{p.stem}" for p in smoke.published_configs("*/tfgridnet_posneg*")]
    assert names == ["libri2mix/tfgridnet_speaker", "libri2mix/tfgridnet_posneg", "libri2mix/tfgridnet_posneg_early"]
    every = [f"{p.parent.parent.name}/{p.stem}" for p in smoke.published_configs("*")]
    assert sorted(every) == sorted(published()) and not any(name.startswith("mini_") for name in every)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(2, 2)

    def forward(self, batch):
        return self.inner(batch["x"])


def test_forward_clock_times_the_first_model_of_its_class_and_keeps_its_first_batch(smoke):
    other, net = torch.nn.Linear(2, 2), Net()
    clock = smoke.ForwardClock(Net, torch.device("cpu"))
    other(torch.zeros(2))  # another class: not timed
    first = {"x": torch.zeros(2)}
    net(first)
    assert clock.model is net and clock.batch is first and len(clock.times) == 1
    Net()({"x": torch.zeros(2)})  # a second model of the class: not the one found
    for _ in range(3):
        net({"x": torch.ones(2)})
    assert len(clock.times) == 4 and clock.times == sorted(clock.times)
    assert clock.step_seconds(1, 2) == (clock.times[3] - clock.times[1]) / 2
    with pytest.raises(RuntimeError, match="ran 4 forwards, expected at least 5"):
        clock.step_seconds(1, 3)
    clock.close()
    net({"x": torch.ones(2)})
    assert len(clock.times) == 4  # no hook left behind


def test_measuring_fills_every_column_through_a_teacher_and_both_stages(smoke, tmp_path):
    """The GPU run's path (warm-up steps, bare loop, an untimed inference first) on the CPU, with the mini
    recipe's small pos/neg system: its distillation teacher trained first, stage 2 from stage 1."""
    conf = REPO / "egs" / "mini_libri2mix" / "conf"
    args = argparse.Namespace(**{**smoke.DEFAULTS["cpu"], "warmup": 1, "steps": 2})
    teachers: dict[Path, Path] = {}
    device = torch.device("cpu")
    teacher = smoke.run_config(conf / "tfgridnet_speaker.yaml", args, device, tmp_path, teachers)
    rows = smoke.run_config(conf / "tfgridnet_posneg.yaml", args, device, tmp_path, teachers)
    assert [(row.stage, row.error) for row in teacher + rows] == [(1, ""), (1, ""), (2, "")]
    for row in teacher + rows:
        assert row.trainer_step > 0 and row.bare_step > 0 and row.peak_bytes > 0 and row.parameters > 0
        assert row.shape == "1 x 0.5 s"
    assert math.isnan(teacher[0].rtf) and math.isnan(rows[0].rtf) and rows[1].rtf > 0  # the last stage extracts
    logs = tmp_path / "mini_libri2mix" / "tfgridnet_posneg"
    assert f"distilling towards {tmp_path / 'mini_libri2mix' / 'tfgridnet_speaker' / 'exp'}" in \
        (logs / "train_stage1.log").read_text()
    assert "initialised from " + str(logs / "exp" / "stage1" / "checkpoints" / "averaged.pt") in \
        (logs / "train_stage2.log").read_text()
    cells = smoke.cells(rows[1], args.infer_seconds)
    assert float(cells[6]) > 0 and cells[8].endswith("(0.5 s)")


def test_a_failing_stage_is_reported_in_its_row_and_ends_its_config(smoke, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no\nluck")

    monkeypatch.setattr("tsekit.train.trainer.train", broken)
    args = argparse.Namespace(**smoke.DEFAULTS["cpu"])
    rows = smoke.run_config(REPO / "egs" / "mini_libri2mix" / "conf" / "tfgridnet_posneg.yaml", args,
                            torch.device("cpu"), tmp_path, {REPO / "egs" / "mini_libri2mix" / "conf" /
                                                            "tfgridnet_speaker.yaml": tmp_path / "teacher"})
    assert [(row.stage, row.error) for row in rows] == [(1, "RuntimeError: no luck"), (2, "")]
    assert smoke.cells(rows[0], 0.5)[-1] == "FAILED: RuntimeError: no luck"
    assert smoke.cells(rows[1], 0.5)[2:] == ["-", "1 x 0.5 s", "-", "-", "-", "-", "-", ""]
