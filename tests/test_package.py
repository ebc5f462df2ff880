"""Packaged models: tsekit export, loading by --model (also from a Hugging Face hub cache folder), refusing damaged
or foreign packages, and the Python entry point tsekit.load_model with the README's example."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from trained import TINY_RATE as RATE
from trained import TINY_SPEX_PLUS as TINY
from trained import prepare_tiny

import tsekit
from tsekit import TsekitError
from tsekit.checkpoint import file_sha256
from tsekit.data.table import read_table
from tsekit.train.export import export_model
from tsekit.train.package import load_package

TSEKIT = Path(sys.executable).parent / "tsekit"
ONE_LSB = 1.5 / 32768

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(TSEKIT), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(experiment root, its packaged model, test data dir): a tiny SpEx+ trained one epoch at 8 kHz as a recipe
    trains it (through the runner, so its log has the command, the hardware and the run time), decoded and scored on
    the dev set, then exported from recipe/exp/spex_plus with the recipe's card file."""
    recipe = tmp_path_factory.mktemp("recipe")
    data = prepare_tiny(recipe, RATE)
    (recipe / "conf").mkdir()
    (recipe / "conf" / "spex_plus.yaml").write_text(yaml.safe_dump(TINY))
    (recipe / "model_card.yaml").write_text(yaml.safe_dump({
        "license": "cc-by-4.0", "datasets": ["fake_libri2mix"], "corpus": "noise shaped like speech.",
        "limits": ["Trained for one epoch on 16 mixtures."]}))
    runner = Path(__file__).resolve().parents[1] / "utils" / "run.pl"
    train = subprocess.run([str(runner), "exp/spex_plus/log/train_stage1.log", str(TSEKIT), "train", "--config",
                            "conf/spex_plus.yaml", "--train-data", "data/train-100", "--valid-data", "data/dev",
                            "--exp-dir", "exp/spex_plus", "--device", "cpu"], cwd=recipe, capture_output=True,
                           text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert train.returncode == 0, train.stderr
    exp = recipe / "exp" / "spex_plus"
    for args in (("infer", "--model", exp, "--data", data / "dev", "--out", exp / "decode_dev"),
                 ("score", "--ref", data / "dev" / "spk1.scp", "--est", exp / "decode_dev" / "wav.scp", "--mix",
                  data / "dev" / "wav.scp", "--metrics", "si_sdr,si_sdri,stoi", "--out",
                  exp / "decode_dev" / "scores")):
        proc = run_cli(*args)
        assert proc.returncode == 0, proc.stderr
    export_model(exp, recipe / "packaged")
    return exp, recipe / "packaged", data / "dev"


def first_row(data: Path) -> tuple[str, str]:
    utt = sorted(read_table(data / "wav.scp"))[0]
    return read_table(data / "wav.scp")[utt], read_table(data / "enroll.scp")[utt]


def test_export_writes_weights_config_card_and_a_manifest_of_hashes(trained):
    exp, packaged, _ = trained
    assert sorted(p.name for p in packaged.iterdir()) == ["README.md", "config.yaml", "manifest.json",
                                                          "model.safetensors"]
    manifest = json.loads((packaged / "manifest.json").read_text())
    assert manifest["format"] == "tsekit-model/1" and manifest["system"] == "spex_plus"
    assert manifest["files"] == {name: file_sha256(packaged / name)
                                 for name in ("README.md", "config.yaml", "model.safetensors")}
    assert manifest["frozen"] == {}  # the learned speaker encoder is in the weights
    assert manifest["exported_from"]["checkpoint"] == "averaged.pt"
    config = yaml.safe_load((packaged / "config.yaml").read_text())
    assert config["model"]["name"] == "spex_plus" and config["data"]["sample_rate"] == RATE
    assert config["infer"]["output_level"] == "mixture_fit"
    assert "# at inference: chunks of 1.2 s" in (packaged / "config.yaml").read_text()  # 4 x the training chunk
    card = (packaged / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "tsekit" and "spex_plus" in front["tags"] and front["license"] == "cc-by-4.0"
    assert front["datasets"] == ["fake_libri2mix"]
    # the model index holds the experiment's own scores, as its RESULTS.md has them
    results = (exp / "decode_dev" / "scores" / "RESULTS.md").read_text()
    si_sdri = float(re.search(r"^\| si_sdri \| (-?[\d.]+) ", results, re.M).group(1))
    [index] = front["model-index"]
    assert index["name"] == f"spex_plus-{exp.parent.parent.name}"
    assert {m["type"]: m["value"] for m in index["results"][0]["metrics"]} == {
        "si_sdri": si_sdri, "stoi": float(re.search(r"^\| stoi \| (-?[\d.]+) ", results, re.M).group(1))}
    assert re.search(r"^\| si_sdr \| .* \| .* \| .* \| \d+ \|$", card, re.M)  # the table, mixture column included
    # how it was trained, read from the runner's log and the checkpoints
    assert ("tsekit train --config conf/spex_plus.yaml --train-data data/train-100 --valid-data data/dev "
            "--exp-dir exp/spex_plus --device cpu") in card
    assert "- Training data: `data/train-100`, 32 rows (a mixture and one of its speakers as the target)" in card
    assert "- Steps: stage1: 8 steps in 1 epoch" in card
    assert re.search(r"^- Hardware: train_stage1\.log: .*, \d+ threads$", card, re.M)
    assert re.search(r"^- Run time \(the runner's accounting\): train_stage1\.log: time=\d+", card, re.M)
    assert "- Corpus: noise shaped like speech." in card and "- Trained for one epoch on 16 mixtures." in card
    assert "## Limits" in card and "## How to use" in card
    assert "tsekit extract --model packaged --mix mixture.wav --enroll enroll.wav -o target.wav" in card
    # exporting again gives the same bytes (a killed export, rerun, ends where an unkilled one does)
    before = {path.name: path.read_bytes() for path in packaged.iterdir()}
    again = export_model(exp, packaged)
    assert again.size == sum(map(len, before.values()))
    assert {path.name: path.read_bytes() for path in packaged.iterdir()} == before


def test_extract_and_infer_with_model_equal_the_experiment(trained, tmp_path):
    exp, packaged, data = trained
    mixture, enroll = first_row(data)
    for name, model in (("exp.wav", exp), ("packaged.wav", packaged)):
        proc = run_cli("extract", "--model", model, "--mix", mixture, "--enroll", enroll, "-o", tmp_path / name)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "exp.wav").read_bytes() == (tmp_path / "packaged.wav").read_bytes()
    for name, model in (("decode_exp", exp), ("decode_packaged", packaged)):
        proc = run_cli("infer", "--model", model, "--data", data, "--out", tmp_path / name)
        assert proc.returncode == 0, proc.stderr
    for utt in read_table(data / "wav.scp"):
        assert ((tmp_path / "decode_exp" / "wav" / f"{utt}.wav").read_bytes()
                == (tmp_path / "decode_packaged" / "wav" / f"{utt}.wav").read_bytes())


def test_a_flipped_byte_in_the_weights_is_refused_in_one_line_and_nothing_unpickles(trained, tmp_path, monkeypatch):
    _, packaged, data = trained
    damaged = tmp_path / "damaged"
    shutil.copytree(packaged, damaged)
    weights = bytearray((damaged / "model.safetensors").read_bytes())
    weights[len(weights) // 2] ^= 0x01  # inside a tensor: safetensors alone would load it
    (damaged / "model.safetensors").write_bytes(bytes(weights))
    mixture, enroll = first_row(data)
    proc = run_cli("extract", "--model", damaged, "--mix", mixture, "--enroll", enroll, "-o", tmp_path / "out.wav")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"{damaged / 'model.safetensors'}: sha256 differs from {damaged / 'manifest.json'}" in proc.stderr
    assert not (tmp_path / "out.wav").exists()

    def refuse(*args, **kwargs):
        raise AssertionError("a packaged model was unpickled")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    model, cfg = load_package(packaged)
    assert cfg.model.name == "spex_plus" and not model.training


def test_an_unknown_system_or_a_manifest_that_disagrees_is_one_line(trained, tmp_path):
    _, packaged, data = trained
    mixture, enroll = first_row(data)

    def altered(name: str, config_edit=None, manifest_edit=None) -> Path:
        folder = tmp_path / name
        shutil.copytree(packaged, folder)
        if config_edit:
            (folder / "config.yaml").write_text(config_edit((folder / "config.yaml").read_text()))
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"]["config.yaml"] = file_sha256(folder / "config.yaml")  # re-signed: only the content is odd
        if manifest_edit:
            manifest_edit(manifest)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return folder

    cases = [
        (altered("unknown", lambda text: text.replace("name: spex_plus", "name: spex_9000")),
         "config.yaml: model.name: unknown model 'spex_9000'; registered models: "),
        (altered("other", manifest_edit=lambda m: m.update(system="zspex")),
         "config.yaml: system spex_plus, but"),
        (altered("format", manifest_edit=lambda m: m.update(format="other/1")),
         "manifest.json: not a tsekit packaged model (format 'other/1'"),
        (altered("frozen", manifest_edit=lambda m: m["frozen"].update(whisper={"source": "tiny.en",
                                                                                "sha256": "0" * 64})),
         "manifest.json: frozen parts ['whisper'], but the model has []"),
    ]
    for folder, message in cases:
        proc = run_cli("extract", "--model", folder, "--mix", mixture, "--enroll", enroll, "-o", folder / "out.wav")
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert message in proc.stderr, proc.stderr
        assert not (folder / "out.wav").exists()
    proc = run_cli("extract", "--model", packaged, "--checkpoint", "epoch1.pt", "--mix", mixture, "--enroll", enroll,
                   "-o", tmp_path / "x.wav")
    assert proc.returncode == 1 and "a packaged model has one set of weights" in proc.stderr


def test_a_hub_cache_folder_loads_the_same_offline(trained, tmp_path):
    """The package laid out as huggingface_hub's cache lays out a downloaded repo: blobs named by hash, a snapshot
    of links to them, refs/main naming the snapshot. huggingface_hub itself finds it there, offline."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    _, packaged, data = trained
    repo = tmp_path / "hub" / "models--tsekit--spex-plus-tiny"
    revision = "0123456789abcdef0123456789abcdef01234567"
    for path in packaged.iterdir():
        blob = repo / "blobs" / file_sha256(path)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, blob)
        link = repo / "snapshots" / revision / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    found = huggingface_hub.snapshot_download("tsekit/spex-plus-tiny", cache_dir=tmp_path / "hub",
                                              local_files_only=True)
    assert Path(found) == repo / "snapshots" / revision
    mixture, enroll = first_row(data)
    for name, model in (("a.wav", packaged), ("b.wav", repo), ("c.wav", found)):
        proc = run_cli("extract", "--model", model, "--mix", mixture, "--enroll", enroll, "-o", tmp_path / name)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes() == (tmp_path / "c.wav").read_bytes()


def test_load_model_extracts_arrays_and_tensors_at_any_rate(trained, tmp_path):
    import torchaudio.functional

    exp, packaged, data = trained
    mixture_file, enroll_file = first_row(data)
    proc = run_cli("extract", "--model", packaged, "--mix", mixture_file, "--enroll", enroll_file, "-o",
                   tmp_path / "cli.wav")
    assert proc.returncode == 0, proc.stderr
    cli, _ = sf.read(tmp_path / "cli.wav", dtype="float32")
    mixture, rate = sf.read(mixture_file, dtype="float32")
    enrollment, _ = sf.read(enroll_file, dtype="float32")
    for path in (packaged, exp):
        model = tsekit.load_model(path)
        assert (model.system, model.sample_rate) == ("spex_plus", RATE) and not hasattr(model, "transcribe")
        estimate = model.extract(mixture, enrollment, rate)
        assert isinstance(estimate, np.ndarray) and estimate.dtype == np.float32 and estimate.shape == mixture.shape
        assert np.abs(estimate - cli).max() <= ONE_LSB
    # a tensor at 22.05 kHz comes back a tensor at 22.05 kHz, the mixture's length: the model ran at its own rate
    high = 22050
    mix_high = torchaudio.functional.resample(torch.from_numpy(mixture), rate, high)[:-7]  # not a whole number of
    enroll_high = torchaudio.functional.resample(torch.from_numpy(enrollment), rate, high)  # model-rate samples
    estimate = model.extract(mix_high, enroll_high, high)
    assert isinstance(estimate, torch.Tensor) and estimate.shape == mix_high.shape
    at_rate = model.extract(torchaudio.functional.resample(mix_high, high, rate),
                            torchaudio.functional.resample(enroll_high, high, rate), rate)
    expected = torchaudio.functional.resample(at_rate, rate, high)
    expected = torch.nn.functional.pad(expected, (0, max(0, len(mix_high) - len(expected))))[: len(mix_high)]
    assert torch.allclose(estimate, expected, atol=1e-6)
    assert np.corrcoef(torchaudio.functional.resample(estimate, high, rate)[: len(cli) - 10].numpy(),
                       cli[: len(cli) - 10])[0, 1] > 0.9  # and it is the same speech
    for bad, message in ((np.zeros((2, 100)), "mixture: expected mono audio as a 1-D array, got shape (2, 100)"),
                         (np.full(100, np.nan), "mixture: contains NaN or inf")):
        with pytest.raises(TsekitError, match=re.escape(message)):
            model.extract(bad, enrollment, rate)
    with pytest.raises(TsekitError, match="model spex_plus is enrolled with enroll; given: enroll_neg enroll_pos"):
        model.extract(mixture, {"enroll_pos": enrollment, "enroll_neg": enrollment}, rate)


def test_the_readme_example_runs(trained, tmp_path):
    """The Python lines of README.md's "A trained model on your own recording", run as they are written."""
    _, packaged, data = trained
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## A trained model on your own recording", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    model_dir = re.search(r'load_model\("([^"]+)"\)', code).group(1)
    shutil.copytree(packaged, tmp_path / model_dir)
    mixture, enroll = first_row(data)
    shutil.copyfile(mixture, tmp_path / "mixture.wav")
    shutil.copyfile(enroll, tmp_path / "enrollment.wav")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("extract", "--model", tmp_path / model_dir, "--mix", mixture, "--enroll", enroll, "-o",
                   tmp_path / "cli.wav")
    assert proc.returncode == 0, proc.stderr
    written, rate = sf.read(tmp_path / "target.wav", dtype="float32")
    assert rate == RATE and np.abs(written - sf.read(tmp_path / "cli.wav", dtype="float32")[0]).max() <= ONE_LSB
