"""tsekit prepare libri2mix | libri3mix | wsj0-2mix | wham on tiny fake corpora in the real layouts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from tsekit import TsekitError
from tsekit.cli import cli
from tsekit.data.table import c_sort_key, read_table

sys.path.insert(0, str(Path(__file__).parent))
from corpus_trees import (  # noqa: E402
    GONE_ROOT,
    LIBRIMIX_COLUMNS,
    FakeMixture,
    make_libri2mix_tree,
    make_libri3mix_tree,
    make_wham_tree,
    make_wsj0_2mix_tree,
    write_librimix_csv,
    write_librispeech_transcripts,
    write_wav,
)

TSEKIT = Path(sys.executable).parent / "tsekit"


def prepare(*args: object) -> str:
    """Run `tsekit prepare ...` in-process; return stdout (fails the test on any error)."""
    result = CliRunner().invoke(cli, ["prepare", *map(str, args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def prepare_error(*args: object) -> str:
    """Run `tsekit prepare ...` expecting a TsekitError; return its message."""
    result = CliRunner().invoke(cli, ["prepare", *map(str, args)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, TsekitError), repr(result.exception)
    message = str(result.exception)
    assert "\n" not in message
    return message


def check_data_dir(
    data: Path,
    root: Path,
    truth: list[FakeMixture],
    rate: int,
    mode: str,
    mixture: str,
    sources: tuple[int, ...] = (1, 2),
    noise: bool = False,
) -> dict[str, dict[str, str]]:
    """The checks of `tsekit data validate` plus the expected rows, done independently here."""
    names = {"wav.scp", "spk1.scp", "utt2spk", "spk2utt", "utt2dur", "utt2uniq"}
    names |= {"noise1.scp"} if noise else set()
    present = {p.name for p in data.iterdir()}
    assert names <= present
    assert ("noise1.scp" in present) == noise
    tables = {}
    for name in present:
        keys = [line.split()[0] for line in (data / name).read_text().splitlines()]
        assert keys == sorted(keys, key=c_sort_key) and len(keys) == len(set(keys)), name
        tables[name] = read_table(data / name)
    utts = set(tables["wav.scp"])
    for name in present - {"spk2utt", "text"}:
        assert set(tables[name]) == utts, name
    assert set(tables.get("text", {})) <= utts  # only targets that keep every word have one

    expected = {}
    for mix in truth:
        for index in sources:
            expected[(mix.mixture_id, index)] = mix
    assert len(utts) == len(expected) == len(truth) * len(sources)
    split_dir = root.absolute() / f"wav{rate // 1000}k" / mode / truth[0].split
    spk2utt: dict[str, list[str]] = {}
    for utt in utts:
        mixture_id, index = utt.split("-", 1)[1].rsplit("-s", 1)
        mix = expected.pop((mixture_id, int(index)))
        speaker = mix.speakers[int(index) - 1]
        assert utt == f"{speaker}-{mix.mixture_id}-s{index}"
        assert tables["utt2spk"][utt] == speaker
        spk2utt.setdefault(speaker, []).append(utt)
        assert tables["utt2uniq"][utt] == mix.source_utts[int(index) - 1]
        assert tables["wav.scp"][utt] == str(split_dir / mixture / f"{mixture_id}.wav")
        assert tables["spk1.scp"][utt] == str(split_dir / f"s{index}" / f"{mixture_id}.wav")
        if noise:
            assert tables["noise1.scp"][utt] == str(split_dir / "noise" / f"{mixture_id}.wav")
        info = sf.info(tables["wav.scp"][utt])
        assert info.samplerate == rate
        assert float(tables["utt2dur"][utt]) == pytest.approx(info.frames / rate, abs=6e-4)
        for name in ("spk1.scp", "noise1.scp"):
            if name in tables:
                assert sf.info(tables[name][utt]).frames == info.frames
    assert not expected
    assert {spk: " ".join(sorted(u, key=c_sort_key)) for spk, u in spk2utt.items()} == tables["spk2utt"]

    # kaldiio reads the wav paths of an scp file: the audio is the file's audio
    for name in ("wav.scp", "spk1.scp"):
        for utt, (read_rate, samples) in kaldiio.load_scp(str(data / name)).items():
            expected_samples, file_rate = sf.read(tables[name][utt], dtype="int16")
            assert read_rate == file_rate == rate
            np.testing.assert_array_equal(samples, expected_samples)
    return tables


def check_validates(data: Path) -> None:
    from tsekit.data.validate import validate_data_dir

    assert validate_data_dir(data, check_audio=True, require_enroll=False) == []


# ---------------------------------------------------------------------------------------------- WSJ0-2mix


def test_wsj0_2mix_all_splits(tmp_path: Path) -> None:
    root = tmp_path / "2speakers"
    truth = make_wsj0_2mix_tree(root, per_split=3)
    output = prepare("wsj0-2mix", root, tmp_path / "data")
    for split in ("tr", "cv", "tt"):
        mixtures = [m for m in truth if m.split == split]
        check_data_dir(tmp_path / "data" / split, root, mixtures, 8000, "min", "mix")
        check_validates(tmp_path / "data" / split)
        assert any(line.split()[:3] == [split, "6", "3"] for line in output.splitlines())
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cv", "tr", "tt"]


def test_wsj0_2mix_16k_max(tmp_path: Path) -> None:
    root = tmp_path / "2speakers"
    truth = make_wsj0_2mix_tree(root, rates=(8000, 16000), modes=("min", "max"), splits=("tt",))
    prepare("wsj0-2mix", root, tmp_path / "max16", "--sample-rate", 16000, "--mode", "max", "--splits", "tt")
    prepare("wsj0-2mix", root, tmp_path / "min16", "--sample-rate", 16000, "--splits", "tt")
    prepare("wsj0-2mix", root, tmp_path / "min8", "--splits", "tt")
    max16 = check_data_dir(tmp_path / "max16" / "tt", root, truth, 16000, "max", "mix")
    min16 = check_data_dir(tmp_path / "min16" / "tt", root, truth, 16000, "min", "mix")
    check_data_dir(tmp_path / "min8" / "tt", root, truth, 8000, "min", "mix")
    assert all(float(max16["utt2dur"][u]) > float(min16["utt2dur"][u]) for u in max16["utt2dur"])


# ---------------------------------------------------------------------------------------------- WHAM!


@pytest.mark.parametrize(
    "mixture, sources, noise",
    [("mix_both", (1, 2), True), ("mix_clean", (1, 2), False), ("mix_single", (1,), True)],
)
def test_wham_mixtures(tmp_path: Path, mixture: str, sources: tuple[int, ...], noise: bool) -> None:
    root = tmp_path / "wham"
    truth = make_wham_tree(root, splits=("cv", "tt"))
    prepare("wham", root, tmp_path / "data", "--mixture", mixture, "--splits", "cv,tt")
    for split in ("cv", "tt"):
        data = tmp_path / "data" / split
        mixtures = [m for m in truth if m.split == split]
        check_data_dir(data, root, mixtures, 8000, "min", mixture, sources, noise)
        check_validates(data)


def test_wham_default_is_mix_both_8k_min(tmp_path: Path) -> None:
    root = tmp_path / "wham"
    truth = make_wham_tree(root, rates=(8000, 16000), modes=("min", "max"))
    prepare("wham", root, tmp_path / "data")
    for split in ("tr", "cv", "tt"):
        check_data_dir(tmp_path / "data" / split, root, [m for m in truth if m.split == split], 8000, "min",
                       "mix_both", noise=True)
    prepare("wham", root, tmp_path / "max16", "--sample-rate", 16000, "--mode", "max", "--splits", "tt")
    check_data_dir(tmp_path / "max16" / "tt", root, [m for m in truth if m.split == "tt"], 16000, "max",
                   "mix_both", noise=True)


# ---------------------------------------------------------------------------------------------- Libri2Mix


def test_libri2mix_default_splits(tmp_path: Path) -> None:
    root = tmp_path / "Libri2Mix"
    truth = make_libri2mix_tree(root, splits=("train-100", "dev", "test"))
    output = prepare("libri2mix", root, tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["dev", "test", "train-100"]
    for split in ("train-100", "dev", "test"):
        data = tmp_path / "data" / split
        check_data_dir(data, root, [m for m in truth if m.split == split], 16000, "min", "mix_clean")
        check_validates(data)
        assert split in output


@pytest.mark.parametrize("rate, mode", [(8000, "min"), (16000, "max"), (8000, "max")])
def test_libri2mix_rates_and_modes(tmp_path: Path, rate: int, mode: str) -> None:
    root = tmp_path / "Libri2Mix"
    truth = make_libri2mix_tree(root, rates=(8000, 16000), modes=("min", "max"), splits=("test",))
    prepare("libri2mix", root, tmp_path / "data", "--sample-rate", rate, "--mode", mode, "--splits", "test")
    check_data_dir(tmp_path / "data" / "test", root, truth, rate, mode, "mix_clean")


@pytest.mark.parametrize(
    "mixture, sources, noise",
    [("mix_both", (1, 2), True), ("mix_single", (1,), True)],
)
def test_libri2mix_noisy_mixtures(
    tmp_path: Path, mixture: str, sources: tuple[int, ...], noise: bool
) -> None:
    root = tmp_path / "Libri2Mix"
    truth = make_libri2mix_tree(root, splits=("dev",))
    prepare("libri2mix", root, tmp_path / "data", "--mixture", mixture, "--splits", "dev")
    check_data_dir(tmp_path / "data" / "dev", root, truth, 16000, "min", mixture, sources, noise)
    check_validates(tmp_path / "data" / "dev")


@pytest.mark.parametrize(
    "columns, spaces",
    [
        # an older LibriMix: no length column
        ({"mix_clean": ("mixture_ID", "mixture_path", "source_1_path", "source_2_path")}, False),
        # extra columns, in another order
        ({"mix_clean": ("length", "source_2_path", "mixture_ID", "snr", "source_1_path", "mixture_path",
                        "noise_gain")}, False),
        # whitespace around the column names
        (None, True),
    ],
)
def test_libri2mix_csv_variants(tmp_path: Path, columns: dict | None, spaces: bool) -> None:
    root = tmp_path / "Libri2Mix"
    truth = make_libri2mix_tree(root, splits=("dev",), columns=columns, spaces=spaces)
    csv_text = (root / "wav16k/min/metadata/mixture_dev_mix_clean.csv").read_text()
    assert (" mixture_ID " in csv_text.splitlines()[0]) == spaces
    assert f"{GONE_ROOT}/wav16k/min/dev/mix_clean/" in csv_text
    prepare("libri2mix", root, tmp_path / "data", "--splits", "dev")
    check_data_dir(tmp_path / "data" / "dev", root, truth, 16000, "min", "mix_clean")


@pytest.mark.parametrize("mode, rate", [("min", 16000), ("min", 8000), ("max", 16000)])
def test_libri2mix_text_only_for_targets_that_keep_every_word(tmp_path: Path, mode: str, rate: int) -> None:
    """min mode cuts every source to the shortest: only that one keeps the words of its transcript."""
    root = tmp_path / "Libri2Mix"
    truth = make_libri2mix_tree(root, splits=("dev", "test"), per_split=3, modes=(mode,), rates=(rate,))
    write_librispeech_transcripts(tmp_path / "LibriSpeech", truth)
    prepare("libri2mix", root, tmp_path / "data", "--splits", "dev,test", "--mode", mode,
            "--sample-rate", str(rate), "--librispeech", tmp_path / "LibriSpeech")
    for split in ("dev", "test"):
        mixtures = [m for m in truth if m.split == split]
        tables = check_data_dir(tmp_path / "data" / split, root, mixtures, rate, mode, "mix_clean")
        whole = {(m, i) for m in mixtures for i in (0, 1) if mode == "max" or m.seconds[i] == min(m.seconds)}
        expected = {f"{m.speakers[i]}-{m.mixture_id}-s{i + 1}": m.texts[i] for m, i in whole}
        assert tables["text"] == expected
        assert len(expected) == len(mixtures) * (2 if mode == "max" else 1)
        check_validates(tmp_path / "data" / split)


def test_libri2mix_missing_transcript(tmp_path: Path) -> None:
    root = tmp_path / "Libri2Mix"
    truth = make_libri2mix_tree(root, splits=("dev", "test"))
    write_librispeech_transcripts(tmp_path / "LibriSpeech", truth[:-1])
    message = prepare_error("libri2mix", root, tmp_path / "data", "--splits", "dev,test",
                            "--librispeech", tmp_path / "LibriSpeech")
    assert "mixture_test_mix_clean.csv" in message and truth[-1].source_utts[0] in message
    assert not (tmp_path / "data" / "dev").exists()


# ---------------------------------------------------------------------------------------------- bad input


def _mixture_file(root: Path, sub: str, rate: int = 8000) -> Path:
    """The last mixture's file in ``sub`` of the last split (tt / test)."""
    split = "test" if (root / f"wav{rate // 1000}k/min/test").is_dir() else "tt"
    return sorted((root / f"wav{rate // 1000}k/min/{split}/{sub}").iterdir())[-1]


