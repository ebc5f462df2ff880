"""The Kaldi data layer: tables, audio entries, validate / split / subset."""

import os
import re
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
from tsekit.data.audio import AudioBlocks, audio_info, load_audio
from tsekit.data.datadir import read_data_dir, split_data_dir, subset_data_dir, write_data_dir
from tsekit.data.table import read_list_table, read_table, write_table
from tsekit.data.validate import validate_data_dir
from tsekit.jobs import atomic_open

RATE = 8000


def tone(seconds: float, freq: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_data_dir(root: Path, speakers=("101", "202", "303"), mixtures_per_pair: int = 2, rate: int = RATE) -> Path:
    """A valid TSE data dir: two rows per mixture, targets as long as their mixtures."""
    audio = root / "audio"
    audio.mkdir(parents=True)
    tables = {n: {} for n in ("wav.scp", "spk1.scp", "utt2spk", "utt2dur", "utt2uniq", "enroll.scp")}
    pairs = [(a, b) for i, a in enumerate(speakers) for b in speakers[i + 1 :]]
    for a, b in pairs:
        for m in range(mixtures_per_pair):
            seconds = 0.4 + 0.1 * m
            mix_id = f"{a}-m{m}_{b}-m{m}"
            sources = [tone(seconds, 200 + int(a) + m), tone(seconds, 300 + int(b) + m)]
            sf.write(audio / f"{mix_id}.wav", sources[0] + sources[1], rate)
            for index, (spk, src) in enumerate(zip((a, b), sources, strict=True), 1):
                sf.write(audio / f"{mix_id}_s{index}.wav", src, rate)
                utt = f"{spk}-{mix_id}-s{index}"
                tables["wav.scp"][utt] = str(audio / f"{mix_id}.wav")
                tables["spk1.scp"][utt] = str(audio / f"{mix_id}_s{index}.wav")
                tables["utt2spk"][utt] = spk
                tables["utt2dur"][utt] = f"{seconds:.3f}"
                tables["utt2uniq"][utt] = f"{spk}-m{m}"
    for utt, spk in tables["utt2spk"].items():
        # the first other row of the same speaker from another mixture
        other = next(u for u, s in sorted(tables["utt2spk"].items()) if s == spk and
                     tables["wav.scp"][u] != tables["wav.scp"][utt])
        tables["enroll.scp"][utt] = tables["spk1.scp"][other]
    return write_data_dir(root / "data", tables)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return make_data_dir(tmp_path)


def test_table_roundtrip_sorted_in_c_order(tmp_path):
    table = {"b": "2", "B": "1", "a-1": "x y", "a_1": "z", "a": "0"}
    write_table(tmp_path / "t", table)
    lines = (tmp_path / "t").read_text().splitlines()
    keys = [line.split()[0] for line in lines]
    expected = subprocess.run(["sort"], input="\n".join(table) + "\n", capture_output=True, text=True,
                              env={**os.environ, "LC_ALL": "C"}).stdout.split()
    assert keys == expected
    assert read_table(tmp_path / "t") == table
    write_table(tmp_path / "l", {"s1": ["u2", "u1"]})
    assert read_list_table(tmp_path / "l") == {"s1": ["u2", "u1"]}


def test_read_table_errors_name_file_and_line(tmp_path):
    (tmp_path / "dup").write_text("a 1\nb 2\na 3\n")
    with pytest.raises(TsekitError, match=r"dup:3: duplicate key 'a'"):
        read_table(tmp_path / "dup")
    (tmp_path / "novalue").write_text("a 1\nb\n")
    with pytest.raises(TsekitError, match=r"novalue:2: .*no value"):
        read_table(tmp_path / "novalue")
    with pytest.raises(TsekitError, match="file not found"):
        read_table(tmp_path / "absent")


def test_tables_are_utf8_with_or_without_a_byte_order_mark(data_dir, tmp_path):
    (tmp_path / "bom").write_bytes("\ufeffa 1\nb 2\n".encode())  # as Notepad saves "UTF-8 with BOM"
    assert read_table(tmp_path / "bom") == {"a": "1", "b": "2"}
    (tmp_path / "latin1").write_bytes("a 1\nb caf\u00e9\n".encode("latin-1"))
    with pytest.raises(TsekitError, match=r"latin1:2: not UTF-8"):
        read_table(tmp_path / "latin1")
    (tmp_path / "list").write_bytes("101-101-m0_202-m0-s1\n\u00e9\n".encode("latin-1"))
    with pytest.raises(TsekitError, match=r"list:2: not UTF-8"):
        subset_data_dir(data_dir, tmp_path / "list", tmp_path / "sub")
    text = (data_dir / "utt2dur").read_text()
    (data_dir / "utt2dur").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert validate_data_dir(data_dir) == []
    (data_dir / "utt2dur").write_bytes(text.encode() + b"\xff 1.0\n")
    assert validate_data_dir(data_dir) == [f"{data_dir / 'utt2dur'}:13: not UTF-8 (convert it, e.g. with iconv -t "
                                           "UTF-8)"]


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_honour_the_umask(tmp_path, umask, file_mode, dir_mode):
    import torch

    from tsekit.checkpoint import save_checkpoint
    from tsekit.data.audio import write_audio
    from tsekit.data.datadir import atomic_dir

    previous = os.umask(umask)
    try:
        write_table(tmp_path / "wav.scp", {"a": "a.wav"})
        write_audio(tmp_path / "a.wav", tone(0.1, 440), RATE)
        save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.zeros(2)}})
        with atomic_dir(tmp_path / "data") as folder:
            write_table(folder / "wav.scp", {"a": "a.wav"})
    finally:
        os.umask(previous)
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    assert modes == {"wav.scp": file_mode, "a.wav": file_mode, "last.pt": file_mode, "data": dir_mode,
                     "data/wav.scp": file_mode}


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    write_table(tmp_path / "t", {"a": "1"})
    with pytest.raises(RuntimeError):
        with atomic_open(tmp_path / "t") as f:
            f.write("half written\n")
            raise RuntimeError("killed")
    assert (tmp_path / "t").read_text() == "a 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_load_audio_path_ark_and_pipe(tmp_path, monkeypatch):
    signal = tone(0.25, 440)
    sf.write(tmp_path / "x.wav", signal, RATE, subtype="PCM_16")
    plain, rate = load_audio(str(tmp_path / "x.wav"))
    assert rate == RATE and np.allclose(plain, signal, atol=1 / 32768)
    # Kaldi ark holding wav data, as `wav-copy` or kaldiio write it
    int16 = np.round(signal * 32767).astype(np.int16)
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/a.ark,{tmp_path}/a.scp", write_function="soundfile") as writer:
        writer("utt1", (RATE, int16))
    entry = read_table(tmp_path / "a.scp")["utt1"]
    assert entry.startswith(str(tmp_path / "a.ark:"))
    from_ark, rate = load_audio(entry)
    assert rate == RATE and np.allclose(from_ark, plain, atol=1 / 32768)
    assert audio_info(entry) == (RATE, len(signal))
    pipe = f"cat {tmp_path}/x.wav |"
    monkeypatch.delenv("TSEKIT_ALLOW_PIPES", raising=False)
    with pytest.raises(TsekitError, match="TSEKIT_ALLOW_PIPES=1"):
        load_audio(pipe)
    monkeypatch.setenv("TSEKIT_ALLOW_PIPES", "1")
    from_pipe, rate = load_audio(pipe)
    assert rate == RATE and np.array_equal(from_pipe, plain)
    with pytest.raises(TsekitError, match="failed"):
        load_audio(f"cat {tmp_path}/absent.wav |")


