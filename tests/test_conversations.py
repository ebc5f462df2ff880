"""Conversation and absent-target test sets (tsekit prepare conversations | absent): audio, RTTM, validation."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from tsekit import TsekitError
from tsekit.cli import cli
from tsekit.corpora.conversations import ConversationOptions, make_conversations, measured_overlap, read_speech
from tsekit.data.datadir import read_data_dir
from tsekit.data.rttm import Turn, read_rttm, read_segments
from tsekit.data.table import read_table
from tsekit.data.validate import validate_data_dir

sys.path.insert(0, str(Path(__file__).parent))
from corpus_trees import make_libri2mix_tree, speechlike  # noqa: E402

RATE = 16000
SPEAKERS = ("19", "250", "3081", "777")
PAD = 0.2  # seconds of digital silence around every fake utterance: trimmed off by the builder


def write_speech_tree(root: Path, per_speaker: int = 14) -> Path:
    """A LibriSpeech-layout folder: each utterance's words name it (``UTT <id>``), so a text tells what played."""
    rng = np.random.default_rng(7)
    for spk in SPEAKERS:
        chapter = root / spk / "100"
        chapter.mkdir(parents=True)
        lines = []
        for k in range(per_speaker):
            utt = f"{spk}-100-{k:04d}"
            speech = speechlike(float(rng.uniform(1.5, 3.0)), RATE, rng)
            pad = np.zeros(int(PAD * RATE), dtype=np.float32)
            sf.write(chapter / f"{utt}.flac", np.concatenate([pad, speech, pad]), RATE, subtype="PCM_16")
            lines.append(f"{utt} UTT{utt.replace('-', '')}\n")
        (chapter / f"{spk}-100.trans.txt").write_text("".join(lines))
    return root


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    return write_speech_tree(tmp_path_factory.mktemp("speech") / "test-clean")