def _break_wav_missing(root: Path) -> Path:
    path = _mixture_file(root, "s2")
    path.unlink()
    return path


def _break_extra_source(root: Path) -> Path:
    path = _mixture_file(root, "s1")
    extra = path.with_name("01ac999a_1.00000_02co999b_-1.00000.wav")
    shutil.copy(path, extra)
    return extra


def _break_rate(root: Path) -> Path:
    path = _mixture_file(root, "s1")
    samples, _ = sf.read(path)
    write_wav(path, np.repeat(samples, 2), 16000)
    return path


def _break_empty(root: Path) -> Path:
    path = _mixture_file(root, "s2")
    write_wav(path, np.zeros(0, dtype=np.float32), 8000)
    return path


def _break_length(root: Path) -> Path:
    path = _mixture_file(root, "s1")
    samples, rate = sf.read(path)
    write_wav(path, samples[:-10], rate)
    return path


def _break_split_folder(root: Path) -> Path:
    path = root / "wav8k/min/tt"
    shutil.rmtree(path)
    return path


def _break_mixture_name(root: Path) -> Path:
    names = []
    for sub in ("mix", "s1", "s2"):
        path = _mixture_file(root, sub)
        names.append(path.rename(path.with_name("not_a_wsj_name.wav")))
    return names[0]