def test_a_second_pass_over_blocks_reads_the_same_samples_and_runs_a_pipe_once(tmp_path, monkeypatch):
    signal = np.random.default_rng(1).uniform(-0.5, 0.5, 1000).astype(np.float32)
    sf.write(tmp_path / "x.wav", signal, RATE)
    monkeypatch.setenv("TSEKIT_ALLOW_PIPES", "1")
    runs = tmp_path / "runs"
    for entry in (str(tmp_path / "x.wav"), f"echo run >> {runs}; cat {tmp_path}/x.wav |"):
        with AudioBlocks(entry, block=300) as blocks:
            first = list(blocks)
        second = list(blocks.again())
        assert [len(b) for b in first] == [len(b) for b in second] == [300, 300, 300, 100]
        assert np.array_equal(np.concatenate(first), np.concatenate(second))
    assert runs.read_text() == "run\n"  # the pipe ran for the first pass only


def test_load_audio_rejects_bad_audio(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), RATE)
    with pytest.raises(TsekitError, match="empty.wav: empty audio"):
        load_audio(str(tmp_path / "empty.wav"))
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.2], np.float32), RATE, subtype="FLOAT")
    with pytest.raises(TsekitError, match="NaN"):
        load_audio(str(tmp_path / "nan.wav"))
    (tmp_path / "junk.wav").write_bytes(b"not a wav")
    with pytest.raises(TsekitError, match="junk.wav: cannot read audio"):
        load_audio(str(tmp_path / "junk.wav"))


