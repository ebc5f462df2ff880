"""Inference: loading an experiment, chunked extraction, data-dir runs with resume and jobs, tsekit extract."""

from __future__ import annotations

import functools
import io
import itertools
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from trained import TINY_RATE as RATE
from trained import TINY_SPEX_PLUS as TINY
from trained import train_tiny

from tsekit import TsekitError
from tsekit import checkpoint as ckpt
from tsekit.data.audio import write_audio
from tsekit.data.table import read_table, sorted_keys
from tsekit.infer import extract as extract_module
from tsekit.infer import extract_file, extract_waveform, infer_data_dir
from tsekit.infer.extract import CHUNK_BATCH, chunk_starts, extract_to_file, open_mono
from tsekit.infer.level import LevelStats, mixture_fit_gain, set_output_level
from tsekit.lock import LOCKED_EXIT, writer_lock
from tsekit.models.registry import TSEModel
from tsekit.train.experiment import find_checkpoint, load_experiment

TSEKIT = Path(sys.executable).parent / "tsekit"
ONE_LSB = 1.5 / 32768  # 16-bit files: runs with other thread counts may round a sample the other way


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(experiment root, test data dir): a tiny SpEx+ trained one epoch on a fake Libri2Mix at 8 kHz."""
    root = tmp_path_factory.mktemp("infer")
    _, data = train_tiny(root, TINY, RATE)
    return root / "exp", data / "dev"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(TSEKIT), *map(str, args)], capture_output=True, text=True, env=env)


def read_wav(path: Path) -> np.ndarray:
    samples, rate = sf.read(path, dtype="float32")
    assert rate == RATE
    return samples


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.wav"))}


class HalfGain(TSEModel):
    """A model whose output at a sample depends on that sample only: mixture x 0.5 through a 1x1 conv."""

    needs = frozenset({"enroll"})

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 1, 1, bias=False)
        torch.nn.init.constant_(self.conv.weight, 0.5)

    def forward(self, batch):
        return {"estimate": self.conv(batch["mixture"].unsqueeze(1)).squeeze(1)}


def test_infer_writes_every_utterance_then_resumes(trained, tmp_path):
    exp, data = trained
    out = tmp_path / "decode"
    proc = run_cli("infer", "--exp-dir", exp, "--data", data, "--out", out)
    assert proc.returncode == 0, proc.stderr
    mixtures = read_table(data / "wav.scp")
    scp = read_table(out / "wav.scp")
    total = len(mixtures)
    assert list(scp) == sorted_keys(mixtures) and total == 32
    for utt, entry in scp.items():
        assert Path(entry) == (out / "wav" / f"{utt}.wav").resolve()
        assert len(read_wav(Path(entry))) == sf.info(mixtures[utt]).frames
    assert f"{total} of {total} utterances extracted" in proc.stderr and "averaged.pt" in proc.stderr

    before = mtimes(out / "wav")
    again = infer_data_dir(exp, data, out)
    assert (again.extracted, again.skipped, again.wrote_scp) == (0, total, True)
    assert mtimes(out / "wav") == before
    victim = out / "wav" / f"{sorted(scp)[3]}.wav"
    victim.unlink()
    third = infer_data_dir(exp, data, out)
    assert (third.extracted, third.skipped) == (1, total - 1) and victim.is_file()
    after = mtimes(out / "wav")
    assert {k: v for k, v in after.items() if k != victim.name} == {k: v for k, v in before.items()
                                                                      if k != victim.name}


def test_resume_redoes_a_wav_cut_short_or_not_written_by_tsekit(trained, tmp_path):
    exp, data = trained
    out = tmp_path / "decode"
    first = infer_data_dir(exp, data, out, nj=1)
    utts = sorted_keys(read_table(data / "wav.scp"))
    truncated, foreign = out / "wav" / f"{utts[2]}.wav", out / "wav" / f"{utts[7]}.wav"
    expected = {path: read_wav(path) for path in (truncated, foreign)}
    whole = truncated.read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])  # a copy that stopped half way: its header still reads
    assert 0 < sf.info(truncated).frames < len(expected[truncated])
    sf.write(foreign, np.zeros(100), RATE)  # a wav, but not the estimate of this mixture
    again = infer_data_dir(exp, data, out, nj=1)
    assert (again.extracted, again.skipped) == (2, first.extracted - 2)
    for path, samples in expected.items():
        assert np.abs(read_wav(path) - samples).max() <= ONE_LSB


def test_extract_writes_the_format_its_suffix_names_and_refuses_others_before_the_work(trained, tmp_path):
    exp, data = trained
    utt = sorted_keys(read_table(data / "wav.scp"))[5]
    inputs = (read_table(data / "wav.scp")[utt], read_table(data / "enroll.scp")[utt])
    for name, audio_format in (("x.wav", "WAV"), ("x.flac", "FLAC"), ("x.FLAC", "FLAC")):
        extract_file(exp, *inputs, tmp_path / name)
        assert sf.info(tmp_path / name).format == audio_format
    # 16-bit both; libsndfile rounds floats to FLAC's integers its own way
    assert np.abs(read_wav(tmp_path / "x.flac") - read_wav(tmp_path / "x.wav")).max() <= ONE_LSB
    for name in ("x.mp3", "x.txt", "x.raw", "x"):
        with pytest.raises(TsekitError) as err:  # an experiment that is not there: the name is refused first
            extract_file(tmp_path / "no_experiment", *inputs, tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}: cannot write audio ") and ".flac" in str(err.value)
        assert not (tmp_path / name).exists()


def test_jobs_give_the_files_of_one_run_and_the_last_writes_wav_scp(trained, tmp_path):
    exp, data = trained
    whole = infer_data_dir(exp, data, tmp_path / "whole")
    assert whole.extracted == 32
    first = infer_data_dir(exp, data, tmp_path / "jobs", nj=2, job=1)
    assert (first.mine, first.extracted, first.wrote_scp) == (16, 16, False)
    assert not (tmp_path / "jobs" / "wav.scp").exists()
    utts = sorted_keys(read_table(data / "wav.scp"))
    assert sorted(p.stem for p in (tmp_path / "jobs" / "wav").glob("*.wav")) == utts[:16]
    proc = run_cli("infer", "--exp-dir", exp, "--data", data, "--out", tmp_path / "jobs", "--job", 2, "--nj", 2)
    assert proc.returncode == 0, proc.stderr
    assert "job 2/2: 16 of 16 utterances extracted" in proc.stderr
    scp = read_table(tmp_path / "jobs" / "wav.scp")
    assert list(scp) == utts
    for utt in utts:
        a, b = read_wav(tmp_path / "whole" / "wav" / f"{utt}.wav"), read_wav(Path(scp[utt]))
        assert a.shape == b.shape and np.abs(a - b).max() <= ONE_LSB


def test_extract_one_file_equals_infer(trained, tmp_path):
    exp, data = trained
    utt = sorted_keys(read_table(data / "wav.scp"))[5]
    infer_data_dir(exp, data, tmp_path / "decode")
    out = tmp_path / "one.wav"
    proc = run_cli("extract", "--exp-dir", exp / "stage1", "--mix", read_table(data / "wav.scp")[utt],
                   "--enroll", read_table(data / "enroll.scp")[utt], "-o", out)
    assert proc.returncode == 0, proc.stderr
    a, b = read_wav(out), read_wav(tmp_path / "decode" / "wav" / f"{utt}.wav")
    assert a.shape == b.shape and np.abs(a - b).max() <= ONE_LSB
    other = sorted_keys(read_table(data / "wav.scp"))[6]  # and a different utterance gives different speech
    assert not np.allclose(a[:1000], read_wav(tmp_path / "decode" / "wav" / f"{other}.wav")[:1000])


def test_exp_root_or_stage_folder_and_checkpoint_choice(trained, tmp_path):
    exp, _ = trained
    stage1 = exp / "stage1"
    assert find_checkpoint(exp) == find_checkpoint(stage1) == stage1 / "checkpoints" / ckpt.AVERAGED
    model, cfg = load_experiment(exp)
    same, _ = load_experiment(stage1)
    assert not model.training and cfg.model.name == "spex_plus" and cfg.data.sample_rate == RATE
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values(),
                                                 strict=True))
    saved = ckpt.load_checkpoint(stage1 / "checkpoints" / ckpt.AVERAGED)["model"]
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)

    copy = tmp_path / "exp"
    shutil.copytree(exp, copy)
    (copy / "stage2" / "checkpoints").mkdir(parents=True)  # a stage 2 without checkpoints is not trained
    assert find_checkpoint(copy) == copy / "stage1" / "checkpoints" / ckpt.AVERAGED
    shutil.copy(copy / "stage1" / "checkpoints" / ckpt.LATEST, copy / "stage2" / "checkpoints" / ckpt.LATEST)
    assert find_checkpoint(copy) == copy / "stage2" / "checkpoints" / ckpt.LATEST
    folder = copy / "stage1" / "checkpoints"
    (folder / ckpt.AVERAGED).unlink()
    best = ckpt.read_best(folder)[0][1]
    assert find_checkpoint(copy / "stage1") == folder / best
    assert find_checkpoint(copy / "stage1", checkpoint=ckpt.LATEST) == folder / ckpt.LATEST
    (folder / best).unlink()
    assert find_checkpoint(copy / "stage1") == folder / ckpt.LATEST
    (folder / ckpt.LATEST).unlink()
    with pytest.raises(TsekitError, match="no checkpoint"):
        find_checkpoint(copy / "stage1")
    with pytest.raises(TsekitError, match="no such experiment directory or packaged model"):
        find_checkpoint(tmp_path / "nothing")


def test_corrupt_checkpoint_is_a_one_line_error(trained, tmp_path):
    exp, data = trained
    copy = tmp_path / "exp"
    shutil.copytree(exp, copy)
    averaged = copy / "stage1" / "checkpoints" / ckpt.AVERAGED
    averaged.write_bytes(averaged.read_bytes()[:300])
    proc = run_cli("infer", "--exp-dir", copy, "--data", data, "--out", tmp_path / "out")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tsekit: error: {averaged}: not a readable checkpoint")
    assert not (tmp_path / "out").exists()
    proc = run_cli("extract", "--exp-dir", tmp_path / "missing", "--mix", "m.wav", "--enroll", "e.wav", "-o", "o.wav")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"tsekit: error: {tmp_path / 'missing'}: no such experiment "
                                                "directory or packaged model"]


@pytest.mark.parametrize("param, message", [
    ("kernel_size=abc", "--param: model.params.kernel_size: expected int, got str 'abc'"),
    ("kernel_size=[3", "--param 'kernel_size=[3': value is not valid YAML: "),
    ('kernel_size=!!python/object/apply:os.system ["true"]',
     """--param 'kernel_size=!!python/object/apply:os.system ["true"]': value is not valid YAML: could not """
     "determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
], ids=["type", "yaml", "python-tag"])
def test_a_param_is_checked_as_a_training_override(trained, tmp_path, param, message):
    exp, data = trained
    proc = run_cli("infer", "--exp-dir", exp, "--data", data, "--out", tmp_path / "out", "--param", param)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"tsekit: error: {message}")
    assert not (tmp_path / "out").exists()


def test_a_param_value_is_checked_against_the_constructor(trained):
    exp, _ = trained
    with pytest.raises(TsekitError, match=r"^--param: model.params.short_window_ms: expected float, got str 'x'$"):
        load_experiment(exp, model_params={"short_window_ms": "x"})
    with pytest.raises(TsekitError, match=r"^--param: unknown key 'model.params.steps'; valid parameters of model "
                                          r"spex_plus: sample_rate, "):
        load_experiment(exp, model_params={"steps": 4})
    _, cfg = load_experiment(exp, model_params={"kernel_size": 3})  # the trained value: the weights still fit
    assert cfg.model.params["kernel_size"] == 3
    # another depth: the weights do not fit, said in one short line (torch's own message lists every key)
    params = ckpt.load_checkpoint(find_checkpoint(exp))["config"]["model"]["params"]
    misfit = r": weights do not fit model spex_plus as configured \(\d+ unexpected: "
    with pytest.raises(TsekitError, match=misfit) as err:
        load_experiment(exp, model_params={"num_blocks": params["num_blocks"] - 1})
    assert len(str(err.value)) < 400 and "\n" not in str(err.value)


def test_sample_rate_mismatch_is_an_error(trained, tmp_path):
    exp, data = trained
    wrong = tmp_path / "data16k"
    wrong.mkdir()
    audio = (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32)
    sf.write(tmp_path / "mix.wav", audio, 16000)
    sf.write(tmp_path / "enroll.wav", audio, 16000)
    (wrong / "wav.scp").write_text(f"u1 {tmp_path / 'mix.wav'}\n")
    (wrong / "enroll.scp").write_text(f"u1 {tmp_path / 'enroll.wav'}\n")
    with pytest.raises(TsekitError, match="wav.scp: u1: .*16000 Hz audio, expected 8000 Hz"):
        infer_data_dir(exp, wrong, tmp_path / "out")
    assert not (tmp_path / "out" / "wav").exists()
    proc = run_cli("extract", "--exp-dir", exp, "--mix", tmp_path / "mix.wav", "--enroll", tmp_path / "enroll.wav",
                   "-o", tmp_path / "o.wav")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "16000 Hz audio, but the model was trained at 8000 Hz" in proc.stderr


def test_chunk_starts_cover_the_input_with_full_chunks():
    assert chunk_starts(100, 100, 10) == [0]
    assert chunk_starts(250, 100, 20) == [0, 80, 150]
    assert chunk_starts(260, 100, 20) == [0, 80, 160]


@pytest.mark.parametrize("length", [8000 * 10, 8000 * 10 + 123, 8000 * 3 + 1])
def test_chunked_equals_whole_for_a_position_independent_model(length):
    model = HalfGain().eval()
    mixture = np.random.default_rng(length).normal(0, 0.2, length).astype(np.float32)
    enroll = np.zeros(800, dtype=np.float32)
    whole = extract_waveform(model, mixture, enroll, RATE, chunk_seconds=None)
    chunked = extract_waveform(model, mixture, enroll, RATE, chunk_seconds=1.0, overlap_seconds=0.3)
    assert whole.shape == chunked.shape == (length,)
    np.testing.assert_allclose(whole, 0.5 * mixture, atol=1e-7)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_chunked_spex_plus_agrees_with_whole_inside_chunks(trained):
    exp, data = trained
    model, _ = load_experiment(exp)
    mixtures = [sf.read(e, dtype="float32")[0] for e in read_table(data / "wav.scp").values()]
    mixture = np.concatenate(mixtures[:10])  # several seconds
    enroll = sf.read(next(iter(read_table(data / "enroll.scp").values())), dtype="float32")[0]
    chunk, overlap = int(1.6 * RATE), int(0.4 * RATE)
    whole = extract_waveform(model, mixture, enroll, RATE, chunk_seconds=0)
    chunked = extract_waveform(model, mixture, enroll, RATE, chunk_seconds=1.6, overlap_seconds=0.4)
    assert whole.shape == chunked.shape == mixture.shape
    starts = chunk_starts(len(mixture), chunk, overlap)
    assert len(starts) >= 3
    inside = np.zeros(len(mixture), dtype=bool)
    for start in starts:  # the middle half of each chunk, away from its edges
        inside[start + chunk // 4 : start + 3 * chunk // 4] = True
    error = whole[inside] - chunked[inside]
    snr = 10 * np.log10(np.sum(whole[inside] ** 2) / np.sum(error ** 2))
    assert snr > 20, snr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixture_fit_recovers_the_target_level(seed):
    """Estimate = the target at an unknown scale; the mixture = target + a louder uncorrelated interferer."""
    rng = np.random.default_rng(seed)
    target = rng.normal(0, 0.1, 16000) * np.sin(np.linspace(0, 20, 16000))  # speech-like: the level varies
    interferer = rng.normal(0, 0.2, 16000)
    interferer -= np.dot(interferer, target) / np.dot(target, target) * target  # exactly uncorrelated
    mixture = target + interferer
    scale = 10 ** rng.uniform(-2, 1)
    estimate = scale * target
    np.testing.assert_allclose(mixture_fit_gain(estimate, mixture), 1 / scale, rtol=1e-9)
    fitted = set_output_level(estimate, mixture, "mixture_fit")
    assert fitted.dtype == np.float32
    level_db = 10 * np.log10(np.sum(fitted.astype(np.float64) ** 2) / np.sum(target ** 2))
    assert abs(level_db) < 1e-4, level_db
    np.testing.assert_allclose(set_output_level(estimate, mixture, "none"), estimate, rtol=1e-6)
    peaked = set_output_level(estimate, mixture, "peak", peak=0.5)
    assert np.max(np.abs(peaked)) == pytest.approx(0.5, rel=1e-6)
    assert mixture_fit_gain(np.zeros(100), mixture[:100]) == 1.0  # silence stays silent, no division by zero


class Cube(TSEModel):
    """A position-independent, level-dependent model: the mixture cubed, so chunks of different level would get
    different least-squares gains."""

    needs = frozenset({"enroll"})

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        return {"estimate": batch["mixture"] ** 3}


def test_chunked_inference_applies_one_gain_per_utterance():
    model = Cube().eval()
    rng = np.random.default_rng(0)
    length = 8000 * 6
    envelope = np.repeat([0.05, 0.4, 0.1], length // 3)
    mixture = (rng.normal(0, 1, length) * envelope).astype(np.float32)
    enroll = np.zeros(800, dtype=np.float32)
    options = {"chunk_seconds": 1.0, "overlap_seconds": 0.25}
    raw = extract_waveform(model, mixture, enroll, RATE, **options, output_level="none")
    fitted = extract_waveform(model, mixture, enroll, RATE, **options, output_level="mixture_fit")
    # per-chunk gains would differ by orders of magnitude here, so one gain per chunk cannot pass this
    chunk_gains = [mixture_fit_gain(raw[s : s + 8000], mixture[s : s + 8000]) for s in range(0, length, 8000)]
    assert max(chunk_gains) / min(chunk_gains) > 10
    gain = mixture_fit_gain(raw, mixture)
    np.testing.assert_allclose(fitted, gain * raw, rtol=1e-5, atol=1e-9)


def test_infer_and_extract_set_the_experiment_output_level(trained, tmp_path):
    """The SI-SDR-trained experiment records mixture_fit; --output-level none gives the model's raw level."""
    exp, data = trained
    _, cfg = load_experiment(exp)
    assert cfg.infer.output_level == "mixture_fit"
    fitted = run_cli("infer", "--exp-dir", exp, "--data", data, "--out", tmp_path / "fit")
    raw = run_cli("infer", "--exp-dir", exp, "--data", data, "--out", tmp_path / "raw", "--output-level", "none")
    assert fitted.returncode == raw.returncode == 0, fitted.stderr + raw.stderr
    assert "output level mixture_fit" in fitted.stderr and "output level none" in raw.stderr
    mixtures = read_table(data / "wav.scp")
    for utt in sorted_keys(mixtures)[:4]:
        a, b = read_wav(tmp_path / "fit" / "wav" / f"{utt}.wav"), read_wav(tmp_path / "raw" / "wav" / f"{utt}.wav")
        mixture = read_wav(Path(mixtures[utt]))
        gain = mixture_fit_gain(b, mixture)
        assert abs(np.log10(abs(gain))) > 0.05  # the raw level is off, so the test can fail
        np.testing.assert_allclose(a, np.clip(gain * b, -1, 1), atol=ONE_LSB * (1 + abs(gain)))
    utt = sorted_keys(mixtures)[0]
    proc = run_cli("extract", "--exp-dir", exp, "--mix", mixtures[utt], "--enroll",
                   read_table(data / "enroll.scp")[utt], "-o", tmp_path / "peak.wav", "--output-level", "peak")
    assert proc.returncode == 0, proc.stderr
    assert np.max(np.abs(read_wav(tmp_path / "peak.wav"))) == pytest.approx(cfg.infer.peak, abs=2 * ONE_LSB)


