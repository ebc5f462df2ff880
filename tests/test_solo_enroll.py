"""Enrollments cut from a conversation's own solo turns (tsekit enroll --solo, tsekit.data.solo)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from tsekit import TsekitError
from tsekit.cli import cli
from tsekit.data.rttm import Turn, format_rttm, read_rttm
from tsekit.data.solo import SoloOptions, enroll_from_solo, enroll_recording, solo_stretches
from tsekit.data.table import read_table, write_table

sys.path.insert(0, str(Path(__file__).parent))
from test_conversations import build, write_speech_tree  # noqa: E402

from tsekit.corpora.conversations import ConversationOptions  # noqa: E402

RATE = 16000
# A talks 0-3 s and 5-6 s, B 2.5-4 s (over A's end) and 6.1-9 s; the recording lasts 10 s. With the 0.25 s margin,
# A is alone in [0, 2.25) and [5, 5.85) s, B in [3.25, 4) and [6.25, 9) s.
TURNS = [Turn("A", 0.0, 3.0), Turn("B", 2.5, 4.0), Turn("A", 5.0, 6.0), Turn("B", 6.1, 9.0)]


def s(seconds: float) -> int:
    return round(seconds * RATE)


@pytest.fixture
def recording(tmp_path) -> tuple[Path, Path, np.ndarray]:
    """(rec.wav, rec.rttm, its int16 samples): distinct random samples, so a clip shows where it was cut."""
    samples = np.random.default_rng(0).integers(-20000, 20000, s(10), dtype=np.int16)
    wav = tmp_path / "rec.wav"
    sf.write(wav, samples, RATE, subtype="PCM_16")
    rttm = tmp_path / "rec.rttm"
    rttm.write_text(format_rttm({"rec": TURNS}))
    return wav, rttm, samples


def clip(path: str | Path) -> np.ndarray:
    samples, rate = sf.read(path, dtype="int16")
    assert rate == RATE
    return samples


def test_solo_stretches_keep_the_margin_from_other_speakers():
    assert solo_stretches(TURNS, "A", RATE, s(10)) == [(0, s(2.25)), (s(5.0), s(5.85))]
    assert solo_stretches(TURNS, "B", RATE, s(10)) == [(s(3.25), s(4.0)), (s(6.25), s(9.0))]
    assert solo_stretches(TURNS, "A", RATE, s(10), margin=0) == [(0, s(2.5)), (s(5.0), s(6.0))]
    # a speaker's own overlapping turns count once; a turn inside another speaker's leaves nothing
    own = [Turn("A", 1.0, 3.0), Turn("A", 2.0, 4.0), Turn("B", 5.0, 6.0), Turn("A", 5.2, 5.5)]
    assert solo_stretches(own, "A", RATE, s(10)) == [(s(1.0), s(4.0))]


def test_wav_and_rttm_become_a_data_dir_of_solo_enrollments(recording, tmp_path):
    wav, rttm, samples = recording
    out = tmp_path / "dir"
    result = CliRunner().invoke(cli, ["enroll", str(out), "--solo", "--wav", str(wav), "--rttm", str(rttm),
                                      "--seconds", "3"])
    assert result.exit_code == 0, result.output
    enroll = read_table(out / "enroll.scp")
    assert sorted(enroll) == ["A-rec", "B-rec"]
    # A: the longest stretch whole (2.25 s), then the first 0.75 s of the next; joined in time order
    assert np.array_equal(clip(enroll["A-rec"]), np.concatenate([samples[: s(2.25)], samples[s(5.0) : s(5.75)]]))
    # B: 6.25-9 s whole (2.75 s), then 0.25 s of 3.25-4 s, which comes first in time
    assert np.array_equal(clip(enroll["B-rec"]), np.concatenate([samples[s(3.25) : s(3.5)], samples[s(6.25) : s(9)]]))
    assert read_table(out / "utt2enroll")["A-rec"] == "rec:0.000-2.250,5.000-5.750"
    assert read_table(out / "wav.scp") == {"A-rec": str(wav), "B-rec": str(wav)}
    assert read_table(out / "utt2reco") == {"A-rec": "rec", "B-rec": "rec"}
    assert read_rttm(str(out / "rttm"), {"rec"}, "rec") == read_rttm(str(rttm), {"rec"}, "rec")
    # one speaker, the longest stretch cut to --seconds
    result = CliRunner().invoke(cli, ["enroll", str(tmp_path / "a"), "--solo", "--wav", str(wav), "--rttm", str(rttm),
                                      "--speaker", "A", "--seconds", "2", "--min-seconds", "1"])
    assert result.exit_code == 0, result.output
    assert np.array_equal(clip(read_table(tmp_path / "a" / "enroll.scp")["A-rec"]), samples[: s(2)])


def test_a_speaker_never_alone_long_enough_is_one_line_and_nothing_written(recording, tmp_path):
    wav, rttm, _ = recording
    out = tmp_path / "dir"
    proc = subprocess.run([sys.executable, "-m", "tsekit", "enroll", str(out), "--solo", "--wav", str(wav),
                           "--rttm", str(rttm), "--seconds", "5", "--min-seconds", "3.2"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    # A is alone 3.1 s (2.25 + 0.85) and is refused; the message names the file, recording, speaker, longest stretch
    assert lines[0].startswith(f"tsekit: error: {rttm}: speaker A of recording rec never speaks alone")
    assert "longest solo stretch 2.25 s, 3.10 s alone in all" in lines[0]
    assert sorted(tmp_path.iterdir()) == sorted([wav, rttm])  # no OUT, no temporary folder


def test_short_stretches_do_not_count(recording, tmp_path):
    wav, rttm, _ = recording
    # B's 3.25-4 s stretch is 0.75 s: a piece; at margin 0.6 it shrinks to 3.6-4 s (0.4 s) and is left out
    refused = "speaker B of recording rec never speaks alone.*longest solo stretch 2.40 s, 2.80 s alone"
    with pytest.raises(TsekitError, match=refused):
        enroll_recording(wav, rttm, tmp_path / "dir", speakers=["B"], options=SoloOptions(5, 2.5, margin=0.6))
    assert not (tmp_path / "dir").exists()


def data_dir(tmp_path: Path, wav: Path, rttm_text: str) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    rows = ["A-rec", "B-rec"]
    write_table(data / "wav.scp", {u: str(wav) for u in rows})
    write_table(data / "utt2spk", {u: u[0] for u in rows})
    write_table(data / "utt2reco", {u: "rec" for u in rows})
    write_table(data / "enroll.scp", {u: f"/elsewhere/{u}.wav" for u in rows})
    (data / "rttm").write_text(rttm_text)
    return data


def test_data_dir_in_place_and_its_errors_leave_it_as_it_was(recording, tmp_path):
    wav, rttm, samples = recording
    data = data_dir(tmp_path, wav, rttm.read_text())
    before = (data / "enroll.scp").read_text()
    with pytest.raises(TsekitError, match=r"data/rttm: speaker A of recording rec never speaks alone"):
        enroll_from_solo(data, options=SoloOptions(5, 4))
    assert (data / "enroll.scp").read_text() == before and not (data / "enroll_solo").exists()
    assert sorted(p.name for p in data.iterdir()) == ["enroll.scp", "rttm", "utt2reco", "utt2spk", "wav.scp"]
    # only speaker B: A keeps its enrollment
    enroll_from_solo(data, speakers=["B"], options=SoloOptions(2, 1))
    enroll = read_table(data / "enroll.scp")
    assert enroll["A-rec"] == "/elsewhere/A-rec.wav"
    assert np.array_equal(clip(enroll["B-rec"]), samples[s(6.25) : s(8.25)])
    # then A too: B's clip stays
    enroll_from_solo(data, speakers=["A"], options=SoloOptions(2, 1))
    enroll = read_table(data / "enroll.scp")
    assert np.array_equal(clip(enroll["A-rec"]), samples[: s(2)])
    assert np.array_equal(clip(enroll["B-rec"]), samples[s(6.25) : s(8.25)])


def test_rttm_past_the_end_or_of_an_unknown_recording_is_refused(recording, tmp_path):
    wav, rttm, _ = recording
    data = data_dir(tmp_path, wav, rttm.read_text() + "SPEAKER rec 1 9.500 1.000 <NA> <NA> B <NA> <NA>\n")
    with pytest.raises(TsekitError, match=r"rttm:5: turn of B ends at 10.500 s, after the end of the recording"):
        enroll_from_solo(data)
    (data / "rttm").write_text(rttm.read_text() + "SPEAKER other 1 1.000 1.000 <NA> <NA> B <NA> <NA>\n")
    with pytest.raises(TsekitError, match=r"rttm:5: recording 'other' is not in"):
        enroll_from_solo(data)
    assert not (data / "enroll_solo").exists()


def test_conversation_set_enrollments_are_each_speakers_own_solo_track(tmp_path):
    """On a clean conversation set the mixture is exactly the sum of the tracks, so a solo clip is the speaker's own
    track there, and no other speaker's track has a sample in it."""
    speech = write_speech_tree(tmp_path / "speech" / "test-clean")
    # no overlap: with 4 speakers and a quarter of overlap in 30 s a speaker can be alone for under 0.5 s in all
    options = ConversationOptions(recordings=2, minutes=0.5, speakers=(2, 3), overlap=0.0)
    conv = build(speech, tmp_path / "conv", options=options)
    enroll_from_solo(conv, options=SoloOptions(seconds=3, min_seconds=1))
    tables = {name: read_table(conv / name) for name in ("enroll.scp", "utt2enroll", "spk1.scp", "utt2reco")}
    rows_of: dict[str, list[str]] = {}
    for utt, reco in tables["utt2reco"].items():
        rows_of.setdefault(reco, []).append(utt)
    assert len(tables["enroll.scp"]) == sum(len(r) for r in rows_of.values()) >= 4
    for utt, entry in tables["enroll.scp"].items():
        assert entry == str(conv / "enroll_solo" / f"{utt}.wav")
        spans = [tuple(round(float(t) * RATE) for t in piece.split("-"))
                 for piece in tables["utt2enroll"][utt].split(":")[1].split(",")]
        own = clip(tables["spk1.scp"][utt])
        assert np.array_equal(clip(entry), np.concatenate([own[a:b] for a, b in spans]))
        assert len(clip(entry)) == 3 * RATE
        for other in rows_of[tables["utt2reco"][utt]]:
            if other != utt:
                track = clip(tables["spk1.scp"][other])
                # the margin, less the RTTM's 1 ms rounding of where a track starts and ends
                near = s(0.25) - s(0.001)
                assert not any(track[max(0, a - near) : b + near].any() for a, b in spans)


@pytest.mark.parametrize("args, message", [
    (["--seconds", "3"], "--seconds needs --solo"),
    (["--speaker", "A"], "--speaker needs --solo"),
    (["--solo", "--posneg"], "--posneg does not go with --solo"),
    (["--solo", "--wav", "x.wav"], "--wav needs --rttm FILE"),
])
def test_solo_options_go_together(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["enroll", str(tmp_path), *args])
    assert result.exit_code == 2 and message in result.output, result.output
