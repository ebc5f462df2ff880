"""Transcripts of target-speaker ASR systems through inference: extract_waveform, tsekit extract, OUT/text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from tsekit import TsekitError
from tsekit import checkpoint as ckpt
from tsekit.cli import cli
from tsekit.data.table import read_table, write_table
from tsekit.infer import extract_waveform, infer_data_dir
from tsekit.infer.extract import chunk_starts
from tsekit.models.registry import MODELS, TSEModel, register
from tsekit.train.config import config_from_dict
from tsekit.typed_config import config_to_dict

RATE = 8000
TRANSCRIBER, SCALER = "test_transcriber", "test_scaler"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Transcriber(TSEModel):
    """Estimate = the mixture x 0.5; transcript of a row = the sign of its mean and its number of samples."""

    needs = frozenset({"enroll"})
    transcribes = True

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, batch):
        return {"estimate": self.gain * batch["mixture"]}

    def extract_with_text(self, mixture, enrollments):
        return self.forward({"mixture": mixture})["estimate"], [transcript(row.numpy()) for row in mixture]


class Scaler(Transcriber):
    """The same model without transcripts."""

    transcribes = False


def transcript(samples: np.ndarray) -> str:
    return f"{'up' if samples.mean() > 0 else 'down'} {len(samples)}"


@pytest.fixture(scope="module", autouse=True)
def registered():
    register(TRANSCRIBER)(Transcriber)
    register(SCALER)(Scaler)
    yield
    MODELS.pop(TRANSCRIBER)
    MODELS.pop(SCALER)


def save_experiment(exp: Path, name: str) -> Path:
    """A stage-1 checkpoint of model ``name`` with its resolved config, as training leaves it."""
    cfg = config_from_dict({"model": {"name": name}, "data": {"sample_rate": RATE, "chunk_seconds": None},
                            "loss": [{"name": "si_sdr"}], "infer": {"output_level": "none"}})
    model = MODELS[name]()
    ckpt.save_checkpoint(exp / "stage1" / "checkpoints" / ckpt.LATEST,
                         {"model": model.state_dict(), "config": config_to_dict(cfg)})
    return exp


def make_data_dir(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A data dir of 5 rows (wav.scp, enroll.scp) of different lengths and signs; returns it and the mixtures."""
    rng = np.random.default_rng(0)
    mixtures, enrolls = {}, {}
    (root / "audio").mkdir(parents=True)
    for i in range(5):
        utt = f"utt{i}"
        sign = 1 if i % 2 else -1
        mixtures[utt] = (sign * 0.3 + 0.05 * rng.standard_normal(RATE // 2 + 100 * i)).astype(np.float32)
        sf.write(root / "audio" / f"{utt}.wav", mixtures[utt], RATE, subtype="FLOAT")
        sf.write(root / "audio" / f"{utt}_enroll.wav", mixtures[utt][:800], RATE, subtype="FLOAT")
        enrolls[utt] = str(root / "audio" / f"{utt}_enroll.wav")
    data = root / "data"
    write_table(data / "wav.scp", {utt: str(root / "audio" / f"{utt}.wav") for utt in mixtures})
    write_table(data / "enroll.scp", enrolls)
    return data, mixtures


def test_extract_waveform_returns_the_transcript_whole_or_chunked():
    model = Transcriber().eval()
    length = 3 * RATE + 123
    mixture = np.concatenate([np.full(2 * RATE, 0.2), np.full(length - 2 * RATE, -0.1)]).astype(np.float32)
    enroll = np.zeros(800, dtype=np.float32)
    plain = extract_waveform(model, mixture, enroll, RATE)
    estimate, text = extract_waveform(model, mixture, enroll, RATE, with_text=True)
    np.testing.assert_allclose(estimate, plain)
    np.testing.assert_allclose(estimate, 0.5 * mixture, atol=1e-7)
    assert text == transcript(mixture) == f"up {length}"
    chunked, text = extract_waveform(model, mixture, enroll, RATE, chunk_seconds=1.0, overlap_seconds=0.25,
                                     with_text=True)
    starts = chunk_starts(length, RATE, RATE // 4)
    assert len(starts) == 4
    # one transcript per chunk, in time order, single spaces (overlapping chunks may repeat words)
    assert text == " ".join(transcript(mixture[s : s + RATE]) for s in starts)
    assert text == f"up {RATE} up {RATE} up {RATE} down {RATE}"
    np.testing.assert_allclose(chunked, estimate, atol=1e-6)
    with pytest.raises(TsekitError, match="with_text and refine cannot be combined"):
        extract_waveform(model, mixture, enroll, RATE, refine=mixture, with_text=True)


def test_infer_writes_text_beside_wav_scp_and_resumes(tmp_path):
    exp = save_experiment(tmp_path / "exp", TRANSCRIBER)
    data, mixtures = make_data_dir(tmp_path)
    out = tmp_path / "decode"
    summary = infer_data_dir(exp, data, out)
    assert (summary.extracted, summary.wrote_scp) == (5, True)
    assert f"{out / 'wav.scp'} and {out / 'text'}" in str(summary)
    expected = {utt: transcript(samples) for utt, samples in mixtures.items()}
    assert read_table(out / "text") == expected
    assert (out / "text").read_text().splitlines() == [f"{u} {expected[u]}" for u in sorted(expected)]
    assert list(read_table(out / "wav.scp")) == sorted(mixtures)
    for utt in mixtures:
        assert (out / "txt" / f"{utt}.txt").read_text() == expected[utt] + "\n"

    # killed after one wav of a rerun, before text was rewritten: the rerun extracts that row and rewrites text
    (out / "text").unlink()
    (out / "wav" / "utt3.wav").unlink()
    again = infer_data_dir(exp, data, out)
    assert (again.extracted, again.skipped, again.wrote_scp) == (1, 4, True)
    assert read_table(out / "text") == expected

    # jobs: the first shard writes neither table, the last one both
    first = infer_data_dir(exp, data, tmp_path / "jobs", nj=2, job=1)
    assert not first.wrote_scp and not (tmp_path / "jobs" / "text").exists()
    assert f"{tmp_path / 'jobs' / 'wav.scp'} and {tmp_path / 'jobs' / 'text'} are written once" in str(first)
    infer_data_dir(exp, data, tmp_path / "jobs", nj=2, job=2)
    assert read_table(tmp_path / "jobs" / "text") == expected


def test_a_model_without_transcripts_writes_no_text(tmp_path):
    exp = save_experiment(tmp_path / "exp", SCALER)
    data, _ = make_data_dir(tmp_path)
    summary = infer_data_dir(exp, data, tmp_path / "decode")
    assert summary.wrote_scp and not summary.transcribes
    assert not (tmp_path / "decode" / "text").exists() and not (tmp_path / "decode" / "txt").exists()
    assert "text" not in str(summary).split(";")[-1]


def test_extract_writes_the_transcript_beside_the_wav(tmp_path):
    exp = save_experiment(tmp_path / "exp", TRANSCRIBER)
    data, mixtures = make_data_dir(tmp_path)
    out = tmp_path / "one.wav"
    args = ["extract", "--exp-dir", str(exp), "--mix", read_table(data / "wav.scp")["utt1"],
            "--enroll", read_table(data / "enroll.scp")["utt1"], "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "one.txt").read_text() == transcript(mixtures["utt1"]) + "\n"
    assert f"wrote {out} and its transcript {tmp_path / 'one.txt'}" in result.stderr
    np.testing.assert_allclose(sf.read(out, dtype="float32")[0], 0.5 * mixtures["utt1"], atol=1e-4)

    # a model without transcripts leaves an old .txt alone and does not claim it
    other = save_experiment(tmp_path / "other", SCALER)
    result = CliRunner().invoke(cli, [*args[:2], str(other), *args[3:]])
    assert result.exit_code == 0, result.output
    # its 0.1 s enrollment is warned about
    said = [line for line in result.stderr.splitlines() if not line.startswith("tsekit: warning: ")]
    assert said == [f"wrote {out}"]