@pytest.mark.parametrize(
    "damage",
    [_break_wav_missing, _break_extra_source, _break_rate, _break_empty, _break_length, _break_split_folder,
     _break_mixture_name],
)
def test_wsj0_2mix_bad_input(tmp_path: Path, damage) -> None:
    root = tmp_path / "2speakers"
    make_wsj0_2mix_tree(root)
    broken = damage(root)
    message = prepare_error("wsj0-2mix", root, tmp_path / "data")
    assert str(broken.absolute()) in message
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_wham_missing_noise(tmp_path: Path) -> None:
    root = tmp_path / "wham"
    make_wham_tree(root)
    broken = _mixture_file(root, "noise")
    broken.unlink()
    # mix_clean does not need the noise folder
    prepare("wham", root, tmp_path / "clean", "--mixture", "mix_clean")
    message = prepare_error("wham", root, tmp_path / "data", "--mixture", "mix_single")
    assert str(broken.absolute()) in message
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_missing_root(tmp_path: Path) -> None:
    for command in ("libri2mix", "libri3mix", "wsj0-2mix", "wham"):
        message = prepare_error(command, tmp_path / "nowhere", tmp_path / "data")
        assert str(tmp_path / "nowhere") in message
    message = prepare_error("wham", tmp_path, tmp_path / "data")
    assert str(tmp_path / "wav8k") in message
    assert not (tmp_path / "data").exists()