def test_a_second_writer_of_the_same_output_shard_is_refused_before_writing(trained, tmp_path):
    exp, data = trained
    out = tmp_path / "decode"
    with writer_lock(out, "job1"):  # this process is extracting shard 1 into OUT
        refused = run_cli("infer", "--exp-dir", exp, "--data", data, "--out", out, "--job", "1", "--nj", "2")
        other = run_cli("infer", "--exp-dir", exp, "--data", data, "--out", out, "--job", "2", "--nj", "2")
    assert refused.returncode == LOCKED_EXIT and len(refused.stderr.strip().splitlines()) == 1
    assert f"{out} (job1) is being written by another process (host " in refused.stderr
    assert f"PID {os.getpid()}," in refused.stderr
    assert other.returncode == 0, other.stderr  # the other shard has a lock of its own
    written = {p.name for p in (out / "wav").glob("*.wav")}
    assert len(written) == 16 and not (out / "wav.scp").exists()  # shard 1 was not touched


def test_a_silent_or_short_enrollment_is_warned_about_once_per_clip(trained, tmp_path, capsys):
    exp, data = trained
    utts = sorted_keys(read_table(data / "wav.scp"))[:4]
    noise = np.random.default_rng(0).standard_normal(RATE).astype(np.float32)
    quiet, silent, short = tmp_path / "quiet.wav", tmp_path / "silent.wav", tmp_path / "short.wav"
    sf.write(quiet, 10 ** (-50 / 20) * noise, RATE)  # -50 dBFS: quiet, not silent
    sf.write(silent, np.zeros(RATE, dtype=np.float32), RATE)
    sf.write(short, 0.1 * noise[: int(0.3 * RATE)], RATE)
    doubtful = tmp_path / "data"
    doubtful.mkdir()
    (doubtful / "wav.scp").write_text("".join(f"{u} {read_table(data / 'wav.scp')[u]}\n" for u in utts))
    (doubtful / "enroll.scp").write_text(f"{utts[0]} {quiet}\n{utts[1]} {silent}\n{utts[2]} {short}\n"
                                         f"{utts[3]} {silent}\n")
    capsys.readouterr()
    assert infer_data_dir(exp, doubtful, tmp_path / "out").extracted == 4
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tsekit: warning:")]
    scp = doubtful / "enroll.scp"
    assert warnings == [
        f"tsekit: warning: {scp}: {utts[1]}: {silent}: enrollment is silent (RMS -inf dBFS, below -60 dBFS): "
        "the system may extract the wrong speaker",
        f"tsekit: warning: {scp}: {utts[2]}: {short}: enrollment is shorter than 0.5 s (0.30 s): "
        "the system may extract the wrong speaker"]
    proc = run_cli("extract", "--exp-dir", exp, "--mix", read_table(data / "wav.scp")[utts[0]], "--enroll", silent,
                   "-o", tmp_path / "one.wav")
    assert proc.returncode == 0 and (tmp_path / "one.wav").is_file(), proc.stderr
    assert f"tsekit: warning: --enroll {silent}: enrollment is silent (RMS -inf dBFS" in proc.stderr


