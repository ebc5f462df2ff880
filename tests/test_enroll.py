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
    if offset >= 0:
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
