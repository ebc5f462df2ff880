"""tsekit score on real-recording rows: absent targets and conversations (RTTM), with answers known exactly."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_score import read_tsv, score

from tsekit.data import rttm
from tsekit.data.table import read_table, write_table
from tsekit.metrics import conversation, sdr
from tsekit.metrics.jobs import inputs_from_data_dir, run_scoring
from tsekit.metrics.results import merge_scores
from tsekit.metrics.scorer import choose_metrics
from tsekit.report.experiments import load_system, summarize
from tsekit.report.page import build_report

RATE = 8000
SECONDS = 4.0
# recording r1: A alone, A+B+D, B alone, a gap, C alone, A alone; r2: E throughout, F inside E's turn
TURNS = {"r1": [("A", 0.0, 1.0), ("B", 1.0, 2.5), ("A", 1.0, 1.5), ("D", 1.2, 1.4), ("C", 3.0, 3.5),
                ("A", 3.5, 4.0)],
         "r2": [("E", 0.0, 4.0), ("F", 1.0, 2.0)]}


def write_float(path: Path, samples: np.ndarray, rate: int = RATE) -> str:
    """32-bit float wav: exact enough (1e-7) for the dB values the tests expect."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples.astype(np.float32), rate, subtype="FLOAT")
    return str(path)


def rttm_text(turns: dict[str, list[tuple[str, float, float]]]) -> str:
    return "".join(f"SPEAKER {reco} 1 {onset:.3f} {end - onset:.3f} <NA> <NA> {spk} <NA> <NA>\n"
                   for reco, rows in turns.items() for spk, onset, end in rows)


def segments_text(turns: dict[str, list[tuple[str, float, float]]]) -> str:
    """tsekit's segments layout: ids <rec>-<spk>-<start cs>-<end cs>."""
    return "".join(f"{reco}-{spk}-{round(onset * 100):07d}-{round(end * 100):07d} {reco} {onset:.2f} {end:.2f}\n"
                   for reco, rows in turns.items() for spk, onset, end in rows)


def mask(rows: list[tuple[str, float, float]], speakers: set[str], rate: int = RATE,
         seconds: float = SECONDS) -> np.ndarray:
    """Samples where any of ``speakers`` has a turn."""
    out = np.zeros(int(seconds * rate), dtype=bool)
    for spk, onset, end in rows:
        if spk in speakers:
            out[round(onset * rate):round(end * rate)] = True
    return out