def test_valid_data_dir_has_no_problems(data_dir):
    assert validate_data_dir(data_dir, require_enroll=True) == []
    tables = read_data_dir(data_dir)
    assert len(tables["wav.scp"]) == 12 and set(tables["wav.scp"]) == set(tables["enroll.scp"])


def _edit(path: Path, transform) -> None:
    path.write_text(transform(path.read_text()))


@pytest.mark.parametrize(
    "breakage, expected",
    [
        (lambda d: (d / "spk1.scp").unlink(), "spk1.scp: missing"),
        (lambda d: _edit(d / "utt2dur", lambda s: "\n".join(s.splitlines()[::-1]) + "\n"), "utt2dur: not sorted"),
        (lambda d: _edit(d / "spk1.scp", lambda s: "".join(s.splitlines(True)[1:])),
         "spk1.scp: 1 utterances of wav.scp missing"),
        (lambda d: _edit(d / "spk2utt", lambda s: s.replace("101-", "xx-", 1)), "spk2utt: does not match utt2spk"),
        (lambda d: _edit(d / "utt2dur", lambda s: s.replace("0.400", "0.700", 1)), "utt2dur: .* mixture lasts 0.400"),
        (lambda d: (d / "enroll.scp").write_text((d / "spk1.scp").read_text()), "12 rows use the target itself"),
        (lambda d: os.unlink(read_table(d / "spk1.scp")["101-101-m0_202-m0-s1"]), "file not found"),
        (lambda d: sf.write(read_table(d / "spk1.scp")["101-101-m0_202-m0-s1"], tone(0.4, 300, 16000), 16000),
         "sample rates differ: 8000 Hz .*; 16000 Hz"),
        (lambda d: sf.write(read_table(d / "spk1.scp")["101-101-m0_202-m0-s1"], tone(0.3, 300), RATE),
         "2400 samples, mixture has 3200"),
        (lambda d: sf.write(read_table(d / "enroll.scp")["101-101-m0_202-m0-s1"], np.zeros(0), RATE),
         "empty audio"),
    ],
    ids=["missing-file", "unsorted", "key-mismatch", "spk2utt", "utt2dur", "enroll-is-target", "missing-audio",
         "sample-rate", "length", "empty-wav"],
)
def test_validate_finds_each_problem(data_dir, breakage, expected):
    breakage(data_dir)
    problems = validate_data_dir(data_dir)
    assert any(re.search(expected, p) for p in problems), problems