def _libri_missing_csv(root: Path) -> Path:
    path = root / "wav8k/min/metadata/mixture_test_mix_clean.csv"
    path.unlink()
    return path


def _libri_missing_wav(root: Path) -> Path:
    path = _mixture_file(root, "s2")
    path.unlink()
    return path


def _libri_missing_column(root: Path) -> Path:
    path = root / "wav8k/min/metadata/mixture_test_mix_clean.csv"
    text = path.read_text().replace("source_2_path", "source_two_path", 1)
    path.write_text(text)
    return path


def _libri_bad_id(root: Path) -> Path:
    path = root / "wav8k/min/metadata/mixture_test_mix_clean.csv"
    lines = path.read_text().splitlines()
    lines[1] = "no-underscore-here" + lines[1][lines[1].index(","):]
    path.write_text("\n".join(lines) + "\n")
    return path


def _libri_rate(root: Path) -> Path:
    return _break_rate(root)


@pytest.mark.parametrize(
    "damage", [_libri_missing_csv, _libri_missing_wav, _libri_missing_column, _libri_bad_id, _libri_rate]
)
def test_libri2mix_bad_input(tmp_path: Path, damage) -> None:
    root = tmp_path / "Libri2Mix"
    make_libri2mix_tree(root, rates=(8000,), splits=("dev", "test"))
    broken = damage(root)
    message = prepare_error("libri2mix", root, tmp_path / "data",
                            "--sample-rate", 8000, "--splits", "dev,test")
    assert str(broken.absolute()) in message
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_libri2mix_noise_column_needed(tmp_path: Path) -> None:
    root = tmp_path / "Libri2Mix"
    truth = make_libri2mix_tree(root, splits=("dev",))
    csv_path = root / "wav16k/min/metadata/mixture_dev_mix_both.csv"
    lengths = {m.mixture_id: 1 for m in truth}
    write_librimix_csv(csv_path, truth, "mix_both", LIBRIMIX_COLUMNS["mix_clean"], lengths)
    message = prepare_error("libri2mix", root, tmp_path / "data", "--splits", "dev", "--mixture", "mix_both")
    assert str(csv_path.absolute()) in message and "noise_path" in message
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------------------------------------- Libri3Mix