def conversation_set(folder: Path) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A conversation data dir (tracks of white noise in their turns) as the corpus helper writes one.

    Returns (data dir, utt -> track, recording -> mixture).
    """
    rng = np.random.default_rng(0)
    frames = int(SECONDS * RATE)
    tables: dict[str, dict[str, str]] = {n: {} for n in ("wav.scp", "spk1.scp", "enroll.scp", "utt2spk", "utt2reco")}
    tracks, mixtures = {}, {}
    for reco, rows in TURNS.items():
        speakers = list(dict.fromkeys(spk for spk, *_ in rows))
        for spk in speakers:
            # each speaker at its own level, so that pooled energies differ from per-speaker ones
            tracks[f"{reco}-{spk}"] = mask(rows, {spk}) * rng.standard_normal(frames) * (0.05 + 0.05 * len(spk) *
                                                                                        speakers.index(spk))
        mixtures[reco] = sum(tracks[f"{reco}-{spk}"] for spk in speakers)
        wav = write_float(folder / "wav" / f"{reco}.wav", mixtures[reco])
        for spk in speakers:
            utt = f"{reco}-{spk}"
            tables["wav.scp"][utt] = wav
            tables["spk1.scp"][utt] = write_float(folder / "spk1" / f"{utt}.wav", tracks[utt])
            tables["enroll.scp"][utt] = write_float(folder / "enroll" / f"{utt}.wav", rng.standard_normal(RATE) * 0.1)
            tables["utt2spk"][utt], tables["utt2reco"][utt] = spk, reco
    for name, table in tables.items():
        write_table(folder / name, table)
    (folder / "rttm").write_text(rttm_text(TURNS))
    return folder, tracks, mixtures


@pytest.fixture
def conv(tmp_path) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    return conversation_set(tmp_path / "data" / "test_conv")


def write_estimates(folder: Path, estimates: dict[str, np.ndarray]) -> str:
    write_table(folder / "wav.scp", {u: write_float(folder / f"{u}.wav", x) for u, x in estimates.items()})
    return str(folder / "wav.scp")


def test_conversation_metrics_have_their_known_values(conv, tmp_path):
    data, tracks, mix = conv
    r1 = {s: tracks[f"r1-{s}"] for s in "ABCD"}
    estimates = {
        # the target plus every other speaker at -20 dB: suppression 20 dB, the target kept whole (0 dB)
        "r1-A": r1["A"] + 0.1 * (r1["B"] + r1["C"] + r1["D"]),
        # half the target's amplitude (-6.02 dB kept) and nothing else: suppression at the clamp
        "r1-B": 0.5 * r1["B"],
        "r1-C": mix["r1"],  # the mixture itself: nothing suppressed (0 dB)
        "r1-D": r1["D"],  # D only talks over others: no solo turn, target_kept NaN
        "r2-E": tracks["r2-E"] + tracks["r2-F"],  # F never talks alone: interferer_suppression NaN
        "r2-F": tracks["r2-F"],
    }
    est = write_estimates(tmp_path / "est", estimates)
    code, out, err = score("--data", str(data), "--est", est, "--out", str(tmp_path / "s"))
    assert code == 0, err
    header, rows = read_tsv(tmp_path / "s" / "scores.tsv")
    assert header == ["utt", "si_sdr_active", "sdr_active", "interferer_suppression", "target_kept"]
    assert rows["r1-A"]["interferer_suppression"] == pytest.approx(20.0, abs=1e-3)
    assert rows["r1-A"]["target_kept"] == pytest.approx(0.0, abs=1e-3)
    active = mask(TURNS["r1"], {"A"})
    assert rows["r1-A"]["si_sdr_active"] == pytest.approx(sdr.si_sdr(estimates["r1-A"][active], r1["A"][active]),
                                                          abs=1e-3)
    assert rows["r1-A"]["sdr_active"] == pytest.approx(sdr.bss_eval(estimates["r1-A"][active], r1["A"][active])[0],
                                                       abs=1e-3)
    # the whole recording would score otherwise: A is silent in half of it
    assert abs(rows["r1-A"]["si_sdr_active"] - sdr.si_sdr(estimates["r1-A"], r1["A"])) > 1.0
    assert rows["r1-B"]["target_kept"] == pytest.approx(20 * math.log10(0.5), abs=1e-3)
    assert rows["r1-B"]["interferer_suppression"] == sdr.CLAMP_DB
    assert rows["r1-C"]["interferer_suppression"] == pytest.approx(0.0, abs=1e-4)
    assert rows["r1-C"]["target_kept"] == pytest.approx(0.0, abs=1e-4)
    assert math.isnan(rows["r1-D"]["target_kept"]) and rows["r1-D"]["si_sdr_active"] == sdr.CLAMP_DB
    assert math.isnan(rows["r2-E"]["interferer_suppression"]) and math.isnan(rows["r2-F"]["target_kept"])
    # the mixture as the output: suppresses nothing
    _, baseline = read_tsv(tmp_path / "s" / "mixture.tsv")
    assert all(abs(baseline[u]["interferer_suppression"]) < 1e-4 for u in baseline
               if not math.isnan(baseline[u]["interferer_suppression"]))
    results = (tmp_path / "s" / "RESULTS.md").read_text()
    # n: r2-E has no interferer solo turn (F never talks alone)
    assert re.search(r"\| interferer_suppression \| [-\d.]+ ± [\d.]+ \| 0\.00 ± 0\.00 \| [-+\d.]+ \| 5 \|", results)
    assert re.search(r"\| target_kept \| [-\d.]+ ± [\d.]+ \| .* \| 4 \|", results)
    assert f"over the turns of `{data / 'rttm'}`" in results


def test_segments_give_the_turns_of_the_rttm(conv, tmp_path):
    data, tracks, mix = conv
    est = write_estimates(tmp_path / "est", {u: x + 0.2 * (mix[u[:2]] - x) for u, x in tracks.items()})
    assert score("--data", str(data), "--est", est, "--out", str(tmp_path / "rttm"))[0] == 0
    (data / "rttm").rename(data / "rttm.bak")
    (data / "segments").write_text(segments_text(TURNS))
    code, out, err = score("--data", str(data), "--est", est, "--out", str(tmp_path / "segments"))
    assert code == 0, err
    assert f"over the turns of `{data / 'segments'}`" in out
    assert (tmp_path / "segments" / "scores.tsv").read_text() == (tmp_path / "rttm" / "scores.tsv").read_text()
    for line, message in (("r1-A-0000000-0000100 r1 0.00 1.00 x", "not a segments line"),
                          ("r1-A-0000000-0000100 r2 0.00 1.00", "segment id 'r1-A-0000000-0000100' is not "
                                                                 "<recording>-<speaker>-<start cs>-<end cs> of "
                                                                 "recording 'r2'"),
                          ("r1-A-0000100-0000000 r1 1.00 0.00", "start 1.00 and end 0.00 must be finite, 0 <= "
                                                                "start <= end"),
                          ("r3-A-0000000-0000100 r3 0.00 1.00", "recording 'r3' is not in")):
        (data / "segments").write_text(segments_text(TURNS) + line + "\n")
        code, _, err = score("--data", str(data), "--est", est, "--out", str(tmp_path / "bad"))
        assert code == 1 and err.startswith(f"tsekit: error: {data / 'segments'}:9: {message}"), err
        assert not (tmp_path / "bad").exists()


def test_interferer_turns_are_pooled_by_energy():
    """Suppression over two interferers' solo turns is one energy ratio, not a mean of two dB values."""
    rate, frames = 100, 400
    turns = [rttm.Turn("T", 0.0, 1.0, 1), rttm.Turn("X", 1.0, 2.0, 2),
             rttm.Turn("Y", 2.0, 4.0, 3)]
    where = conversation.regions(turns, "T", rate, frames)
    mixture = np.ones(frames)
    estimate = np.zeros(frames)
    estimate[100:200] = 1.0  # X let through whole (0 dB), Y removed (+100 dB): 100 of 300 samples kept
    values = conversation.conversation_scores(estimate, mixture * (np.arange(frames) < 100), mixture, where,
                                              {"interferer_suppression", "target_kept"})
    assert values["interferer_suppression"] == pytest.approx(10 * math.log10(3))
    assert values["target_kept"] == -sdr.CLAMP_DB  # nothing of the target in the output


