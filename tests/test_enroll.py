"""tsekit enroll: seeded enrollment choice, spk2enroll, BUT/SpEx list import, noisy pos/neg clips.

The corpus below is a tiny Libri2Mix look-alike (``<split>/{mix_clean,s1,s2}/<mixID>.wav``,
mixID = ``<utt1>_<utt2>``, min mode). Every source utterance is independent
random noise, so a clip that contains a source correlates with it and a clip
that does not is nearly uncorrelated: that is how the pos/neg tests see who
talks in a clip. Expected values come from the corpus definition, not from
the code under test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from tsekit import TsekitError
from tsekit.cli import cli
from tsekit.corpora.common import Row, rows_to_tables, write_splits
from tsekit.data.enroll import choose_enrollments, enroll_data_dir, read_rows, valid_candidates
from tsekit.data.table import invert_utt2spk, read_list_table, read_table, write_table

RATE = 8000
SPEAKERS = ("121", "237", "260", "61")
# (utt of source 1, utt of source 2); 61-100-0000 occurs in two mixtures (same utt2uniq)
MIXTURES = [
    ("121-100-0000", "237-100-0000"),
    ("260-100-0000", "61-100-0000"),
    ("121-100-0001", "260-100-0001"),
    ("237-100-0001", "61-100-0001"),
    ("121-100-0002", "61-100-0002"),
    ("237-100-0002", "260-100-0002"),
    ("61-100-0000", "121-100-0003"),
]


def speaker_of(utt: str) -> str:
    return utt.split("-")[0]


def source_signal(utt: str) -> np.ndarray:
    """The clean source of an utterance: seeded noise, 0.4-0.7 s, same for every mixture it is in."""
    rng = np.random.default_rng(list(utt.encode()))
    length = int(RATE * rng.uniform(0.4, 0.7))
    return (0.2 * rng.standard_normal(length)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, RATE, subtype="PCM_16")


def build_corpus(root: Path, mixtures=MIXTURES) -> tuple[Path, Path]:
    """Write the corpus under root/corpus/test and its data dir root/data/test; returns (split, data)."""
    split = root / "corpus" / "test"
    rows = []
    for utts in mixtures:
        mixture_id = "_".join(utts)
        sources = [source_signal(u) for u in utts]
        length = min(len(s) for s in sources)
        sources = [s[:length] for s in sources]
        write_wav(split / "mix_clean" / f"{mixture_id}.wav", sum(sources))
        for index, (utt, source) in enumerate(zip(utts, sources, strict=True), 1):
            write_wav(split / f"s{index}" / f"{mixture_id}.wav", source)
            rows.append(Row(mixture_id, index, speaker_of(utt), split / "mix_clean" / f"{mixture_id}.wav",
                            split / f"s{index}" / f"{mixture_id}.wav", utt))
    write_splits(root / "data", {"test": rows_to_tables(rows, RATE)})
    return split, root / "data" / "test"


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    return build_corpus(tmp_path)


def invoke(*args: str):
    return CliRunner().invoke(cli, ["enroll", *map(str, args)])


def read_audio(path: str) -> np.ndarray:
    samples, rate = sf.read(path, dtype="float64")
    assert rate == RATE
    return samples


# ---------------------------------------------------------------- seeded choice


def test_enrollment_is_another_utterance_of_the_target_speaker_outside_its_mixture(corpus):
    _, data = corpus
    result = invoke(data, "--seed", "0")
    assert result.exit_code == 0, result.output
    assert "14 rows, 4 speakers" in result.output
    wav, spk1 = read_table(data / "wav.scp"), read_table(data / "spk1.scp")
    utt2spk, utt2uniq = read_table(data / "utt2spk"), read_table(data / "utt2uniq")
    enroll, utt2enroll = read_table(data / "enroll.scp"), read_table(data / "utt2enroll")
    assert set(enroll) == set(wav) == set(utt2enroll)
    for utt, chosen in utt2enroll.items():
        assert utt2spk[chosen] == utt2spk[utt]
        assert utt2uniq[chosen] != utt2uniq[utt]
        assert wav[chosen] != wav[utt]
        assert enroll[utt] == spk1[chosen]
        assert Path(enroll[utt]).is_file()


def test_choice_is_deterministic_changes_with_seed_and_ignores_unrelated_rows(corpus):
    _, data = corpus
    tables = read_rows(data)
    first = choose_enrollments(tables, seed=0).utt2enroll
    assert choose_enrollments(read_rows(data), seed=0).utt2enroll == first
    assert any(choose_enrollments(tables, seed=s).utt2enroll != first for s in range(1, 4))
    # drop every row of speaker 260 and add a row of a new speaker: others keep their enrollment
    kept = [u for u in tables["wav.scp"] if tables["utt2spk"][u] != "260"]
    smaller = {name: {u: t[u] for u in kept} for name, t in tables.items()}
    new_row = {"wav.scp": "x.wav", "spk1.scp": "y.wav", "utt2spk": "999", "utt2uniq": "999-1-1"}
    for name, value in new_row.items():
        smaller[name]["999-new-s1"] = value
    smaller["wav.scp"]["999-other-s1"], smaller["spk1.scp"]["999-other-s1"] = "z.wav", "w.wav"
    smaller["utt2spk"]["999-other-s1"], smaller["utt2uniq"]["999-other-s1"] = "999", "999-1-2"
    for seed in range(5):  # few candidates per row: several seeds make a chance match unlikely
        full = choose_enrollments(tables, seed=seed).utt2enroll
        changed = choose_enrollments(smaller, seed=seed).utt2enroll
        assert {u: changed[u] for u in kept} == {u: full[u] for u in kept}


def test_candidates_exclude_own_utterance_and_own_mixture():
    # speaker a: utterance u1 in mixtures m1 and m2, u2 also in m1 (a talks twice in m1), u3 in m3
    rows = {
        "a-m1-s1": ("m1.wav", "u1"), "a-m1-s2": ("m1.wav", "u2"), "a-m2-s1": ("m2.wav", "u1"),
        "a-m3-s1": ("m3.wav", "u3"), "a-m4-s1": ("m4.wav", "u3"), "b-m2-s2": ("m2.wav", "v1"),
    }
    tables = {
        "wav.scp": {u: w for u, (w, _) in rows.items()},
        "spk1.scp": {u: f"{u}.wav" for u in rows},
        "utt2spk": {u: u.split("-")[0] for u in rows},
        "utt2uniq": {u: q for u, (_, q) in rows.items()},
    }
    spk2utt = invert_utt2spk(tables["utt2spk"])
    # not u1 (itself, also in m2), not u2 (same mixture); u3 once (its first row)
    assert valid_candidates(tables, "a-m1-s1", spk2utt) == ["a-m3-s1"]
    # u1 again only through m1, whose other source u2 is fine: u2 is in another mixture than m2
    assert valid_candidates(tables, "a-m2-s1", spk2utt) == ["a-m1-s2", "a-m3-s1"]
    assert valid_candidates(tables, "a-m3-s1", spk2utt) == ["a-m1-s1", "a-m1-s2"]
    assert valid_candidates(tables, "b-m2-s2", spk2utt) == []
    with pytest.raises(TsekitError, match="speaker b has no enrollment candidate for row b-m2-s2"):
        choose_enrollments(tables, data_dir="somewhere")


def test_spk2enroll_lists_one_row_per_source_utterance(corpus):
    _, data = corpus
    assert invoke(data).exit_code == 0
    expected: dict[str, list[str]] = {}
    first_row: dict[str, str] = {}
    for utts in MIXTURES:
        for index, utt in enumerate(utts, 1):
            row = f"{speaker_of(utt)}-{'_'.join(utts)}-s{index}"
            first_row[utt] = min(first_row.get(utt, row), row, key=lambda k: k.encode())
    for utt, row in first_row.items():
        expected.setdefault(speaker_of(utt), []).append(row)
    expected = {spk: sorted(rows, key=lambda k: k.encode()) for spk, rows in expected.items()}
    assert read_list_table(data / "spk2enroll") == expected
    assert len(expected["61"]) == 3  # 61-100-0000 is in two mixtures but listed once


def test_speaker_without_candidate_fails_on_one_line_and_writes_nothing(tmp_path):
    # 999 speaks only one utterance: nothing else of that speaker can enroll it
    _, data = build_corpus(tmp_path, MIXTURES + [("999-100-0000", "121-100-0004")])
    result = invoke(data)
    assert result.exit_code == 1
    assert isinstance(result.exception, TsekitError)
    message = str(result.exception)
    assert "999" in message and str(data) in message and "\n" not in message
    assert not (data / "enroll.scp").exists() and not (data / "spk2enroll").exists()
    # through the real entry point: one line on stderr, exit 1
    proc = subprocess.run([sys.executable, "-c", "from tsekit.cli import main; main()", "enroll", str(data)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("tsekit: error: ") and proc.stderr.count("\n") == 1
    assert not (data / "enroll.scp").exists()


# ---------------------------------------------------------------- BUT map


def but_map_lines() -> list[tuple[str, str, str]]:
    """A map in the published format: each target enrolled by the first other mixture of its speaker."""
    lines = []
    for utts in MIXTURES:
        mixture_id = "_".join(utts)
        for utt in utts:
            for other in MIXTURES:
                other_id = "_".join(other)
                speakers = [speaker_of(u) for u in other]
                if other_id != mixture_id and speaker_of(utt) in speakers and utt not in other:
                    lines.append((mixture_id, utt, f"s{speakers.index(speaker_of(utt)) + 1}/{other_id}"))
                    break
    return lines


def write_but_map(path: Path, lines) -> Path:
    path.write_text("".join(f"{m} {t} {e}\n" for m, t, e in lines))
    return path


def test_but_map_resolves_to_the_sibling_source_folder(corpus, tmp_path):
    split, data = corpus
    lines = but_map_lines()
    # the published lists contain a few targets enrolled from their own mixture: kept, reported
    own = ("121-100-0000_237-100-0000", "237-100-0000", "s2/121-100-0000_237-100-0000")
    lines = [own if line[:2] == own[:2] else line for line in lines]
    map_file = write_but_map(tmp_path / "map_mixture2enrollment", lines)
    result = invoke(data, "--from-map", map_file, "--map-format", "but")
    assert result.exit_code == 0, result.output
    assert "1 rows get an enrollment from their own mixture" in result.output
    enroll, utt2enroll = read_table(data / "enroll.scp"), read_table(data / "utt2enroll")
    assert len(enroll) == 14
    for mixture_id, target, enroll_id in lines:
        index = mixture_id.split("_").index(target) + 1
        utt = f"{speaker_of(target)}-{mixture_id}-s{index}"
        folder, other = enroll_id.split("/")
        assert enroll[utt] == str(split / folder / f"{other}.wav")
        assert utt2enroll[utt] == enroll_id


def test_but_map_errors_name_the_map_and_leave_no_enroll_scp(corpus, tmp_path):
    _, data = corpus
    lines = but_map_lines()
    missing_row = write_but_map(tmp_path / "map_missing", lines[1:])
    result = invoke(data, "--from-map", missing_row)
    assert result.exit_code == 1 and str(missing_row) in str(result.exception)
    assert lines[0][0] in str(result.exception)
    bad_audio = write_but_map(tmp_path / "map_bad", [lines[0][:2] + ("s1/1-2-3_4-5-6",)] + lines[1:])
    result = invoke(data, "--from-map", bad_audio)
    assert result.exit_code == 1 and str(bad_audio) in str(result.exception)
    assert "1-2-3_4-5-6.wav not found" in str(result.exception)
    malformed = tmp_path / "map_malformed"
    malformed.write_text("only two\n")
    result = invoke(data, "--from-map", malformed)
    assert result.exit_code == 1 and f"{malformed}:1:" in str(result.exception)
    assert not (data / "enroll.scp").exists()


# ---------------------------------------------------------------- SpEx lists


def write_spex_lists(folder: Path, split: Path, keys: list[tuple[str, int]]) -> dict[str, Path]:
    """SpEx-style mix/ref/aux.scp for (mixture id, target index); aux audio beside them, paths relative."""
    expected = {}
    mix, ref, aux = {}, {}, {}
    for number, (mixture_id, index) in enumerate(keys):
        key = f"key{number:02d}"
        # the lists were made on another machine: only file names (and the sN folder) carry over
        mix[key] = f"/elsewhere/mix/{mixture_id}.wav"
        ref[key] = f"/elsewhere/s{index}/{mixture_id}.wav"
        aux[key] = f"aux/{key}.wav"
        write_wav(folder / "aux" / f"{key}.wav", source_signal(f"aux-{key}"))
        target = mixture_id.split("_")[index - 1]
        expected[f"{speaker_of(target)}-{mixture_id}-s{index}"] = folder / "aux" / f"{key}.wav"
    for name, table in (("mix.scp", mix), ("ref.scp", ref), ("aux.scp", aux)):
        write_table(folder / name, table)
    return expected


def test_spex_lists_match_rows_by_file_names(corpus, tmp_path):
    split, data = corpus
    keys = [("_".join(utts), index) for utts in MIXTURES for index in (1, 2)]
    expected = write_spex_lists(tmp_path / "spex", split, keys)
    result = invoke(data, "--from-map", tmp_path / "spex" / "aux.scp", "--map-format", "spex")
    assert result.exit_code == 0, result.output
    enroll = read_table(data / "enroll.scp")
    assert {u: Path(p) for u, p in enroll.items()} == expected
    assert read_table(data / "utt2enroll")["121-121-100-0000_237-100-0000-s1"] == "key00"


def test_spex_lists_errors(corpus, tmp_path):
    split, data = corpus
    keys = [("_".join(utts), index) for utts in MIXTURES for index in (1, 2)]
    write_spex_lists(tmp_path / "short", split, keys[:-1])  # s2 row of the last mixture missing
    result = invoke(data, "--from-map", tmp_path / "short" / "aux.scp", "--map-format", "spex")
    assert result.exit_code == 1
    assert str(tmp_path / "short" / "aux.scp") in str(result.exception) and "no key for row" in str(
        result.exception
    )
    write_spex_lists(tmp_path / "gone", split, keys)
    (tmp_path / "gone" / "aux" / "key03.wav").unlink()
    result = invoke(data, "--from-map", tmp_path / "gone" / "aux.scp", "--map-format", "spex")
    assert result.exit_code == 1 and "key03.wav not found" in str(result.exception)
    assert not (data / "enroll.scp").exists()


# ---------------------------------------------------------------- noisy positive / negative


def read_records(data: Path) -> dict[str, dict[str, str]]:
    lines = (data / "enroll_posneg.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    assert header[:2] == ["utt", "enroll"]
    return {line.split("\t")[0]: dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]}


def cut(source: np.ndarray, offset: int, length: int) -> np.ndarray:
    """A recorded segment: a long source cut at offset; a short one placed after -offset zeros (0 too)."""
    if len(source) >= length:
        return source[offset : offset + length]
    out = np.zeros(length)
    out[-offset : -offset + len(source)] = source
    return out


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def test_posneg_clips_hold_what_the_record_says(corpus):
    _, data = corpus
    result = invoke(data, "--posneg", "--seed", "3", "--sir-min", "-5", "--sir-max", "5")
    assert result.exit_code == 0, result.output
    assert "14 rows written" in result.output
    records = read_records(data)
    pos, neg = read_table(data / "enroll_pos.scp"), read_table(data / "enroll_neg.scp")
    enroll, spk1 = read_table(data / "enroll.scp"), read_table(data / "spk1.scp")
    utt2spk, wav, utt2uniq = read_table(data / "utt2spk"), read_table(data / "wav.scp"), read_table(
        data / "utt2uniq"
    )
    assert set(records) == set(pos) == set(neg) == set(enroll)
    sirs = []
    for utt, record in records.items():
        assert record["enroll"] == enroll[utt]
        interferer, negative_row = record["interferer"], record["negative"]
        mixture_speakers = {utt2spk[u] for u in wav if wav[u] == wav[utt]}
        assert utt2spk[interferer] not in mixture_speakers  # never the target, nor its mixture's others
        assert utt2spk[negative_row] == utt2spk[interferer]
        assert utt2uniq[negative_row] != utt2uniq[interferer]  # every interferer here has >1 utterance
        positive, negative = read_audio(pos[utt]), read_audio(neg[utt])
        assert sf.info(pos[utt]).subtype == "PCM_16" and sf.info(pos[utt]).samplerate == RATE
        target = read_audio(enroll[utt])
        scale = float(record["scale"])
        assert len(positive) == len(negative) == len(target)
        residual = positive - scale * target  # what is left must be the interferer alone
        sir = 10 * np.log10(np.sum((scale * target) ** 2) / np.sum(residual**2))
        assert sir == pytest.approx(float(record["sir_db"]), abs=0.05)
        segment = cut(read_audio(spk1[interferer]), int(record["interferer_offset"]), len(target))
        assert corr(residual, segment) > 0.999
        assert abs(corr(negative, target)) < 0.1  # target absent from the negative
        assert abs(corr(residual, target)) < 0.1
        negative_source = cut(read_audio(spk1[negative_row]), int(record["negative_offset"]), len(target))
        assert corr(negative, negative_source) > 0.999
        sirs.append(float(record["sir_db"]))
    assert all(-5 <= s <= 5 for s in sirs) and max(sirs) - min(sirs) > 1  # drawn, not constant


def test_posneg_rerun_is_noop_and_resumes(corpus):
    _, data = corpus
    assert invoke(data, "--posneg").exit_code == 0
    outputs = sorted((data / "enroll_posneg").rglob("*.wav")) + [
        data / "enroll_pos.scp", data / "enroll_neg.scp", data / "enroll_posneg.tsv"
    ]
    assert len(outputs) == 2 * 14 + 3
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    contents = {p: p.read_bytes() for p in outputs}
    result = invoke(data, "--posneg")
    assert result.exit_code == 0 and "0 rows written, 14 already done" in result.output
    assert {p: p.stat().st_mtime_ns for p in outputs} == stamps
    # interrupted run: two clips never written, progress file cut mid-line, scp not written yet
    wavs = [p for p in outputs if p.suffix == ".wav"]
    lost = [wavs[0], wavs[-2]]  # a negative clip of the first row, the positive of the last but one
    for path in lost:
        path.unlink()
    (data / "enroll_pos.scp").unlink()
    progress = data / "enroll_posneg" / "progress.tsv"
    progress.write_text(progress.read_text()[:-20])
    result = invoke(data, "--posneg")
    assert result.exit_code == 0
    # the two rows that lost a clip, and the row whose progress line was torn
    assert "3 rows written, 11 already done" in result.output
    for path in outputs:
        assert path.read_bytes() == contents[path]  # deterministic rebuild
    kept = [p for p in outputs if p.suffix == ".wav" and p not in lost]
    rewritten = {p.stem for p in kept if p.stat().st_mtime_ns != stamps[p]}
    # the rows that lost a clip were rebuilt whole, plus the row whose progress line was torn
    torn = progress.read_text().splitlines()[-1].split("\t")[0]
    assert rewritten == {p.stem for p in lost} | {torn}
    assert (data / "enroll_posneg" / "pos" / f"{torn}.wav").stat().st_mtime_ns != stamps[
        data / "enroll_posneg" / "pos" / f"{torn}.wav"
    ]


def test_posneg_depends_on_seed_and_plain_rerun_flags_stale_clips(corpus):
    _, data = corpus
    assert invoke(data, "--posneg", "--seed", "0").exit_code == 0
    first = read_records(data)
    assert invoke(data, "--posneg", "--seed", "1").exit_code == 0
    second = read_records(data)
    assert [first[u]["sir_db"] for u in first] != [second[u]["sir_db"] for u in second]
    result = invoke(data, "--seed", "2")
    assert result.exit_code == 0 and "rerun with --posneg" in result.output


def test_cli_errors(corpus, tmp_path):
    _, data = corpus
    result = invoke(tmp_path / "nope")
    assert result.exit_code == 1 and "data directory not found" in str(result.exception)
    result = invoke(data, "--posneg", "--sir-min", "5", "--sir-max", "-5")
    assert result.exit_code == 1 and "SIR range" in str(result.exception)
    assert not (data / "enroll.scp").exists()
    assert invoke(data, "--map-format", "xyz").exit_code == 2
    result = invoke(data, "--map-format", "spex")
    assert result.exit_code == 2 and "--map-format needs --from-map" in result.output
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    (copy / "utt2uniq").write_text("\n".join((copy / "utt2uniq").read_text().splitlines()[1:]) + "\n")
    result = invoke(copy)
    assert result.exit_code == 1 and "utt2uniq: no line for 1 rows" in str(result.exception)


def test_library_call_returns_summary(corpus):
    _, data = corpus
    summary = enroll_data_dir(data, seed=5)
    assert summary.startswith(f"{data}: 14 rows, 4 speakers; enrollments from seed 5")


def test_prepared_libri2mix_gets_valid_lists(tmp_path):
    """The real producer of data dirs (tsekit prepare) feeds enroll, and data validate accepts the result."""
    sys.path.insert(0, str(Path(__file__).parent))
    from corpus_trees import make_libri2mix_tree

    make_libri2mix_tree(tmp_path / "Libri2Mix", splits=("test",), per_split=30)
    runner = CliRunner()
    result = runner.invoke(cli, ["prepare", "libri2mix", str(tmp_path / "Libri2Mix"), str(tmp_path / "data"),
                                 "--splits", "test"])
    assert result.exit_code == 0, result.output
    data = tmp_path / "data" / "test"
    result = invoke(data, "--posneg")
    assert result.exit_code == 0, result.output
    utt2uniq, wav = read_table(data / "utt2uniq"), read_table(data / "wav.scp")
    for utt, chosen in read_table(data / "utt2enroll").items():
        assert utt2uniq[chosen] != utt2uniq[utt] and wav[chosen] != wav[utt]
    result = runner.invoke(cli, ["data", "validate", str(data)])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- pos/neg: several interferers, noise


def floats(field: str) -> list[float]:
    return [float(x) for x in field.split(",")]


def ints(field: str) -> list[int]:
    return [int(x) for x in field.split(",")]


def tile(noise: np.ndarray, offset: int, length: int) -> np.ndarray:
    """The documented noise segment: sample i is noise[(offset + i) % len(noise)]."""
    return noise[(offset + np.arange(length)) % len(noise)]


def power(samples: np.ndarray) -> float:
    return float(np.sum(samples**2))


def speech_parts(record: dict[str, str], spk1: dict[str, str], length: int) -> tuple[list, list]:
    """(interferer parts of the positive, parts of the negative), each segment times its recorded gain."""
    def parts(rows: str, offsets: str, gains: str) -> list[np.ndarray]:
        return [gain * cut(read_audio(spk1[row]), offset, length)
                for row, offset, gain in zip(rows.split(","), ints(offsets), floats(gains), strict=True)]

    return (parts(record["interferer"], record["interferer_offset"], record["interferer_gain"]),
            parts(record["negative"], record["negative_offset"], record["negative_gain"]))


def write_noise(path: Path, seconds: float, seed: int, channels: int = 1, rate: int = RATE) -> np.ndarray:
    """A noise file (channel 1 differs from channel 0); returns channel 0 as written (16-bit)."""
    rng = np.random.default_rng(seed)
    samples = (0.1 * rng.standard_normal((int(rate * seconds), channels))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples if channels > 1 else samples[:, 0], rate, subtype="PCM_16")
    return sf.read(path, dtype="float64", always_2d=True)[0][:, 0]


def check_noisy_clips(data: Path, noises: dict[str, np.ndarray]) -> list[float]:
    """Every clip is scale * (speech + noise) as recorded, at the recorded SNR; returns the SNRs."""
    records = read_records(data)
    pos, neg = read_table(data / "enroll_pos.scp"), read_table(data / "enroll_neg.scp")
    enroll, spk1 = read_table(data / "enroll.scp"), read_table(data / "spk1.scp")
    snrs = []
    for utt, record in records.items():
        target = read_audio(enroll[utt])
        n, scale = len(target), float(record["scale"])
        interferers, negatives = speech_parts(record, spk1, n)
        speech = scale * (target + sum(interferers))
        positive, negative = read_audio(pos[utt]), read_audio(neg[utt])
        noise = noises[record["noise"]]
        positive_noise = scale * float(record["noise_gain"]) * tile(noise, int(record["noise_offset"]), n)
        negative_noise = scale * float(record["negative_noise_gain"]) * tile(
            noise, int(record["negative_noise_offset"]), n
        )
        np.testing.assert_allclose(positive, speech + positive_noise, atol=2e-4)
        np.testing.assert_allclose(negative, scale * sum(negatives) + negative_noise, atol=2e-4)
        residual = positive - speech  # measured: what the clip holds beyond the speech
        assert corr(residual, positive_noise) > 0.999
        snr = 10 * np.log10(power(speech) / power(residual))
        assert snr == pytest.approx(float(record["snr_db"]), abs=0.05)
        # the negative's noise is as loud as the positive's: one scene, with and without the target
        assert power(negative - scale * sum(negatives)) == pytest.approx(power(residual), rel=0.01)
        snrs.append(float(record["snr_db"]))
    return snrs


def test_posneg_two_interferers_hold_what_the_record_says(corpus):
    _, data = corpus
    result = invoke(data, "--posneg", "--seed", "3", "--interferers", "2")
    assert result.exit_code == 0, result.output
    assert "14 rows written" in result.output and "2 interferers" in result.output
    records = read_records(data)
    assert list(next(iter(records.values()))) == [  # no noise: the columns of the 1-interferer record
        "utt", "enroll", "interferer", "interferer_offset", "negative", "negative_offset",
        "sir_db", "interferer_gain", "negative_gain", "scale",
    ]
    pos, neg = read_table(data / "enroll_pos.scp"), read_table(data / "enroll_neg.scp")
    enroll, spk1 = read_table(data / "enroll.scp"), read_table(data / "spk1.scp")
    utt2spk, wav, utt2uniq = (read_table(data / f) for f in ("utt2spk", "wav.scp", "utt2uniq"))
    sirs = []
    for utt, record in records.items():
        rows, negative_rows = record["interferer"].split(","), record["negative"].split(",")
        assert len(rows) == len(negative_rows) == len(floats(record["sir_db"])) == 2
        speakers = [utt2spk[r] for r in rows]
        mixture_speakers = {utt2spk[u] for u in wav if wav[u] == wav[utt]}
        # 4 speakers, 2 in the mixture: the two interferers are exactly the two others
        assert len(set(speakers)) == 2 and set(speakers) == set(SPEAKERS) - mixture_speakers
        assert [utt2spk[r] for r in negative_rows] == speakers
        assert all(utt2uniq[a] != utt2uniq[b] for a, b in zip(rows, negative_rows, strict=True))
        target = read_audio(enroll[utt])
        scale = float(record["scale"])
        interferers, negatives = speech_parts(record, spk1, len(target))
        positive, negative = read_audio(pos[utt]), read_audio(neg[utt])
        np.testing.assert_allclose(positive, scale * (target + sum(interferers)), atol=2e-4)
        np.testing.assert_allclose(negative, scale * sum(negatives), atol=2e-4)
        for part, negative_part, sir in zip(interferers, negatives, floats(record["sir_db"]), strict=True):
            # each interferer at its own SIR; its negative utterance at the same level
            assert 10 * np.log10(power(target) / power(part)) == pytest.approx(sir, abs=0.01)
            assert power(negative_part) == pytest.approx(power(part), rel=1e-3)
            assert corr(positive, part) > 0.2 and abs(corr(negative, part)) < 0.1
            sirs.append(sir)
        assert abs(corr(negative, target)) < 0.1
        assert max(np.abs(positive).max(), np.abs(negative).max()) <= 0.9 + 1e-4
    assert all(-5 <= s <= 5 for s in sirs) and max(sirs) - min(sirs) > 1


def test_posneg_noise_from_noise1_scp(corpus):
    split, data = corpus
    # the fixture's corpus is clean: give every mixture its own noise file, as Libri2Mix mix_both does;
    # short files (tiled under a clip) and long ones, stereo (channel 0 counts)
    noises, noise1 = {}, {}
    for number, utts in enumerate(MIXTURES):
        path = split / "noise" / f"{'_'.join(utts)}.wav"
        noises[str(path)] = write_noise(path, 0.25 if number % 2 else 1.2, seed=number, channels=2)
        for index, utt in enumerate(utts, 1):
            noise1[f"{speaker_of(utt)}-{'_'.join(utts)}-s{index}"] = str(path)
    write_table(data / "noise1.scp", noise1)
    result = invoke(data, "--posneg", "--posneg-noise", "scp", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "noise from 7 files at SNR uniform in [0, 10] dB" in result.output
    records = read_records(data)
    wav = read_table(data / "wav.scp")
    for utt, record in records.items():
        own = {noise1[u] for u in wav if wav[u] == wav[utt]}
        assert record["noise"] in noises and record["noise"] not in own  # never the mixture's own noise
    snrs = check_noisy_clips(data, noises)
    assert all(0 <= s <= 10 for s in snrs) and max(snrs) - min(snrs) > 1
    assert len({r["noise"] for r in records.values()}) > 2  # drawn per row


def test_posneg_noise_from_folder_with_two_interferers(corpus, tmp_path):
    _, data = corpus
    folder = tmp_path / "wham_noise" / "tr"
    noises = {str(folder / "a.wav"): write_noise(folder / "a.wav", 0.3, seed=10),
              str(folder / "sub" / "b.wav"): write_noise(folder / "sub" / "b.wav", 2.0, seed=11)}
    (folder / "notes.txt").write_text("not audio\n")
    result = invoke(data, "--posneg", "--interferers", "2", "--posneg-noise", folder,
                    "--snr-min", "-3", "--snr-max", "3")
    assert result.exit_code == 0, result.output
    records = read_records(data)
    assert {r["noise"] for r in records.values()} == set(noises)
    assert all(len(r["interferer"].split(",")) == 2 for r in records.values())
    snrs = check_noisy_clips(data, noises)
    assert all(-3 <= s <= 3 for s in snrs)


def test_posneg_rerun_with_same_options_is_noop_and_other_options_rebuild(corpus, tmp_path):
    _, data = corpus
    folder = tmp_path / "noise"
    write_noise(folder / "n1.wav", 1.0, seed=1)
    write_noise(folder / "n2.wav", 1.0, seed=2)
    assert invoke(data, "--posneg").exit_code == 0
    outputs = sorted((data / "enroll_posneg").rglob("*.wav")) + [
        data / "enroll_pos.scp", data / "enroll_neg.scp", data / "enroll_posneg.tsv",
        data / "enroll_posneg" / "progress.tsv",
    ]
    default = {p: p.read_bytes() for p in outputs}
    first_interferers = {u: r["interferer"] for u, r in read_records(data).items()}
    options = ["--posneg", "--interferers", "2", "--posneg-noise", folder]
    result = invoke(data, *options)
    assert result.exit_code == 0 and "14 rows written, 0 already done" in result.output
    records = read_records(data)
    assert {u: r["interferer"].split(",")[0] for u, r in records.items()} == first_interferers
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    result = invoke(data, *options)
    assert result.exit_code == 0 and "0 rows written, 14 already done" in result.output
    assert {p: p.stat().st_mtime_ns for p in outputs} == stamps
    result = invoke(data, *options, "--snr-min", "20", "--snr-max", "30")
    assert result.exit_code == 0 and "14 rows written, 0 already done" in result.output
    result = invoke(data, "--posneg", "--interferers", "2")  # noise dropped
    assert result.exit_code == 0 and "14 rows written, 0 already done" in result.output
    assert "noise" not in (data / "enroll_posneg.tsv").read_text().splitlines()[0]
    result = invoke(data, "--posneg")  # back to the defaults: the very same files as the first run
    assert result.exit_code == 0 and "14 rows written, 0 already done" in result.output
    assert {p: p.read_bytes() for p in outputs} == default


def test_posneg_three_interferers_take_a_mixture_speaker_when_no_other_is_left(corpus):
    _, data = corpus
    result = invoke(data, "--posneg", "--interferers", "3")
    assert result.exit_code == 0, result.output
    utt2spk = read_table(data / "utt2spk")
    for utt, record in read_records(data).items():
        speakers = [utt2spk[r] for r in record["interferer"].split(",")]
        assert sorted(speakers) == sorted(set(SPEAKERS) - {utt2spk[utt]})


def test_posneg_option_errors(corpus, tmp_path):
    _, data = corpus
    result = invoke(data, "--posneg", "--interferers", "0")
    assert result.exit_code == 1 and "interferers: 0" in str(result.exception)
    result = invoke(data, "--posneg", "--interferers", "4")  # 3 speakers besides each target
    assert result.exit_code == 1 and str(data) in str(result.exception)
    assert "too few for 4 posneg interferer" in str(result.exception)
    result = invoke(data, "--posneg", "--posneg-noise", "scp")  # the fixture writes no noise1.scp
    assert result.exit_code == 1
    assert str(data) in str(result.exception) and "noise1.scp" in str(result.exception)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "x.flac").write_bytes(b"")
    result = invoke(data, "--posneg", "--posneg-noise", empty)
    assert result.exit_code == 1 and f"{empty}: no .wav files" in str(result.exception)
    wide = tmp_path / "wide"
    write_noise(wide / "n.wav", 0.5, seed=0, rate=16000)
    result = invoke(data, "--posneg", "--posneg-noise", wide)
    message = str(result.exception)
    assert result.exit_code == 1 and str(wide / "n.wav") in message and "16000 Hz" in message
    assert "\n" not in message
    result = invoke(data, "--posneg", "--posneg-noise", wide, "--snr-min", "5", "--snr-max", "0")
    assert result.exit_code == 1 and "SNR range" in str(result.exception)
    for args in (["--interferers", "2"], ["--posneg-noise", "scp"], ["--snr-min", "1"], ["--snr-max", "1"]):
        result = invoke(data, *args)
        assert result.exit_code == 2 and f"{args[0]} needs --posneg" in result.output
    result = invoke(data, "--posneg", "--snr-max", "3")
    assert result.exit_code == 2 and "--snr-max needs --posneg-noise" in result.output
    assert not (data / "enroll.scp").exists() and not (data / "enroll_posneg").exists()


def test_prepared_noisy_libri2mix_gets_posneg_noise_from_its_noise1_scp(tmp_path):
    """tsekit prepare's noise1.scp (mix_both) feeds --posneg-noise scp; data validate accepts the result."""
    sys.path.insert(0, str(Path(__file__).parent))
    from corpus_trees import make_libri2mix_tree

    make_libri2mix_tree(tmp_path / "Libri2Mix", rates=(RATE,), splits=("test",), per_split=30)
    runner = CliRunner()
    result = runner.invoke(cli, ["prepare", "libri2mix", str(tmp_path / "Libri2Mix"), str(tmp_path / "data"),
                                 "--splits", "test", "--mixture", "mix_both", "--sample-rate", str(RATE)])
    assert result.exit_code == 0, result.output
    data = tmp_path / "data" / "test"
    noise1 = read_table(data / "noise1.scp")
    result = invoke(data, "--posneg", "--interferers", "2", "--posneg-noise", "scp")
    assert result.exit_code == 0, result.output
    noises = {path: sf.read(path, dtype="float64", always_2d=True)[0][:, 0] for path in set(noise1.values())}
    for utt, record in read_records(data).items():
        assert record["noise"] != noise1[utt]
    check_noisy_clips(data, noises)
    result = runner.invoke(cli, ["data", "validate", str(data)])
    assert result.exit_code == 0, result.output