@pytest.fixture(scope="module")
def noise(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(3)
    for k in range(3):
        sf.write(folder / f"n{k}.wav", (0.05 * rng.standard_normal(2 * RATE)).astype(np.float32), RATE)
    return folder


OPTIONS = ConversationOptions(recordings=3, minutes=0.5, speakers=(2, 4), overlap=0.25)


def build(speech: Path, out: Path, noise: Path | None = None, seed: int = 0, options=OPTIONS) -> Path:
    make_conversations(read_speech([speech]), out, options, noise=noise, seed=seed)
    return out


@pytest.fixture(scope="module")
def conv(speech, noise, tmp_path_factory) -> Path:
    return build(speech, tmp_path_factory.mktemp("conv") / "test_conv", noise)


def int16(entry: str) -> np.ndarray:
    samples, rate = sf.read(entry, dtype="int16")
    assert rate == RATE
    return samples.astype(np.int64)


def turns_of(data: Path, name: str = "rttm") -> dict[str, list[Turn]]:
    reader = read_rttm if name == "rttm" else read_segments
    return reader(str(data / name), set(read_table(data / "utt2reco").values()), "utt2reco")


def recordings(data: Path) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for utt, reco in read_table(data / "utt2reco").items():
        rows.setdefault(reco, []).append(utt)
    return rows


def test_layout_validates_and_rows_are_speakers_of_recordings(conv):
    assert validate_data_dir(conv, require_enroll=True) == []
    tables = read_data_dir(conv)
    assert set(tables) >= {"wav.scp", "spk1.scp", "enroll.scp", "utt2spk", "utt2reco", "utt2dur", "noise1.scp"}
    rows = recordings(conv)
    assert len(rows) == 3
    for reco, utts in rows.items():
        assert 2 <= len(utts) <= 4
        assert len({tables["wav.scp"][u] for u in utts}) == 1  # the whole recording, once per row
        assert all(u == f"{tables['utt2spk'][u]}-{reco}" for u in utts)
        seconds = float(tables["utt2dur"][utts[0]])
        assert 0.5 * 60 <= seconds <= 0.5 * 60 + 5  # about --minutes: ends with the turn that passes it


def test_same_seed_same_bytes_other_seed_differs(conv, speech, noise, tmp_path):
    again = build(speech, tmp_path / "again", noise)
    other = build(speech, tmp_path / "other", noise, seed=1)
    files = sorted(p.relative_to(conv) for p in conv.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        a, b = (conv / name).read_bytes(), (again / name).read_bytes()
        assert a.replace(str(conv).encode(), b"") == b.replace(str(again).encode(), b""), name
    assert (conv / "rttm").read_text() != (other / "rttm").read_text()


def test_tracks_and_noise_sum_to_the_mixture_exactly(conv):
    tables = read_data_dir(conv)
    for utts in recordings(conv).values():
        mixture = int16(tables["wav.scp"][utts[0]])
        parts = [int16(tables["spk1.scp"][u]) for u in utts] + [int16(tables["noise1.scp"][utts[0]])]
        assert all(len(p) == len(mixture) for p in parts)
        np.testing.assert_array_equal(sum(parts), mixture)
        assert np.abs(parts[-1]).max() > 0  # the noise is really there


def test_rttm_turns_are_where_each_track_speaks(conv):
    tables = read_data_dir(conv)
    turns = turns_of(conv)
    slack = 20  # samples: onset and duration are each rounded to 1 ms (16 samples), so the end is within 2 ms
    for utt, track_path in tables["spk1.scp"].items():
        reco, speaker = tables["utt2reco"][utt], tables["utt2spk"][utt]
        track = int16(track_path)
        mine = [t for t in turns[reco] if t.speaker == speaker]
        assert mine
        inside = np.zeros(len(track), dtype=bool)
        for t in mine:
            start, end = round(t.onset * RATE), round(t.end * RATE)
            inside[max(0, start - slack) : end + slack] = True
            assert np.any(track[start : start + slack] != 0) and np.any(track[end - slack : end] != 0)
        assert not np.any(track[~inside]), f"{utt}: sound outside its turns"


def test_segments_agree_with_rttm(conv):
    rttm, segments = turns_of(conv), turns_of(conv, "segments")
    assert sorted(rttm) == sorted(segments) == sorted(recordings(conv))
    for reco in rttm:
        in_rttm = sorted(rttm[reco], key=lambda t: t.onset)
        in_segments = sorted(segments[reco], key=lambda t: t.onset)
        assert [t.speaker for t in in_rttm] == [t.speaker for t in in_segments]
        # the RTTM's end is onset + duration, each rounded to 1 ms
        np.testing.assert_allclose([(t.onset, t.end) for t in in_rttm], [(t.onset, t.end) for t in in_segments],
                                   atol=0.0015)  # fmt: skip
    for line in (conv / "segments").read_text().splitlines():  # <recording>-<speaker>-<start cs>-<end cs> ...
        segment, reco, start_s, end_s = line.split()
        recording, speaker, start, end = segment.split("-")
        assert recording == reco and speaker in read_table(conv / "utt2spk").values() and len(start) == len(end) == 7
        assert abs(int(start) - 100 * float(start_s)) <= 1 and abs(int(end) - 100 * float(end_s)) <= 1


@pytest.mark.parametrize("overlap", [0.0, 0.1, 0.3])
def test_measured_overlap_is_the_asked_one(speech, tmp_path, overlap):
    options = ConversationOptions(recordings=2, minutes=0.75, speakers=(2, 3), overlap=overlap)
    out = build(speech, tmp_path / "c", options=options)
    for reco, turns in turns_of(out).items():
        ratio = measured_overlap(turns)
        assert abs(ratio - overlap) <= 0.05, (reco, ratio)
        if overlap == 0:
            assert ratio == 0
        # never three at once: at every turn's start at most one other turn is running
        for t in turns:
            running = [o for o in turns if o is not t and o.onset <= t.onset < o.end - 0.002]
            assert len(running) <= 1


def source_of(enrollment: np.ndarray, speech: Path) -> str:
    """The utterance an enrollment clip is (a scaled copy): the same length and a correlation of 1."""
    for flac in speech.rglob("*.flac"):
        source = sf.read(flac, dtype="float64")[0]
        if len(source) == len(enrollment):
            correlation = np.dot(source, enrollment) / (np.linalg.norm(source) * np.linalg.norm(enrollment))
            if correlation > 0.999:
                return flac.stem
    raise AssertionError("enrollment is no utterance of the pool")


def test_enrollment_is_the_speaker_but_not_from_the_recording(conv, speech):
    tables = read_data_dir(conv)
    for utt, entry in tables["enroll.scp"].items():
        enrolled = source_of(sf.read(entry, dtype="float64")[0], speech)
        assert enrolled.split("-")[0] == tables["utt2spk"][utt]
        played = tables["text"][utt].split()
        assert played and f"UTT{enrolled.replace('-', '')}" not in played


def test_bad_rttm_and_segments_are_one_line_naming_file_and_line(conv, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(conv, bad)
    lines = (bad / "rttm").read_text().splitlines(keepends=True)
    reco = lines[0].split()[1]
    lines[2] = lines[2].replace(reco, "conv9999")
    (bad / "rttm").write_text("".join(lines))
    problems = validate_data_dir(bad, check_audio=False)
    assert problems == [f"{bad}/rttm:3: recording 'conv9999' is not in {bad}/utt2reco"]

    lines[2] = f"SPEAKER {reco} 1 1000.000 2.000 <NA> <NA> {lines[0].split()[7]} <NA> <NA>\n"
    (bad / "rttm").write_text("".join(lines))
    segments = (bad / "segments").read_text().splitlines(keepends=True)
    first = segments[0].split()
    segments[0] = f"{first[0]} {first[1]} {first[2]} 999.5\n"
    (bad / "segments").write_text("".join(segments))
    problems = validate_data_dir(bad)
    assert len(problems) == 2
    assert problems[0].startswith(f"{bad}/rttm:3: turn of ") and "ends at 1002.000 s, after the end" in problems[0]
    assert problems[1].startswith(f"{bad}/segments:1: turn of ") and "ends at 999.500 s" in problems[1]

    result = CliRunner().invoke(cli, ["data", "validate", str(bad)])
    assert result.exit_code == 1 and "rttm:3" in result.output


def test_enroll_leaves_a_conversation_set_alone(conv):
    before = (conv / "enroll.scp").read_bytes()
    result = CliRunner().invoke(cli, ["enroll", str(conv)])
    assert isinstance(result.exception, TsekitError) and "brings its own enroll.scp" in str(result.exception)
    assert (conv / "enroll.scp").read_bytes() == before


def test_speech_running_out_is_an_error_and_leaves_nothing(speech, tmp_path):
    options = ConversationOptions(recordings=1, minutes=5.0, speakers=(2, 2), overlap=0.0)
    with pytest.raises(TsekitError, match="speech ran out"):
        build(speech, tmp_path / "long", options=options)
    assert not (tmp_path / "long").exists()


def test_cli_writes_the_same_set(conv, speech, noise, tmp_path):
    result = CliRunner().invoke(cli, ["prepare", "conversations", str(tmp_path / "c"), "--speech", str(speech),
                                      "--noise", str(noise), "--recordings", "3", "--minutes", "0.5",
                                      "--overlap", "0.25"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "conv0003" in result.output
    assert (tmp_path / "c" / "rttm").read_text() == (conv / "rttm").read_text()


# ---------------------------------------------------------------- absent target


@pytest.fixture(scope="module")
def test_set(tmp_path_factory) -> Path:
    from tsekit.corpora.librimix import prepare_libri2mix

    root = tmp_path_factory.mktemp("libri2mix")
    make_libri2mix_tree(root / "Libri2Mix", splits=("test",), per_split=6)
    prepare_libri2mix(root / "Libri2Mix", root / "data", splits=("test",))
    return root / "data" / "test"


def test_absent_set_enrolls_a_speaker_not_in_the_mixture(test_set, tmp_path):
    result = CliRunner().invoke(cli, ["prepare", "absent", str(test_set), str(tmp_path / "absent"), "--seed", "1"])
    assert result.exit_code == 0, result.output
    absent = tmp_path / "absent"
    assert validate_data_dir(absent, require_enroll=True) == []
    assert not (absent / "spk1.scp").exists()
    source, tables = read_data_dir(test_set), read_data_dir(absent)
    mixtures = set(source["wav.scp"].values())
    assert sorted(tables["wav.scp"].values()) == sorted(mixtures)  # every mixture once
    target_speaker = {path: source["utt2spk"][u] for u, path in source["spk1.scp"].items()}
    for utt, mixture in tables["wav.scp"].items():
        present = {source["utt2spk"][u] for u, m in source["wav.scp"].items() if m == mixture}
        assert tables["utt2spk"][utt] not in present
        assert target_speaker[tables["enroll.scp"][utt]] == tables["utt2spk"][utt]  # a clip of that speaker
        assert tables["utt2present"][utt] == "0"
    again = tmp_path / "again"
    CliRunner().invoke(cli, ["prepare", "absent", str(test_set), str(again), "--seed", "1"])
    assert (again / "enroll.scp").read_text() == (absent / "enroll.scp").read_text()


def test_presence_rules_of_validation(test_set, tmp_path):
    import shutil

    absent = tmp_path / "absent"
    CliRunner().invoke(cli, ["prepare", "absent", str(test_set), str(absent)])
    shutil.copy(test_set / "spk1.scp", absent / "spk1.scp")  # targets of rows whose target is absent
    problems = validate_data_dir(absent, check_audio=False)
    assert len(problems) == 1 and "spk1.scp" in problems[0] and "absent" in problems[0]
    (absent / "spk1.scp").unlink()
    utt2present = absent / "utt2present"
    utt2present.write_text(utt2present.read_text().replace(" 0\n", " 1\n", 1))  # present, without a target
    problems = validate_data_dir(absent, check_audio=False)
    assert problems == [f"{absent}/spk1.scp: missing"]
    result = CliRunner().invoke(cli, ["enroll", str(absent)])
    assert isinstance(result.exception, TsekitError) and "brings its own enroll.scp" in str(result.exception)


def posneg_records(data: Path) -> dict[str, dict[str, str]]:
    header, *lines = (data / "enroll_posneg.tsv").read_text().splitlines()
    rows = [line.split("\t") for line in lines]
    return {fields[0]: dict(zip(header.split("\t"), fields, strict=True)) for fields in rows}


def test_posneg_clips_of_the_sets_that_bring_their_own_enrollments(test_set, conv, tmp_path):
    # a pos/neg system reads enroll_pos/enroll_neg of every test set: the conversation and absent-target sets keep
    # their enrollments and take the interferers from the clean targets of the set they were built from
    import shutil

    absent = tmp_path / "absent"
    CliRunner().invoke(cli, ["prepare", "absent", str(test_set), str(absent)])
    shutil.copytree(conv, tmp_path / "conv")
    source = read_data_dir(test_set)
    for data in (absent, tmp_path / "conv"):
        before = (data / "enroll.scp").read_bytes()
        result = CliRunner().invoke(cli, ["enroll", str(data), "--posneg"])
        assert isinstance(result.exception, TsekitError) and "--posneg-sources" in str(result.exception)
        assert not (data / "enroll_pos.scp").exists()
        result = CliRunner().invoke(cli, ["enroll", str(data), "--posneg", "--posneg-sources", str(test_set)])
        assert result.exit_code == 0, result.output
        assert (data / "enroll.scp").read_bytes() == before and not (data / "utt2enroll").exists()
        assert validate_data_dir(data, require_enroll=True) == []
        tables, records = read_data_dir(data), posneg_records(data)
        assert set(tables["enroll_pos.scp"]) == set(tables["enroll_neg.scp"]) == set(records) == set(tables["wav.scp"])
        for utt, record in records.items():
            assert record["enroll"] == tables["enroll.scp"][utt]  # the set's own enrollment is in the positive
            assert source["utt2spk"][record["interferer"]] != tables["utt2spk"][utt]
            assert source["utt2spk"][record["negative"]] == source["utt2spk"][record["interferer"]]
            positive, negative = sf.read(tables["enroll_pos.scp"][utt])[0], sf.read(tables["enroll_neg.scp"][utt])[0]
            assert len(positive) == len(negative) == sf.info(tables["enroll.scp"][utt]).frames
    # an absent row's interferer is a speaker of its mixture only when no other speaker is left
    tables, records = read_data_dir(absent), posneg_records(absent)
    for utt, record in records.items():
        mixture = tables["wav.scp"][utt]
        present = {source["utt2spk"][u] for u, m in source["wav.scp"].items() if m == mixture}
        others = set(source["utt2spk"].values()) - present - {tables["utt2spk"][utt]}
        assert (source["utt2spk"][record["interferer"]] in present) == (not others)