@pytest.mark.parametrize("block", [100, 511, 4096, 1 << 20])
def test_blockwise_active_sdr_is_the_whole_signal_value(block):
    """si_sdr_active and sdr_active over blocks (of any size, also under the 512-tap filter) equal si_sdr and
    bss_eval of the active samples concatenated: the block-wise sums are exact, not an approximation."""
    rng = np.random.default_rng(1)
    frames = 60000
    reference = rng.standard_normal(frames).astype(np.float32)
    # a causal distortion bss_eval's filter can undo, noise it cannot: SDR about 10 dB, SI-SDR far lower
    estimate = (np.convolve(reference, [0.9, 0.4, -0.2, 0.1])[:frames]
                + 0.3 * rng.standard_normal(frames)).astype(np.float32)
    active = np.zeros(frames, dtype=bool)
    for start in range(0, frames, 7000):
        active[start + 500 : start + 4500] = True
    blocks = [parts for parts in conversation.masked_blocks(active, estimate, reference, block=block)]
    assert all(len(est) <= block for est, _ in blocks)
    assert np.array_equal(np.concatenate([est for est, _ in blocks]), estimate[active])

    def pieces():
        return conversation.masked_blocks(active, estimate, reference, block=block)

    whole_sdr = sdr.bss_eval(estimate[active], reference[active])[0]
    assert 5.0 < whole_sdr and sdr.sdr_of_blocks(pieces) == pytest.approx(whole_sdr, abs=1e-9)
    assert sdr.si_sdr_of_blocks(pieces) == pytest.approx(sdr.si_sdr(estimate[active], reference[active]), abs=1e-9)
    silent = np.zeros(frames, dtype=np.float32)
    for est, ref, value in ((silent, reference, -sdr.CLAMP_DB), (reference, silent, -sdr.CLAMP_DB),
                            (reference, reference, sdr.CLAMP_DB)):
        def same(est=est, ref=ref):
            return conversation.masked_blocks(active, est, ref, block=block)

        assert sdr.sdr_of_blocks(same) == sdr.bss_eval(est[active], ref[active])[0] == value
        assert sdr.si_sdr_of_blocks(same) == sdr.si_sdr(est[active], ref[active]) == value