# --- recordings of any length: streamed through files in blocks (extract_to_file) ---


def stream(model: TSEModel, mixture: Path, out: Path, enroll: np.ndarray | None = None, **options) -> None:
    """``extract_to_file`` as ``tsekit extract`` calls it: the mixture read in blocks of ``BLOCK_FRAMES``."""
    with open_mono(str(mixture), "--mix", RATE) as blocks:
        extract_to_file(model, blocks, {"enroll": np.zeros(800, np.float32) if enroll is None else enroll}, out,
                        **options)


def long_mixture(path: Path, seconds: float, seed: int = 0) -> np.ndarray:
    """A speech-like mixture whose level changes every second (so per-piece gains would differ), written to
    ``path`` as 16-bit; returns what reading it gives."""
    rng = np.random.default_rng(seed)
    length = int(seconds * RATE)
    envelope = np.repeat(rng.uniform(0.02, 0.5, length // RATE + 1), RATE)[:length]
    sf.write(path, (rng.normal(0, 1, length) * envelope).clip(-1, 1), RATE, subtype="PCM_16")
    return read_wav(path)


def test_a_short_file_streamed_is_the_in_memory_output_byte_for_byte(trained, tmp_path):
    """tsekit extract on a file of one batch of chunks writes exactly what extract_waveform + write_audio wrote
    before streaming; on several batches the samples agree to the last bit of the level's gain."""
    exp, data = trained
    model, cfg = load_experiment(exp)
    mixtures = [read_wav(Path(e)) for e in sorted(read_table(data / "wav.scp").values())]
    enroll_path = sorted(read_table(data / "enroll.scp").values())[0]
    enroll = read_wav(Path(enroll_path))
    options = {"chunk_seconds": 0.4, "overlap_seconds": 0.1, "output_level": "mixture_fit"}
    chunk, hop = int(0.4 * RATE), int(0.3 * RATE)
    short, long = np.concatenate(mixtures[:3]), np.concatenate(mixtures)
    assert 1 < len(chunk_starts(len(short), chunk, chunk - hop)) <= CHUNK_BATCH  # chunked, in one batch
    assert len(chunk_starts(len(long), chunk, chunk - hop)) > 2 * CHUNK_BATCH  # three batches or more
    for name, mixture in (("short", short), ("long", long)):
        sf.write(tmp_path / f"{name}.wav", mixture, RATE, subtype="FLOAT")
        extract_file(exp, str(tmp_path / f"{name}.wav"), enroll_path, tmp_path / f"{name}_streamed.wav",
                     chunk_seconds=options["chunk_seconds"], overlap_seconds=options["overlap_seconds"],
                     output_level="mixture_fit")
        write_audio(tmp_path / f"{name}_memory.wav", extract_waveform(model, mixture, enroll, RATE, **options), RATE)
    assert (tmp_path / "short_streamed.wav").read_bytes() == (tmp_path / "short_memory.wav").read_bytes()
    streamed, memory = read_wav(tmp_path / "long_streamed.wav"), read_wav(tmp_path / "long_memory.wav")
    assert np.max(np.abs(streamed - memory)) <= ONE_LSB
    assert np.mean(streamed == memory) > 0.999


@pytest.mark.parametrize("output_level", ["mixture_fit", "peak", "none"])
def test_blocks_of_any_size_give_the_same_file_and_one_gain_for_the_whole(tmp_path, monkeypatch, output_level):
    model = Cube().eval()  # level-dependent: a gain per block or per piece would show
    mixture = long_mixture(tmp_path / "mix.wav", 40)
    options = {"chunk_seconds": 1.0, "overlap_seconds": 0.25, "output_level": output_level, "peak": 0.5}
    written = []
    for block in (1000, 7919, 1 << 20):  # smaller than a chunk, between, the whole file
        monkeypatch.setattr(extract_module, "BLOCK_FRAMES", block)
        stream(model, tmp_path / "mix.wav", tmp_path / f"out{block}.wav", **options)
        written.append((tmp_path / f"out{block}.wav").read_bytes())
    assert written[0] == written[1] == written[2]
    assert not list(tmp_path.glob(".*.tmp"))  # the float64 temporary is gone
    raw = extract_waveform(model, mixture, np.zeros(800, np.float32), RATE, **{**options, "output_level": "none"})
    gain = {"mixture_fit": mixture_fit_gain(raw, mixture), "peak": 0.5 / np.max(np.abs(raw)), "none": 1.0}
    assert output_level == "none" or abs(np.log10(gain[output_level])) > 0.1  # the level is off: it can fail
    np.testing.assert_allclose(read_wav(tmp_path / "out1000.wav"), np.clip(gain[output_level] * raw, -1, 1),
                               atol=ONE_LSB)


def test_level_statistics_summed_over_pieces_give_the_whole_signal_gain():
    rng = np.random.default_rng(3)
    estimate, mixture = rng.normal(0, 0.1, 100_000), rng.normal(0, 0.3, 100_000)
    cuts = [0, 17, 5000, 5001, 64_000, 100_000]
    for level in ("mixture_fit", "peak"):
        stats = LevelStats(level, peak=0.7)
        for a, b in itertools.pairwise(cuts):
            stats.add(estimate[a:b], mixture[a:b])
        whole = mixture_fit_gain(estimate, mixture) if level == "mixture_fit" else 0.7 / np.max(np.abs(estimate))
        assert stats.gain() == pytest.approx(whole, rel=1e-12)
    with pytest.raises(TsekitError, match="unknown output level 'loud'"):
        LevelStats("loud")


def traced_peaks(runs: dict) -> dict:
    """The peak traced memory (numpy's allocations included) of each call, by key."""
    peaks = {}
    tracemalloc.start()
    try:
        for key, run in runs.items():
            tracemalloc.reset_peak()
            run()
            peaks[key] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peaks


def test_memory_stays_one_batch_of_chunks_whatever_the_length(tmp_path, monkeypatch):
    """2.5 and 10 minutes streamed: every read asks for one block, and the peak numpy memory (tracemalloc) is the
    same for both, a fraction of the signal; extracting in memory holds several copies of the signal."""
    model = HalfGain().eval()
    mixtures = {minutes: long_mixture(tmp_path / f"{minutes}.wav", 60 * minutes) for minutes in (2.5, 10)}
    monkeypatch.setattr(extract_module, "BLOCK_FRAMES", 4000)
    reads = []
    real_read = sf.SoundFile.read

    def read(self, frames=-1, *args, **kwargs):
        reads.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", read)
    options = {"chunk_seconds": 1.0, "overlap_seconds": 0.25, "output_level": "mixture_fit"}
    mixture = mixtures[10]
    peaks = traced_peaks({
        **{minutes: functools.partial(stream, model, tmp_path / f"{minutes}.wav", tmp_path / f"out{minutes}.wav",
                                      **options) for minutes in mixtures},
        "in_memory": functools.partial(extract_waveform, model, mixture, np.zeros(800, np.float32), RATE, **options)})
    in_memory = peaks["in_memory"]
    assert set(reads) == {4000} and len(reads) >= len(mixture) // 4000
    assert peaks[10] < 1.1 * peaks[2.5] and peaks[10] < mixture.nbytes / 5, (peaks, mixture.nbytes)
    assert in_memory > 3 * mixture.nbytes  # what the test would catch: the whole signal held
    np.testing.assert_allclose(read_wav(tmp_path / "out10.wav"), np.clip(0.5 * mixture * mixture_fit_gain(
        0.5 * mixture, mixture), -1, 1), atol=ONE_LSB)


def test_nan_late_in_a_long_file_leaves_nothing_written(tmp_path, monkeypatch):
    mixture = np.random.default_rng(0).normal(0, 0.1, 30 * RATE).astype(np.float32)
    mixture[-100] = np.nan
    sf.write(tmp_path / "mix.wav", mixture, RATE, subtype="FLOAT")
    monkeypatch.setattr(extract_module, "BLOCK_FRAMES", 4000)
    with pytest.raises(TsekitError) as err:
        stream(HalfGain().eval(), tmp_path / "mix.wav", tmp_path / "out" / "target.wav", chunk_seconds=1.0)
    assert str(err.value) == f"--mix: {tmp_path / 'mix.wav'}: audio contains NaN or inf"
    assert list((tmp_path / "out").iterdir()) == []  # neither the output nor a temporary


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so tqdm (disable=None) draws its bar."""

    def isatty(self) -> bool:
        return True


def test_progress_bar_counts_seconds_of_audio_with_the_real_time_factor(trained, tmp_path, monkeypatch):
    exp, data = trained
    mixtures, enrolls = read_table(data / "wav.scp"), read_table(data / "enroll.scp")
    utt = sorted_keys(mixtures)[0]
    seconds = sf.info(mixtures[utt]).duration
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    extract_file(exp, mixtures[utt], enrolls[utt], tmp_path / "one.wav")
    bar = terminal.getvalue()
    assert "100%" in bar and f"{seconds:.1f}/{seconds:.1f} s of audio" in bar and "RTF " in bar, bar
    terminal.seek(0)
    terminal.truncate()
    infer_data_dir(exp, data, tmp_path / "decode")
    total = sum(sf.info(e).duration for e in mixtures.values())
    assert f"{total:.1f}/{total:.1f} s of audio" in terminal.getvalue()


@pytest.fixture(scope="module")
def conversations(tmp_path_factory) -> Path:
    """A data dir of two TTS conversations at the tiny model's rate (two voices taking turns, 0.8 s apart), each
    enrolled with another sentence of its first voice: speech the Silero VAD finds (which sines are not)."""
    from conftest import require_vad

    from tsekit.corpora.tts import BASE_VOICES, Speaker, missing_packages, synthesize

    require_vad()
    if missing_packages():
        pytest.skip("TTS voices missing (tools/system_packages.sh)")
    root = tmp_path_factory.mktemp("conversations")
    voices = {v.label: v for v in BASE_VOICES}
    pairs = {"convA": ("flite:slt", "espeak:en-us+m3"), "convB": ("flite:awb", "espeak:en-029+f2")}
    lines = ["Please open the window before you leave.", "The streets were empty and cold.",
             "We found the old map under the letters."]
    gap = np.zeros(int(0.8 * RATE), dtype=np.float32)
    wav, enroll = {}, {}
    for rec, (first, second) in pairs.items():
        speakers = [Speaker("1", voices[first], 0, 1.0), Speaker("2", voices[second], 0, 1.0)]
        audio = np.concatenate([part for i, text in enumerate(lines)
                                for part in (gap, 0.5 * synthesize(text, speakers[i % 2], RATE))] + [gap])
        sf.write(root / f"{rec}.wav", audio, RATE, subtype="PCM_16")
        sf.write(root / f"{rec}_enroll.wav", synthesize("A quiet morning is the best time to read.", speakers[0],
                                                        RATE), RATE, subtype="PCM_16")
        wav[rec], enroll[rec] = str(root / f"{rec}.wav"), str(root / f"{rec}_enroll.wav")
    data = root / "data"
    data.mkdir()
    for name, table in (("wav.scp", wav), ("enroll.scp", enroll), ("utt2spk", {u: "1" for u in wav})):
        (data / name).write_text("".join(f"{k} {v}\n" for k, v in sorted(table.items())))
    return data


def rttm_spans(path: Path) -> list[tuple[str, int, int]]:
    """(recording, start, end in samples) of an RTTM's lines."""
    spans = []
    for line in path.read_text().splitlines():
        fields = line.split()
        assert fields[0] == "SPEAKER" and fields[7] == "target" and len(fields) == 10, line
        onset, duration = float(fields[3]), float(fields[4])
        spans.append((fields[1], round(onset * RATE), round((onset + duration) * RATE)))
    return spans


# thresholds below any score (every speech segment kept) and one that keeps what it keeps (the tiny model's
# output is no evidence either way): the RTTM and the gating must agree in both
# (the speaker decision below every score only in the slow run: a Resemblyzer embedding per frame is slow on CI's CPU)
@pytest.mark.parametrize("presence, threshold", [
    ("energy", "-100"), pytest.param("speaker", "-1", marks=pytest.mark.slow), ("speaker", None)])
def test_extract_segments_writes_where_the_target_speaks_and_silences_the_rest(trained, conversations, tmp_path,
                                                                               presence, threshold):
    from tsekit.pretrained.vad import SileroVad

    exp, _ = trained
    mixture, enroll = read_table(conversations / "wav.scp")["convA"], read_table(conversations / "enroll.scp")["convA"]
    plain, gated, rttm = tmp_path / "plain.wav", tmp_path / "talk.wav", tmp_path / "where.rttm"
    assert run_cli("extract", "--exp-dir", exp, "--mix", mixture, "--enroll", enroll, "-o", plain).returncode == 0
    proc = run_cli("extract", "--exp-dir", exp, "--mix", mixture, "--enroll", enroll, "-o", gated,
                   "--segments", rttm, "--presence", presence,
                   *(["--presence-threshold", threshold] if threshold else []))
    assert proc.returncode == 0, proc.stderr
    assert f"where the target speaks: {rttm}" in proc.stderr
    spans = rttm_spans(rttm)
    assert {rec for rec, _, _ in spans} <= {"talk"}  # the recording id is the output's stem
    raw, out = read_wav(plain), read_wav(gated)
    speech = SileroVad().segments([sf.read(mixture, dtype="float32")[0]], RATE)
    assert len(speech) == 3  # the three turns
    if threshold:  # below any score: every speech segment is kept
        assert len(spans) == 3
    ramp, ms = RATE // 100, RATE // 1000  # the 10 ms fade; the RTTM's times are rounded to the millisecond
    kept = np.zeros(len(raw), dtype=bool)
    for _, start, end in spans:
        assert any(s - ms <= start and end <= e + ms for s, e in speech)  # a kept span is a speech segment
        inside = slice(start + ms, end - ms)
        assert np.abs(out[inside] - raw[inside]).max() <= ONE_LSB  # kept as extracted
        kept[max(0, start - ramp - ms) : end + ramp + ms] = True
    assert not out[~kept].any() and raw[~kept].any()  # silence everywhere else, where the model wrote something


def test_infer_segments_writes_each_rows_rttm_then_out_rttm_and_resumes(trained, conversations, tmp_path):
    exp, _ = trained
    out = tmp_path / "decode"
    proc = run_cli("infer", "--exp-dir", exp, "--data", conversations, "--out", out, "--segments",
                   "--presence", "energy", "--presence-threshold", "-100")
    assert proc.returncode == 0, proc.stderr
    rows = {utt: (out / "presence" / f"{utt}.rttm").read_text() for utt in ("convA", "convB")}
    assert (out / "rttm").read_text() == rows["convA"] + rows["convB"]
    assert {rec for rec, _, _ in rttm_spans(out / "rttm")} == {"convA", "convB"}  # each row's utterance id
    # a row whose RTTM is missing is not done: it is extracted again, the other is skipped
    (out / "presence" / "convB.rttm").unlink()
    (out / "rttm").unlink()
    again = infer_data_dir(exp, conversations, out, segments=True, presence="energy", presence_threshold=-100)
    assert (again.extracted, again.skipped) == (1, 1)
    assert (out / "rttm").read_text() == rows["convA"] + rows["convB"]


@pytest.mark.parametrize("presence", ["energy", "speaker"])
def test_segments_streamed_are_the_in_memory_decision_and_output_byte_for_byte(trained, conversations, tmp_path,
                                                                              monkeypatch, presence):
    """tsekit extract --segments, reading in blocks that cut the decision's frames anywhere, writes the RTTM and
    the gated file that the decision on the whole arrays in memory gives (one piece: chunk_seconds 0)."""
    from tsekit.infer.presence import PresenceGate, PresenceSettings

    exp, _ = trained
    model, _ = load_experiment(exp)
    mixture, enroll = read_table(conversations / "wav.scp")["convA"], read_table(conversations / "enroll.scp")["convA"]
    monkeypatch.setattr(extract_module, "BLOCK_FRAMES", 999)
    extract_file(exp, mixture, enroll, tmp_path / "streamed.wav", chunk_seconds=0, output_level="mixture_fit",
                 segments=tmp_path / "streamed.rttm", presence=presence)
    samples, enrollment = read_wav(Path(mixture)), read_wav(Path(enroll))
    output = extract_waveform(model, samples, enrollment, RATE, chunk_seconds=0, output_level="mixture_fit")
    decision = PresenceGate(PresenceSettings(presence))(output, samples, enrollment, RATE, tmp_path / "memory.rttm",
                                                        "streamed")
    write_audio(tmp_path / "memory.wav", decision.gate(output), RATE)
    assert (tmp_path / "streamed.wav").read_bytes() == (tmp_path / "memory.wav").read_bytes()
    assert (tmp_path / "streamed.rttm").read_text() == (tmp_path / "memory.rttm").read_text()
    assert np.isfinite(decision.scores).sum() > 10 and decision.segments  # something was decided


def test_memory_with_segments_stays_bounded_whatever_the_length(tmp_path, monkeypatch):
    """--segments by energy on 1 and 4 minutes: the same peak numpy memory for both, a fraction of the signal
    (the decision reads the temporary output and the mixture again in blocks)."""
    from conftest import require_vad

    from tsekit.infer.presence import PresenceGate, PresenceSettings

    require_vad()
    model = HalfGain().eval()
    presence_gate = PresenceGate(PresenceSettings("energy"))
    mixtures = {minutes: long_mixture(tmp_path / f"{minutes}.wav", 60 * minutes) for minutes in (1, 4)}
    monkeypatch.setattr(extract_module, "BLOCK_FRAMES", 4000)
    options = {"chunk_seconds": 1.0, "overlap_seconds": 0.25, "output_level": "mixture_fit"}
    peaks = traced_peaks({minutes: functools.partial(
        stream, model, tmp_path / f"{minutes}.wav", tmp_path / f"out{minutes}.wav", presence=functools.partial(
            presence_gate, enrollment=None, rate=RATE, rttm=tmp_path / f"{minutes}.rttm", recording="x"),
        **options) for minutes in mixtures})
    # what holding the signal would show: growth with the length, and more than half of it (float32) at 4 minutes
    assert peaks[4] < 1.2 * peaks[1] and peaks[4] < mixtures[4].nbytes / 2, (peaks, mixtures[4].nbytes)
    assert (tmp_path / "4.rttm").is_file()  # (noise is no speech to the VAD: the decision silenced it all)


def test_a_missing_vad_is_one_line_before_any_work(trained, conversations, tmp_path, monkeypatch):
    exp, _ = trained
    monkeypatch.setattr("sys.prefix", str(tmp_path / "venv"))
    mixture, enroll = read_table(conversations / "wav.scp")["convA"], read_table(conversations / "enroll.scp")["convA"]
    with pytest.raises(TsekitError, match=r"^Silero VAD not found: .* \(run `make install`, or `pip download"):
        extract_file(exp, mixture, enroll, tmp_path / "out.wav", segments=tmp_path / "out.rttm")
    with pytest.raises(TsekitError, match=r"^Silero VAD not found: "):
        infer_data_dir(exp, conversations, tmp_path / "decode", segments=True)
    assert not list(tmp_path.glob("out.*")) and not (tmp_path / "decode").exists()
