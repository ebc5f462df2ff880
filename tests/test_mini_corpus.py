"""The mini corpus (tsekit prepare mini-libri2mix): layout, audio, speakers, determinism, resuming, 3 sources."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tsekit import TsekitError
from tsekit.corpora import mini_librimix
from tsekit.corpora.mini_librimix import corpus_size, make_mini_libri2mix
from tsekit.corpora.sentences import make_sentence
from tsekit.corpora.tts import BASE_VOICES, Speaker, missing_packages, synthesize
from tsekit.data.table import read_table

pytestmark = [
    pytest.mark.tts,
    pytest.mark.skipif(bool(missing_packages()), reason="TTS voices missing (tools/system_packages.sh)"),
]

SPLITS = ("train-100", "dev", "test")
FOLDERS = {"mix_clean", "mix_both", "mix_single", "s1", "s2", "noise"}
COLUMNS = {
    "mix_clean": ["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length"],
    "mix_both": ["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "noise_path", "length"],
    "mix_single": ["mixture_ID", "mixture_path", "source_1_path", "noise_path", "length"],
}
LIBRISPEECH_SPLIT = {"train-100": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
UTT = r"\d+-\d+-\d{4}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The tiny corpus, built through the command line once for the whole module."""
    from click.testing import CliRunner

    from tsekit.cli import cli

    out = tmp_path_factory.mktemp("mini") / "corpus"
    result = CliRunner().invoke(cli, ["prepare", "mini-libri2mix", str(out), "--size", "tiny", "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert "train-100" in result.output and str(out) in result.output
    return out


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def mixtures(corpus: Path, mode: str, split: str, kind: str = "mix_both") -> list[dict[str, str]]:
    return read_csv(corpus / "Libri2Mix" / "wav16k" / mode / "metadata" / f"mixture_{split}_{kind}.csv")[1]


def int16(path: str | Path) -> np.ndarray:
    samples, rate = sf.read(path, dtype="int16")
    assert rate == 16000
    return samples.astype(np.int64)


def source_flac(corpus: Path, split: str, utt: str) -> Path:
    spk, chapter, _ = utt.split("-")
    return corpus / "LibriSpeech" / LIBRISPEECH_SPLIT[split] / spk / chapter / f"{utt}.flac"


def test_layout_and_csv_columns(corpus):
    root = corpus / "Libri2Mix" / "wav16k"
    assert sorted(p.name for p in root.iterdir()) == ["max", "min"]
    for mode in ("min", "max"):
        assert {p.name for p in (root / mode).iterdir()} == {*SPLITS, "metadata"}
        expected_csvs = {f"{kind}_{split}_{mix}.csv" for kind in ("mixture", "metrics")
                         for split in SPLITS for mix in COLUMNS}  # fmt: skip
        assert {p.name for p in (root / mode / "metadata").iterdir()} == expected_csvs
        for split in SPLITS:
            assert {p.name for p in (root / mode / split).iterdir()} == FOLDERS
            ids = None
            for kind, columns in COLUMNS.items():
                header, rows = read_csv(root / mode / "metadata" / f"mixture_{split}_{kind}.csv")
                assert header == columns
                assert rows, f"{mode}/{split}/{kind} lists no mixtures"
                for row in rows:
                    assert re.fullmatch(f"{UTT}_{UTT}", row["mixture_ID"])
                    for column in columns[1:-1]:
                        path = Path(row[column])
                        assert path.is_absolute() and path.is_file(), path
                        assert path.name == row["mixture_ID"] + ".wav"
                        assert path.parent.parent == root / mode / split
                        assert sf.info(path).frames == int(row["length"])
                    assert Path(row["mixture_path"]).parent.name == kind
                kind_ids = [row["mixture_ID"] for row in rows]
                assert ids is None or kind_ids == ids  # every mixture type lists the same mixtures
                ids = kind_ids
            for folder in FOLDERS:  # and nothing else lies in the folders
                assert sorted(p.stem for p in (root / mode / split / folder).iterdir()) == sorted(ids)
    header, rows = read_csv(corpus / "Libri2Mix" / "metadata" / "libri2mix_dev-clean.csv")
    assert header == ["mixture_ID", "source_1_path", "source_1_gain", "source_2_path", "source_2_gain",
                      "noise_path", "noise_gain"]  # fmt: skip
    for row in rows:
        assert (corpus / "LibriSpeech" / row["source_1_path"]).is_file()
        assert (corpus / "Noise" / row["noise_path"]).is_file()
        assert float(row["source_1_gain"]) > 0 and float(row["noise_gain"]) > 0


def test_mixtures_are_sums_of_their_parts(corpus):
    for mode in ("min", "max"):
        for split in SPLITS:
            for row in mixtures(corpus, mode, split):
                s1, s2, noise = (int16(row[c]) for c in ("source_1_path", "source_2_path", "noise_path"))
                both = int16(row["mixture_path"])
                clean = int16(row["mixture_path"].replace("/mix_both/", "/mix_clean/"))
                single = int16(row["mixture_path"].replace("/mix_both/", "/mix_single/"))
                # each file is rounded to 16 bits on its own: at most half a step per part
                assert np.max(np.abs(clean - s1 - s2)) <= 1
                assert np.max(np.abs(both - s1 - s2 - noise)) <= 2
                assert np.max(np.abs(single - s1 - noise)) <= 1
                # clip protection as LibriMix: nothing peaks above 0.9
                assert max(np.max(np.abs(x)) for x in (both, clean, single, s1, s2)) <= 0.9 * 32768 + 2
                for part in (s1, s2, noise):
                    assert np.sqrt(np.mean(part.astype(float) ** 2)) > 30  # not silent
                # noise is quieter than speech (LibriMix's -38..-30 vs -33..-25 dB), but present
                assert np.mean(noise.astype(float) ** 2) < np.mean((s1 + s2).astype(float) ** 2)


def test_min_truncates_and_max_pads(corpus):
    for split in SPLITS:
        max_rows = {row["mixture_ID"]: row for row in mixtures(corpus, "max", split)}
        for row in mixtures(corpus, "min", split):
            utt1, utt2 = row["mixture_ID"].split("_")
            n1, n2 = (sf.info(source_flac(corpus, split, u)).frames for u in (utt1, utt2))
            full = max_rows[row["mixture_ID"]]
            assert int(row["length"]) == min(n1, n2)
            assert int(full["length"]) == max(n1, n2)
            long_s1, long_s2 = int16(full["source_1_path"]), int16(full["source_2_path"])
            short = long_s1 if n1 < n2 else long_s2
            assert not short[min(n1, n2) :].any()  # zero padding at the end
            # the same gains in both modes: min mode is max mode cut short
            assert np.array_equal(int16(row["source_1_path"]), long_s1[: min(n1, n2)])
            assert np.array_equal(int16(row["noise_path"]), int16(full["noise_path"])[: min(n1, n2)])


def speakers_of(corpus: Path, split: str) -> set[str]:
    ids = [row["mixture_ID"] for row in mixtures(corpus, "min", split)]
    return {utt.split("-")[0] for mixture_id in ids for utt in mixture_id.split("_")}


def test_speakers_are_disjoint_across_splits(corpus):
    train, dev, test = (speakers_of(corpus, split) for split in SPLITS)
    assert len(train) >= 2 and len(dev) >= 2 and len(test) >= 2
    assert not train & test and not dev & test and not train & dev
    # SPEAKERS.TXT names each speaker's voice; no two speakers share (voice, pitch shift)
    lines = (corpus / "LibriSpeech" / "SPEAKERS.TXT").read_text().splitlines()[1:]
    table = {line.split("|")[0].strip(): [f.strip() for f in line.split("|")] for line in lines}
    assert set(table) == train | dev | test
    voices = [" ".join(fields[4].split()[:3]) for fields in table.values()]
    assert len(set(voices)) == len(voices)
    for split, speakers in zip(SPLITS, (train, dev, test), strict=True):
        assert {table[s][2] for s in speakers} == {LIBRISPEECH_SPLIT[split]}


def test_every_source_has_a_transcript(corpus):
    flacs = sorted((corpus / "LibriSpeech").rglob("*.flac"))
    texts = {}
    for path in (corpus / "LibriSpeech").rglob("*.trans.txt"):
        for line in path.read_text().splitlines():
            utt, words = line.split(" ", 1)
            assert path.name == "-".join(utt.split("-")[:2]) + ".trans.txt"
            texts[utt] = words
    assert sorted(texts) == sorted(p.stem for p in flacs)
    for words in texts.values():
        assert re.fullmatch(r"[A-Z]+( [A-Z]+)*", words), words
    for path in flacs:
        info = sf.info(path)
        assert info.samplerate == 16000
        assert 1.5 <= info.frames / 16000 <= 5.0
    for split in SPLITS:
        for row in mixtures(corpus, "min", split):
            for utt in row["mixture_ID"].split("_"):
                assert utt in texts and source_flac(corpus, split, utt).is_file()


def median_f0(samples: np.ndarray, rate: int = 16000) -> float:
    """Median pitch (Hz) of the loud frames, by normalised autocorrelation."""
    frame, hop, low, high = int(0.04 * rate), int(0.01 * rate), int(rate / 400), int(rate / 60)
    starts = range(0, len(samples) - frame, hop)
    loud = 0.1 * max(np.mean(samples[s : s + frame] ** 2) for s in starts)
    f0s = []
    for s in starts:
        segment = samples[s : s + frame] - np.mean(samples[s : s + frame])
        if np.mean(segment**2) < loud:
            continue
        corr = np.correlate(segment, segment, "full")[frame - 1 :]
        corr = corr / corr[0]
        best = np.max(corr[low:high])
        if best > 0.5:  # voiced: first lag nearly as periodic as the best one
            f0s.append(rate / (low + int(np.argmax(corr[low:high] >= 0.85 * best))))
    return float(np.median(f0s))


def long_term_spectrum(samples: np.ndarray) -> np.ndarray:
    """Mean power in 24 linear bands (dB), level-normalised."""
    frames = np.lib.stride_tricks.sliding_window_view(samples, 512)[::256] * np.hanning(512)
    power = np.mean(np.abs(np.fft.rfft(frames)) ** 2, axis=0)
    bands = 10 * np.log10(np.array([band.mean() for band in np.array_split(power[1:], 24)]) + 1e-12)
    return bands - bands.mean()


def test_pitch_shift_moves_f0_by_the_asked_interval():
    text = "THE OLD CART STOPPED AT THE STATION BEFORE SUPPER"
    voice = BASE_VOICES[0]
    f0 = {cents: median_f0(synthesize(text, Speaker("1", voice, cents, 1.0))) for cents in (-300, 0, 300)}
    assert f0[-300] < f0[0] < f0[300]
    assert f0[300] / f0[-300] == pytest.approx(2 ** (600 / 1200), rel=0.08)
    slow = synthesize(text, Speaker("1", voice, 0, 0.9))
    fast = synthesize(text, Speaker("1", voice, 0, 1.1))
    assert len(slow) / len(fast) == pytest.approx(1.1 / 0.9, rel=0.1)


def test_base_voices_sound_different():
    text = "WE WAITED IN THE KITCHEN UNTIL THE KETTLE SANG"
    spectra = {v.label: long_term_spectrum(synthesize(text, Speaker("1", v, 0, 1.0))) for v in BASE_VOICES}
    again = long_term_spectrum(synthesize(text, Speaker("1", BASE_VOICES[0], 0, 1.0)))
    assert np.array_equal(again, spectra[BASE_VOICES[0].label])  # deterministic synthesis
    labels = sorted(spectra)
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            rms_db = np.sqrt(np.mean((spectra[a] - spectra[b]) ** 2))
            assert rms_db > 1.0, f"{a} and {b} have nearly the same long-term spectrum"


SAMPLE_FILES = (
    "Libri2Mix/wav16k/min/{split}/mix_both/{id}.wav",
    "Libri2Mix/wav16k/max/{split}/s2/{id}.wav",
    "Libri2Mix/wav16k/max/{split}/noise/{id}.wav",
    "Noise/{noise}/{id}.wav",
    "LibriSpeech/{ls}/{spk}/{chapter}/{utt}.flac",
    "LibriSpeech/{ls}/{spk}/{chapter}/{spk}-{chapter}.trans.txt",
    "Libri2Mix/metadata/libri2mix_{ls}.csv",
    # a mixture whose raw noise is kept: its gains must not depend on whether the noise was just made
    "Libri2Mix/wav16k/min/{split}/mix_single/{id2}.wav",
)


def sample_files(corpus: Path) -> list[Path]:
    files = []
    for split, noise in zip(SPLITS, ("tr", "cv", "tt"), strict=True):
        mixture_id, id2 = (row["mixture_ID"] for row in mixtures(corpus, "min", split)[:2])
        utt = mixture_id.split("_")[0]
        spk, chapter, _ = utt.split("-")
        fields = dict(split=split, id=mixture_id, id2=id2, noise=noise, ls=LIBRISPEECH_SPLIT[split],
                      utt=utt, spk=spk, chapter=chapter)  # fmt: skip
        files += [Path(pattern.format(**fields)) for pattern in SAMPLE_FILES]
    return files


@pytest.fixture(scope="module")
def rebuilt(corpus, tmp_path_factory) -> Path:
    """A second build with the same seed, in one process (the serial path)."""
    out = tmp_path_factory.mktemp("mini_again") / "corpus"
    make_mini_libri2mix(out, size="tiny", seed=0, jobs=1)
    return out


def test_same_seed_same_bytes_other_seed_differs(corpus, rebuilt, tmp_path):
    for name in sample_files(corpus):
        assert (corpus / name).read_bytes() == (rebuilt / name).read_bytes(), name
    other = tmp_path / "seed1"
    make_mini_libri2mix(other, size="tiny", seed=1, jobs=2)
    assert speakers_of(other, "test") != speakers_of(corpus, "test")
    mix_a = sorted((corpus / "Libri2Mix/wav16k/min/test/mix_both").iterdir())[0].read_bytes()
    mix_b = sorted((other / "Libri2Mix/wav16k/min/test/mix_both").iterdir())[0].read_bytes()
    assert mix_a != mix_b


def test_resume_recreates_exactly_the_deleted_files(rebuilt):
    files = sample_files(rebuilt)
    before = {name: (rebuilt / name).read_bytes() for name in files}
    untouched = sorted((rebuilt / "Libri2Mix/wav16k/max/train-100/mix_clean").iterdir())
    stamps = {path: path.stat().st_mtime_ns for path in untouched}
    for name in files:
        (rebuilt / name).unlink()
    stale = rebuilt / "Libri2Mix/wav16k/min/dev/s1/.half-written.wav.tmp"
    stale.write_bytes(b"killed mid-write")
    make_mini_libri2mix(rebuilt, size="tiny", seed=0, jobs=1)
    for name in files:
        assert (rebuilt / name).read_bytes() == before[name], name
    assert {path: path.stat().st_mtime_ns for path in untouched} == stamps  # done work is kept
    assert not stale.exists()
    with pytest.raises(TsekitError, match="seed"):
        make_mini_libri2mix(rebuilt, size="tiny", seed=3, jobs=1)


def test_prepare_libri2mix_reads_the_mini_corpus(corpus, tmp_path):
    from tsekit.corpora.librimix import prepare_libri2mix
    from tsekit.data.datadir import read_data_dir

    prepare_libri2mix(corpus / "Libri2Mix", tmp_path / "data", mixture="mix_both",
                      librispeech=corpus / "LibriSpeech")  # fmt: skip
    prepare_libri2mix(corpus / "Libri2Mix", tmp_path / "max", mixture="mix_both", mode="max",
                      librispeech=corpus / "LibriSpeech")  # fmt: skip
    for split in SPLITS:
        tables = read_data_dir(tmp_path / "data" / split)
        assert len(tables["wav.scp"]) == 2 * len(mixtures(corpus, "min", split))
        # min mode: a transcript for exactly the targets as long as their LibriSpeech utterance; max: for all
        whole = {utt for utt, target in tables["spk1.scp"].items()
                 if sf.info(target).frames == sf.info(source_flac(corpus, split, tables["utt2uniq"][utt])).frames}
        assert set(tables["text"]) == whole and 0 < len(whole) < len(tables["wav.scp"])
        assert set(read_data_dir(tmp_path / "max" / split)["text"]) == set(tables["wav.scp"])
        assert set(tables["utt2spk"].values()) == speakers_of(corpus, split)
        assert "noise1.scp" in tables


# ---------------------------------------------------------------------------------------------- 3 sources


@pytest.fixture(scope="module")
def corpus3(tmp_path_factory) -> Path:
    """The tiny corpus with three speakers per mixture, through the command line."""
    from click.testing import CliRunner

    from tsekit.cli import cli

    out = tmp_path_factory.mktemp("mini3") / "corpus"
    result = CliRunner().invoke(cli, ["prepare", "mini-libri2mix", str(out), "--size", "tiny", "--jobs", "2",
                                      "--num-sources", "3"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"tsekit prepare libri3mix {out / 'Libri3Mix'} DATA" in result.output
    return out


def test_three_sources_layout(corpus3):
    assert sorted(p.name for p in corpus3.iterdir()) == [".mini_libri2mix", "Libri3Mix", "LibriSpeech", "Noise"]
    root = corpus3 / "Libri3Mix" / "wav16k"
    columns = {
        "mix_clean": ["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "source_3_path", "length"],
        "mix_both": ["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "source_3_path",
                     "noise_path", "length"],
        "mix_single": COLUMNS["mix_single"],  # source 1 + noise, as in Libri2Mix
    }  # fmt: skip
    for mode in ("min", "max"):
        for split in SPLITS:
            assert {p.name for p in (root / mode / split).iterdir()} == FOLDERS | {"s3"}
            ids = None
            for kind, expected in columns.items():
                header, rows = read_csv(root / mode / "metadata" / f"mixture_{split}_{kind}.csv")
                assert header == expected and rows
                for row in rows:
                    assert re.fullmatch(f"{UTT}_{UTT}_{UTT}", row["mixture_ID"])
                    for column in expected[1:-1]:
                        path = Path(row[column])
                        assert path.is_file() and path.parent.parent == root / mode / split
                        assert sf.info(path).frames == int(row["length"])
                assert ids is None or [row["mixture_ID"] for row in rows] == ids
                ids = [row["mixture_ID"] for row in rows]
            for folder in FOLDERS | {"s3"}:
                assert sorted(p.stem for p in (root / mode / split / folder).iterdir()) == sorted(ids)
            header, _ = read_csv(root / mode / "metadata" / f"metrics_{split}_mix_both.csv")
            assert header == ["mixture_ID", "source_1_SNR", "source_2_SNR", "source_3_SNR", "noise_SNR"]
    header, rows = read_csv(corpus3 / "Libri3Mix" / "metadata" / "libri3mix_test-clean.csv")
    assert header == ["mixture_ID", "source_1_path", "source_1_gain", "source_2_path", "source_2_gain",
                      "source_3_path", "source_3_gain", "noise_path", "noise_gain"]  # fmt: skip
    for row in rows:
        for k in (1, 2, 3):
            assert row[f"source_{k}_path"] == str(source_flac(corpus3, "test", row["mixture_ID"].split("_")[k - 1])
                                                  .relative_to(corpus3 / "LibriSpeech"))  # fmt: skip


def test_three_sources_sum_to_the_mixtures_and_are_distinct_speakers(corpus3):
    for mode in ("min", "max"):
        for split in SPLITS:
            path = corpus3 / "Libri3Mix" / "wav16k" / mode / "metadata" / f"mixture_{split}_mix_both.csv"
            for row in read_csv(path)[1]:
                utts = row["mixture_ID"].split("_")
                assert len({utt.split("-")[0] for utt in utts}) == 3
                s1, s2, s3, noise = (int16(row[c]) for c in ("source_1_path", "source_2_path", "source_3_path",
                                                             "noise_path"))  # fmt: skip
                clean = int16(row["mixture_path"].replace("/mix_both/", "/mix_clean/"))
                single = int16(row["mixture_path"].replace("/mix_both/", "/mix_single/"))
                # libsndfile floors each file to 16 bits on its own (less than a step down): a mixture of
                # n parts minus its parts lies in (-1, n) steps
                assert np.max(np.abs(clean - s1 - s2 - s3)) <= 2
                assert np.max(np.abs(int16(row["mixture_path"]) - s1 - s2 - s3 - noise)) <= 3
                assert np.max(np.abs(single - s1 - noise)) <= 1
                assert max(np.max(np.abs(x)) for x in (clean, s1, s2, s3)) <= 0.9 * 32768 + 2
                lengths = [sf.info(source_flac(corpus3, split, utt)).frames for utt in utts]
                assert len(s3) == int(row["length"]) == (min if mode == "min" else max)(lengths)


def test_prepare_libri3mix_reads_the_three_source_corpus(corpus3, tmp_path):
    from click.testing import CliRunner

    from tsekit.cli import cli

    data = tmp_path / "data"
    result = CliRunner().invoke(cli, ["prepare", "libri3mix", str(corpus3 / "Libri3Mix"), str(data),
                                      "--mixture", "mix_both", "--librispeech", str(corpus3 / "LibriSpeech")])
    assert result.exit_code == 0, result.output
    for split in SPLITS:
        result = CliRunner().invoke(cli, ["data", "validate", str(data / split)])
        assert result.exit_code == 0, result.output
        wav = (data / split / "wav.scp").read_text().splitlines()
        ids = [row["mixture_ID"] for row in read_csv(
            corpus3 / "Libri3Mix/wav16k/min/metadata" / f"mixture_{split}_mix_both.csv")[1]]  # fmt: skip
        assert len(wav) == 3 * len(ids)
        assert {line.split()[0].rsplit("-", 1)[1] for line in wav} == {"s1", "s2", "s3"}
        assert 0 < len((data / split / "text").read_text().splitlines()) < len(wav)  # min mode: cut targets have none


def test_grouping_is_seeded_and_two_source_groups_unchanged():
    size = corpus_size("tiny")

    def groups(seed: int, num_sources: int) -> list[str]:
        speakers = mini_librimix.plan_speakers(seed, size)["train-100"]
        utts = mini_librimix.plan_utterances(seed, speakers, 2, Path("/unused"))
        rng = np.random.default_rng([seed, 4, 0])
        found = mini_librimix.group_utterances(rng, utts, size.train_mixtures, num_sources)
        return ["_".join(u.id for u in group) for group in found]

    # the tiny corpus's training mixtures as made before 3-source corpora existed: pairing must not change
    assert groups(0, 2) == ["7137-12734-0000_3775-188879-0000", "7137-12734-0001_3177-93065-0000",
                            "3775-188879-0001_3177-93065-0001", "3177-93065-0001_3775-188879-0000"]  # fmt: skip
    three = groups(0, 3)
    assert three == groups(0, 3) and three != groups(1, 3)
    assert len(set(three)) == len(three) == size.train_mixtures
    for mixture_id in three:
        assert len({utt.split("-")[0] for utt in mixture_id.split("_")}) == 3
    with pytest.raises(TsekitError, match="speakers"):
        groups(0, 4)  # tiny has three training speakers


def test_other_number_of_sources_is_not_resumed_into(corpus):
    with pytest.raises(TsekitError, match="num-sources"):
        make_mini_libri2mix(corpus, size="tiny", seed=0, jobs=1, num_sources=3)
    with pytest.raises(TsekitError, match="2 or 3"):
        make_mini_libri2mix(corpus, size="tiny", num_sources=4)
    assert not (corpus / "Libri3Mix").exists()
    assert corpus_size(2, num_sources=3).train_speakers == 3  # every mixture needs three speakers


def test_missing_tts_tools_give_one_line_error(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no flite, festival, espeak-ng or sox
    code = "import sys; from tsekit.cli import main; sys.argv[0] = 'tsekit'; main()"
    command = [sys.executable, "-c", code, "prepare", "mini-libri2mix", str(tmp_path / "out")]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tsekit: error:")
    for package in ("flite", "festival", "espeak-ng", "sox", "tools/system_packages.sh"):
        assert package in lines[0]


def test_sizes_and_sentences():
    assert corpus_size("tiny") == mini_librimix.PRESETS["tiny"]
    assert corpus_size("40").train_mixtures == 40 and corpus_size(40).eval_mixtures == 8
    assert corpus_size(2).train_speakers == 2 and corpus_size(2).eval_mixtures == 3
    with pytest.raises(TsekitError, match="size"):
        corpus_size("huge")
    with pytest.raises(TsekitError, match="speakers"):
        mini_librimix.plan_speakers(0, mini_librimix.CorpusSize(10, 40, 2, 8))
    rng = np.random.default_rng(0)
    sentences = [make_sentence(rng) for _ in range(2000)]
    assert len(set(sentences)) > 1990
    assert all(re.fullmatch(r"[A-Z]+( [A-Z]+)*", s) for s in sentences)
    assert not any(re.search(r"\bA [AEIOU]", s) for s in sentences)
    assert all(len(make_sentence(rng, max_words=5).split()) <= 5 for _ in range(50))


def test_mini_conversations_top_up_the_test_speakers_deterministically(corpus, tmp_path):
    """mini-conversations: the corpus's test speakers only, extra sentences in their voices, the same every time."""
    from click.testing import CliRunner

    from tsekit.cli import cli

    def build(out: Path, minutes: str) -> str:
        args = ["prepare", "mini-conversations", str(corpus), str(out), "--recordings", "2", "--minutes", minutes,
                "--jobs", "2"]  # fmt: skip
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        return result.output

    build(tmp_path / "a", "0.3")
    extra = sorted((corpus / "Conversations" / "test-clean").rglob("*.flac"))
    assert extra and all(int(path.parent.name) >= mini_librimix.EXTRA_FIRST_CHAPTER for path in extra)
    first = {path: path.read_bytes() for path in extra}
    build(tmp_path / "b", "0.3")
    assert (tmp_path / "a" / "rttm").read_text() == (tmp_path / "b" / "rttm").read_text()
    for name in ("mix.wav", "noise.wav"):
        assert (tmp_path / "a" / "audio" / "conv0001" / name).read_bytes() == (
            tmp_path / "b" / "audio" / "conv0001" / name).read_bytes()
    build(tmp_path / "c", "0.6")  # more speech per speaker: the earlier extra utterances stay as they were
    assert all(path.read_bytes() == data for path, data in first.items())
    assert len(list((corpus / "Conversations" / "test-clean").rglob("*.flac"))) > len(extra)
    test_speakers = speakers_of(corpus, "test")
    assert set(read_table(tmp_path / "c" / "utt2spk").values()) <= test_speakers