def test_a_ten_minute_recording_scores_in_seconds(tmp_path):
    rate, minutes = 16000, 10
    frames = minutes * 60 * rate
    rng = np.random.default_rng(0)
    # two speakers alternating 5 s turns with 1 s of overlap
    turns = [rttm.Turn("AB"[k % 2], max(0.0, 5.0 * k - 1.0), 5.0 * (k + 1), k + 1) for k in range(120)]
    where = conversation.regions(turns, "A", rate, frames)
    reference = (rng.standard_normal(frames) * where.active).astype(np.float32)
    mixture = reference + rng.standard_normal(frames).astype(np.float32) * ~where.target_solo
    estimate = reference + 0.1 * (mixture - reference)
    start = time.perf_counter()
    wanted = set(conversation.CONVERSATION_METRICS)
    values = conversation.conversation_scores(estimate, reference, mixture, where, wanted)
    assert time.perf_counter() - start < 10.0
    assert values["interferer_suppression"] == pytest.approx(20.0, abs=1e-3)
    assert values["target_kept"] == pytest.approx(0.0, abs=1e-3)


def absent_set(folder: Path) -> Path:
    """An absent-target data dir: mixtures, enrollments of someone else, utt2present 0, no spk1.scp."""
    rng = np.random.default_rng(1)
    tables: dict[str, dict[str, str]] = {n: {} for n in ("wav.scp", "enroll.scp", "utt2spk", "utt2present")}
    for utt in ("m1", "m2", "m3"):
        tables["wav.scp"][utt] = write_float(folder / "wav" / f"{utt}.wav", 0.1 * rng.standard_normal(RATE))
        tables["enroll.scp"][utt] = write_float(folder / "enroll" / f"{utt}.wav", 0.1 * rng.standard_normal(RATE))
        tables["utt2spk"][utt], tables["utt2present"][utt] = "Z", "0"
    for name, table in tables.items():
        write_table(folder / name, table)
    return folder


def test_absent_targets_score_output_energy_and_audibility(tmp_path):
    data = absent_set(tmp_path / "data" / "test_absent")
    mix = {u: sf.read(data / "wav" / f"{u}.wav")[0] for u in ("m1", "m2", "m3")}
    est = write_estimates(tmp_path / "est", {"m1": 0.01 * mix["m1"], "m2": 0.5 * mix["m2"], "m3": 0 * mix["m3"]})
    code, out, err = score("--data", str(data), "--est", est, "--out", str(tmp_path / "s"))
    assert code == 0, err
    header, rows = read_tsv(tmp_path / "s" / "scores.tsv")
    assert header == ["utt", "absent_energy", "audible"]
    assert rows["m1"] == pytest.approx({"absent_energy": -40.0, "audible": 0.0}, abs=1e-3)
    assert rows["m2"] == pytest.approx({"absent_energy": 20 * math.log10(0.5), "audible": 1.0}, abs=1e-3)
    assert rows["m3"] == {"absent_energy": -sdr.CLAMP_DB, "audible": 0.0}  # silence: the floor, not -inf
    assert "Audible (absent_energy > -20 dB, output over mixture energy) on absent-target rows: 33.3% (1/3)" in out
    assert re.search(r"\| audible \(%\) \| 33\.33 ± 47\.14 \| 100\.00 ± 0\.00 \|", out)
    # the same from manifests, with another threshold
    code, out, err = score("--absent", "--est", est, "--mix", str(data / "wav.scp"), "--audible-threshold", "-50",
                           "--out", str(tmp_path / "t"))
    assert code == 0, err
    assert "> -50 dB" in out and "66.7% (2/3)" in out
    code, _, err = score("--absent", "--est", est, "--mix", str(data / "wav.scp"), "--metrics", "si_sdr",
                         "--out", str(tmp_path / "u"))
    assert code == 1 and "metric si_sdr needs a reference, and absent-target rows have none" in err
    assert not (tmp_path / "u").exists()