def test_libri3mix_three_rows_per_mixture(tmp_path: Path) -> None:
    root = tmp_path / "Libri3Mix"
    truth = make_libri3mix_tree(root, splits=("dev", "test"), per_split=3)
    assert all(len(m.source_utts) == len(set(m.speakers)) == 3 for m in truth)
    write_librispeech_transcripts(tmp_path / "LibriSpeech", truth)
    output = prepare("libri3mix", root, tmp_path / "data", "--splits", "dev,test",
                     "--librispeech", tmp_path / "LibriSpeech")
    for split in ("dev", "test"):
        mixtures = [m for m in truth if m.split == split]
        tables = check_data_dir(tmp_path / "data" / split, root, mixtures, 16000, "min", "mix_clean", (1, 2, 3))
        expected = {f"{m.speakers[i]}-{m.mixture_id}-s{i + 1}": m.texts[i] for m in mixtures for i in range(3)
                    if m.seconds[i] == min(m.seconds)}  # min mode: the shortest source alone keeps every word
        assert tables["text"] == expected
        check_validates(tmp_path / "data" / split)
        assert split in output


@pytest.mark.parametrize(
    "mixture, sources, noise",
    [("mix_both", (1, 2, 3), True), ("mix_single", (1,), True)],  # mix_single: source 1 + noise, as in Libri2Mix
)
def test_libri3mix_noisy_mixtures(tmp_path: Path, mixture: str, sources: tuple[int, ...], noise: bool) -> None:
    root = tmp_path / "Libri3Mix"
    truth = make_libri3mix_tree(root, rates=(8000,), modes=("max",), splits=("test",))
    prepare("libri3mix", root, tmp_path / "data", "--mixture", mixture, "--splits", "test",
            "--sample-rate", 8000, "--mode", "max")
    check_data_dir(tmp_path / "data" / "test", root, truth, 8000, "max", mixture, sources, noise)
    check_validates(tmp_path / "data" / "test")


def test_libri3mix_csv_with_two_utterance_ids(tmp_path: Path) -> None:
    root = tmp_path / "Libri3Mix"
    truth = make_libri3mix_tree(root, splits=("dev",))
    csv_path = root / "wav16k/min/metadata/mixture_dev_mix_clean.csv"
    lines = csv_path.read_text().splitlines()
    two = "_".join(truth[1].source_utts[:2])
    lines[2] = lines[2].replace(truth[1].mixture_id, two, 1)
    csv_path.write_text("\n".join(lines) + "\n")
    message = prepare_error("libri3mix", root, tmp_path / "data", "--splits", "dev")
    assert message.startswith(f"{csv_path.absolute()}:3: mixture ID {two!r} joins 2 utterance ids")
    assert "Libri3Mix" in message
    assert not (tmp_path / "data").exists()