def test_validate_requires_speaker_prefix_order(tmp_path):
    # speaker "10" and "100": with '_' joining, utt order and speaker order disagree
    tables = {"wav.scp": {"10_a": "a.wav", "100_b": "b.wav"}, "spk1.scp": {"10_a": "a.wav", "100_b": "b.wav"},
              "utt2spk": {"10_a": "10", "100_b": "100"}}
    write_data_dir(tmp_path / "d", tables)
    problems = validate_data_dir(tmp_path / "d", check_audio=False)
    assert any("not sorted by speaker" in p for p in problems), problems


def test_split_covers_every_row_once(data_dir):
    parts = split_data_dir(data_dir, 5)
    assert [p.name for p in parts] == ["1", "2", "3", "4", "5"]
    assert all(p.parent == data_dir / "split5" for p in parts)
    seen = []
    for part in parts:
        assert validate_data_dir(part, require_enroll=True) == []
        seen += list(read_table(part / "wav.scp"))
    assert seen == list(read_table(data_dir / "wav.scp"))
    assert sorted(len(read_table(p / "wav.scp")) for p in parts) == [2, 2, 2, 3, 3]
    with pytest.raises(TsekitError, match="cannot split 12 utterances into 13"):
        split_data_dir(data_dir, 13)


def test_subset(data_dir, tmp_path):
    keep = ["202-101-m1_202-m1-s2", "101-101-m0_202-m0-s1"]
    (tmp_path / "list").write_text("\n".join(keep) + "\n")
    out = subset_data_dir(data_dir, tmp_path / "list", tmp_path / "sub")
    assert list(read_table(out / "wav.scp")) == sorted(keep)
    assert read_table(out / "spk2utt") == {"101": keep[1], "202": keep[0]}
    assert validate_data_dir(out) == []
    (tmp_path / "bad").write_text("nope\n")
    with pytest.raises(TsekitError, match="1 utterances are not in"):
        subset_data_dir(data_dir, tmp_path / "bad", tmp_path / "sub2")
    assert not (tmp_path / "sub2").exists()


def test_cli_validate_split_subset(data_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "validate", str(data_dir)])
    assert result.exit_code == 0 and "OK" in result.output
    (data_dir / "spk1.scp").unlink()
    result = runner.invoke(cli, ["data", "validate", str(data_dir)])
    assert result.exit_code == 1 and "spk1.scp: missing" in result.output
    result = runner.invoke(cli, ["data", "split", str(data_dir), "2"])
    assert result.exit_code == 0, result.output
    assert (data_dir / "split2" / "2" / "wav.scp").is_file()


def test_cli_error_is_one_line_with_nonzero_exit(tmp_path):
    tsekit = Path(sys.executable).parent / "tsekit"
    proc = subprocess.run([str(tsekit), "data", "split", str(tmp_path / "absent"), "2"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"tsekit: error: {tmp_path / 'absent'}: data directory not found"]


@pytest.mark.parametrize("args", [["--help"], ["data", "--help"], ["prepare", "--help"], ["enroll", "--help"],
                                  ["score", "--help"], ["train", "--help"], ["infer", "--help"], ["extract", "--help"],
                                  ["report", "--help"], ["prepare", "libri2mix", "--help"],
                                  ["data", "validate", "--help"]])
def test_help_is_fast_and_imports_no_heavy_module(args):
    tsekit = Path(sys.executable).parent / "tsekit"
    probe = ("import sys; sys.argv = ['tsekit'] + sys.argv[1:]\nfrom tsekit.cli import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print('HEAVY', sorted(m for m in ('torch', 'numpy', 'soundfile', 'kaldiio') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
    assert "Usage:" in proc.stdout and "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
    import time
    start = time.perf_counter()
    subprocess.run([str(tsekit), *args], capture_output=True, check=True)
    assert time.perf_counter() - start < 1.0