def test_bad_absent_target_input_is_one_line_and_writes_nothing(tmp_path):
    data = absent_set(tmp_path / "data" / "test_absent")
    mixture, _ = sf.read(data / "wav" / "m1.wav")
    est = write_estimates(tmp_path / "est", {"m1": mixture, "m2": mixture, "m3": mixture})
    sf.write(tmp_path / "est" / "m2.wav", mixture, 2 * RATE)
    code, _, err = score("--data", str(data), "--est", est, "--out", str(tmp_path / "s"))
    assert code == 1 and err == (f"tsekit: error: {est}: m2: {tmp_path / 'est' / 'm2.wav'}: sample rate 16000 Hz, "
                                 "but the mixture has 8000 Hz\n")
    write_table(data / "utt2present", {"m1": "0", "m2": "1", "m3": "0"})
    code, _, err = score("--data", str(data), "--est", est, "--out", str(tmp_path / "s"))
    assert code == 1 and f"{data / 'utt2present'}: 2 of 3 rows have an absent target" in err
    code, _, err = score("--absent", "--ref", str(data / "wav.scp"), "--est", est, "--mix", str(data / "wav.scp"),
                         "--out", str(tmp_path / "s"))
    assert code == 1 and "scored from --est and --mix alone: no --ref" in err
    assert not (tmp_path / "s").exists()


def test_metric_choice_by_kind_of_row():
    assert choose_metrics(None, {"mix", "absent", "enroll", "16k"})[0] == ["absent_energy", "audible"]
    chosen = choose_metrics(None, {"mix", "rttm", "enroll", "text", "hyp_text", "16k"})[0]
    assert chosen == ["tsasr_wer", "si_sdr_active", "sdr_active", "interferer_suppression", "target_kept"]
    assert "absent_energy" not in choose_metrics(None, {"mix", "16k"})[0]
    assert choose_metrics("si_sdr,target_kept", {"rttm"})[0] == ["si_sdr", "target_kept"]  # named: any metric
    with pytest.raises(Exception, match="metric target_kept needs --rttm"):
        choose_metrics("target_kept", {"mix"})


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.joinpath("rttm").write_text(rttm_text(TURNS) + "SPEAKER r9 1 0.000 1.000 <NA> <NA> A <NA> <NA>\n"),
     "{rttm}:9: recording 'r9' is not in {data}/utt2reco"),
    (lambda d: d.joinpath("rttm").write_text(rttm_text(TURNS) + "SPEAKER r1 1 3.500 0.600 <NA> <NA> A <NA> <NA>\n"),
     "{rttm}:9: turn of A ends at 4.100 s, after the end of the recording (4.000 s, {data}/spk1.scp: r1-A)"),
    (lambda d: d.joinpath("rttm").write_text(rttm_text(TURNS).replace("1.000 1.500", "1.000 x")),
     "{rttm}:2: onset '1.000' and duration 'x' must be seconds"),
    (lambda d: d.joinpath("rttm").write_text(rttm_text(TURNS) + "r1 1 0.0 1.0\n"),
     "{rttm}:9: not an RTTM SPEAKER line (SPEAKER <recording> <channel> <onset s> <duration s> <NA> <NA> "
     "<speaker> [<NA> <NA>]): 'r1 1 0.0 1.0'"),
    (lambda d: d.joinpath("rttm").write_text(rttm_text({"r1": TURNS["r1"][1:2], "r2": TURNS["r2"]})),
     "{rttm}: no turn of speaker 'A' in recording 'r1' (row r1-A)"),
    (lambda d: write_float(d / "wav" / "r2.wav", np.zeros(2 * int(SECONDS * RATE)), 2 * RATE),
     "{data}/wav.scp: r2-E: {data}/wav/r2.wav: sample rate 16000 Hz, but the reference has 8000 Hz"),
])
def test_bad_conversation_input_is_one_line_and_writes_nothing(conv, tmp_path, change, message):
    data, tracks, _ = conv
    est = write_estimates(tmp_path / "est", tracks)
    change(data)
    code, _, err = score("--data", str(data), "--est", est, "--out", str(tmp_path / "s"))
    assert code == 1 and err.strip().splitlines() == [
        "tsekit: error: " + message.format(rttm=data / "rttm", data=data)]
    assert not (tmp_path / "s").exists()