def test_libri2mix_and_libri3mix_refuse_each_other(tmp_path: Path) -> None:
    make_libri3mix_tree(tmp_path / "Libri3Mix", splits=("dev",))
    make_libri2mix_tree(tmp_path / "Libri2Mix", splits=("dev",))
    message = prepare_error("libri2mix", tmp_path / "Libri3Mix", tmp_path / "data", "--splits", "dev")
    assert "mixture_dev_mix_clean.csv:2: " in message and "joins 3 utterance ids" in message
    # a missing s3/ folder is named as such, not as its first missing file
    message = prepare_error("libri3mix", tmp_path / "Libri2Mix", tmp_path / "data", "--splits", "dev")
    assert message == f"{(tmp_path / 'Libri2Mix/wav16k/min/dev/s3').absolute()}: folder not found"
    # mix_single needs no s3/, but the IDs still have to name three utterances
    message = prepare_error("libri3mix", tmp_path / "Libri2Mix", tmp_path / "data", "--splits", "dev",
                            "--mixture", "mix_single")
    assert "mixture_dev_mix_single.csv:2: " in message and "joins 2 utterance ids" in message
    assert not (tmp_path / "data").exists()


def test_librimix_ids_and_contents() -> None:
    from tsekit.cli.prepare_corpora import libri2mix, libri3mix
    from tsekit.corpora.common import MIXTURE_CONTENTS, mixture_contents
    from tsekit.corpora.librimix import parse_librimix_id

    three = "1272-128104-0000_2035-147961-0014_3000-15664-0001"
    assert parse_librimix_id(three, 3) == three.split("_")
    assert parse_librimix_id("1-2-3_4-5-6") == ["1-2-3", "4-5-6"]
    for bad, num_sources in ((three, 2), ("1-2-3_4-5-6", 3), ("1-2-3_4-5_6-7-8", 3)):
        with pytest.raises(ValueError, match="mixture ID"):
            parse_librimix_id(bad, num_sources)
    assert mixture_contents("mix_clean", 3) == ((1, 2, 3), False)
    assert mixture_contents("mix_both", 3) == ((1, 2, 3), True)
    assert mixture_contents("mix_single", 3) == ((1,), True)
    # the two-speaker table WHAM! and Libri2Mix read is unchanged
    assert MIXTURE_CONTENTS == {"mix_clean": ((1, 2), False), "mix_both": ((1, 2), True), "mix_single": ((1,), True)}
    assert [p.name for p in libri3mix.params] == [p.name for p in libri2mix.params]
    assert (libri2mix.name, libri3mix.name) == ("libri2mix", "libri3mix")


def test_real_entry_point_errors(tmp_path: Path) -> None:
    """The installed `tsekit` prints one `tsekit: error:` line naming the file and exits 1."""
    root = tmp_path / "2speakers"
    make_wsj0_2mix_tree(root)
    broken = _break_length(root)
    proc = subprocess.run([str(TSEKIT), "prepare", "wsj0-2mix", str(root), str(tmp_path / "data")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tsekit: error: ") and str(broken.absolute()) in lines[0]
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())

    libri = tmp_path / "Libri2Mix"
    make_libri2mix_tree(libri, splits=("dev",))
    proc = subprocess.run([str(TSEKIT), "prepare", "libri2mix", str(libri), str(tmp_path / "data")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(libri.absolute() / "wav16k/min/train-100") in lines[0]

    proc = subprocess.run([str(TSEKIT), "prepare", "libri2mix", str(libri), str(tmp_path / "data"),
                           "--splits", "dev"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "data/dev/wav.scp").is_file() and "dev" in proc.stdout


def test_cli_module_imports_nothing_heavy() -> None:
    code = ("import sys, tsekit.cli.prepare_corpora; "
            "print(sorted({'numpy', 'soundfile', 'tqdm'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