def test_the_tolerance_for_rounded_rttm_times():
    """A turn written 1 ms past the end (3-decimal rounding) is clipped; 2 ms past is an error."""
    rttm.check_turn_ends([rttm.Turn("A", 0.0, 1.001, 1)], 8000, 8000, "rttm", "rec")
    with pytest.raises(Exception, match="rttm:1: turn of A ends at 1.002 s"):
        rttm.check_turn_ends([rttm.Turn("A", 0.0, 1.002, 1)], 8000, 8000, "rttm", "rec")


# --- the report shows the new columns ---------------------------------------------------------------------------

def scored_system(data: Path, exp: Path, estimates: dict[str, np.ndarray]) -> Path:
    """exp/<name>/decode_<set> as recipe stages 6-7 leave it: the estimates and their scores (from the data dir)."""
    decode = exp / f"decode_{data.name}"
    inputs = inputs_from_data_dir(data, write_estimates(decode / "wav", estimates))
    write_table(decode / "wav.scp", read_table(decode / "wav" / "wav.scp"))
    run_scoring(inputs, decode / "scores")
    merge_scores(decode / "scores")
    return exp


def test_the_report_shows_absent_and_conversation_columns(conv, tmp_path):
    pytest.importorskip("matplotlib")
    data, tracks, mix = conv
    quiet = scored_system(data, tmp_path / "exp" / "quiet", {u: 0.3 * x for u, x in tracks.items()})
    leaky = scored_system(data, tmp_path / "exp" / "leaky",
                          {u: x + 0.3 * (mix[u[:2]] - x) for u, x in tracks.items()})
    page = build_report(data, [quiet, leaky], tmp_path / "report", n=2, progress=False).read_text()
    for metric, arrow in (("si_sdr_active", "↑"), ("interferer_suppression", "↑"), ("target_kept", "→0")):
        assert f"<th>{metric} {arrow}</th>" in page
    summary = summarize([load_system(e, data, sorted(tracks)) for e in (quiet, leaky)], sorted(tracks))
    # leaky keeps the target whole (0 dB, best) but suppresses less; quiet loses 10.5 dB of it
    assert summary.systems["leaky"]["target_kept"].best and not summary.systems["quiet"]["target_kept"].best
    assert summary.systems["quiet"]["interferer_suppression"].best
    assert "by si_sdr_active (mean over the systems)" in page

    absent = absent_set(tmp_path / "data" / "test_absent")
    mixtures = {u: sf.read(absent / "wav" / f"{u}.wav")[0] for u in ("m1", "m2", "m3")}
    silent = scored_system(absent, tmp_path / "exp" / "quiet", {u: 0.0 * x for u, x in mixtures.items()})
    loud = scored_system(absent, tmp_path / "exp" / "leaky", {u: 0.5 * x for u, x in mixtures.items()})
    page = build_report(absent, [silent, loud], tmp_path / "report_absent", n=2, progress=False).read_text()
    assert "<th>absent_energy ↓</th>" in page and "<th>audible (%) ↓</th>" in page
    quiet_row = re.search(r"<tr><td>quiet</td>.*?</tr>", page).group(0)
    assert quiet_row.count("class='best'") == 2 and "-100.00 ± 0.00" in quiet_row and "0.00 ± 0.00" in quiet_row
    assert "reference (ground truth)" not in page  # an absent target has none
    assert "by absent_energy (mean over the systems)" in page
