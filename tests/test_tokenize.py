"""tsekit tokenize: keys, shapes and contents of the token arks, jobs, resuming, errors, read_tokens.

The data dir is a tiny Libri2Mix look-alike at 16 kHz (4 mixtures, 8 rows, 0.1-0.2 s of seeded noise per
source) with enrollments from ``tsekit enroll``; the codec is the real EnCodec 24 kHz architecture with
random weights (``encodec_codec.random_checkpoint``). Expected tokens come from encoding the
audio files directly, not from the arks.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from click.testing import CliRunner

from tsekit import TsekitError
from tsekit.cli import cli
from tsekit.codec import registry
from tsekit.codec.registry import load_codec, resample
from tsekit.codec.tokenize import tokenize_data_dir
from tsekit.corpora.common import Row, rows_to_tables, write_splits
from tsekit.data.enroll import enroll_data_dir
from tsekit.data.table import read_list_table, read_table
from tsekit.data.tokens import enrollment_tokens, read_codec_info, read_tokens

pytest.importorskip("encodec")
from tsekit.pretrained.encodec_codec import random_checkpoint  # noqa: E402  (after the skip: it needs encodec)

RATE = 16000
MIXTURES = [("121-1-0", "237-1-0"), ("260-1-0", "61-1-0"), ("121-1-1", "260-1-1"), ("237-1-1", "61-1-1")]
SIGNALS = {"mixture": "wav.scp", "target": "spk1.scp", "enroll": "enroll.scp"}


def source_signal(utt: str) -> np.ndarray:
    rng = np.random.default_rng(list(utt.encode()))
    length = 2 * int(rng.integers(800, 1600))  # even: 16 -> 24 kHz gives exactly 1.5 x the samples
    return (0.2 * rng.standard_normal(length)).astype(np.float32)


def build_data(root: Path) -> Path:
    split, rows = root / "corpus", []
    for utts in MIXTURES:
        mixture_id = "_".join(utts)
        sources = [source_signal(u) for u in utts]
        length = min(len(s) for s in sources)
        sources = [s[:length] for s in sources]
        sf.write(_mkdir(split / "mix" / f"{mixture_id}.wav"), sum(sources), RATE, subtype="PCM_16")
        for index, (utt, source) in enumerate(zip(utts, sources, strict=True), 1):
            sf.write(_mkdir(split / f"s{index}" / f"{mixture_id}.wav"), source, RATE, subtype="PCM_16")
            rows.append(Row(mixture_id, index, utt.split("-")[0], split / "mix" / f"{mixture_id}.wav",
                            split / f"s{index}" / f"{mixture_id}.wav", utt))
    write_splits(root / "data", {"test": rows_to_tables(rows, RATE)})
    enroll_data_dir(root / "data" / "test", seed=0)
    return root / "data" / "test"


def _mkdir(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("weights") / "encodec.th", 0)


@pytest.fixture
def data(tmp_path) -> Path:
    return build_data(tmp_path)


def run(data: Path, out: Path, weights: Path, **kwargs):
    params = {"bandwidth": kwargs.pop("bandwidth", 3.0), "weights": str(weights)}
    return tokenize_data_dir("encodec_24khz", data, out, params=params, **kwargs)


def read_signal(out: Path, signal: str) -> dict[str, np.ndarray]:
    """Every matrix of a signal, read with plain kaldiio (what any Kaldi-style reader sees)."""
    return {key: np.asarray(mat) for key, mat in kaldiio.load_scp(str(out / signal / "tokens.scp")).items()}


def test_tokens_of_every_signal_match_the_audio_and_read_back(one_torch_thread, data, weights, tmp_path):
    out = tmp_path / "dump"
    summary = run(data, out, weights)
    rows = read_table(data / "wav.scp")
    assert len(rows) == 8 and summary.encoded == 24 and summary.complete == ["mixture", "target", "enroll"]
    codec = load_codec("encodec_24khz", bandwidth=3.0, weights=str(weights))
    info = read_codec_info(out)
    assert info == {"codec": "encodec_24khz", "bandwidth": 3.0, "sample_rate": 24000, "frame_rate": 75.0,
                    "num_codebooks": 4, "codebook_size": 1024, "weights_sha256": codec.weights_sha256}
    assert len(codec.weights_sha256) == 64
    for signal, table_name in SIGNALS.items():
        table = read_table(data / table_name)
        scp = read_table(out / signal / "tokens.scp")
        assert set(scp) == set(rows)  # one matrix per row
        mats = read_signal(out, signal)
        for key, entry in table.items():
            audio, rate = sf.read(entry, dtype="float32")
            assert rate == RATE
            frames = math.ceil(len(audio) * 3 // 2 / 320)
            with torch.inference_mode():
                expected = codec.encode(resample(torch.from_numpy(audio)[None], RATE, 24000))[0].numpy()
            assert mats[key].dtype == np.int32 and mats[key].shape == (4, frames), (signal, key)
            np.testing.assert_array_equal(mats[key], expected)
            np.testing.assert_array_equal(read_tokens(scp[key], info, f"{signal}: {key}"), expected)
    # the signals are not mixed up: a mixture's tokens differ from its target's
    assert any(not np.array_equal(read_signal(out, "mixture")[k], read_signal(out, "target")[k]) for k in rows)


def test_every_enrollment_has_tokens_under_the_documented_key(one_torch_thread, data, weights, tmp_path):
    out = tmp_path / "dump"
    run(data, out, weights)
    targets, enrolls = read_table(data / "spk1.scp"), read_table(data / "enroll.scp")
    by_audio = {entry: row for row, entry in targets.items()}
    mats = {signal: read_signal(out, signal) for signal in SIGNALS}
    for row, entry in enrolls.items():
        signal, key = enrollment_tokens(row)
        assert (signal, key) == ("enroll", row)
        # tsekit enroll picks the spk1.scp audio of another row: the same audio gives the same tokens
        np.testing.assert_array_equal(mats[signal][key], mats["target"][by_audio[entry]])
        assert by_audio[entry] != row
    for rows in read_list_table(data / "spk2enroll").values():
        for row in rows:
            signal, key = enrollment_tokens("any-row", enroll_row=row)
            assert signal == "target" and key in mats["target"]


def test_positive_and_negative_enrollment_clips_are_tokenized(one_torch_thread, data, weights, tmp_path):
    enroll_data_dir(data, seed=0, posneg=True)
    out = tmp_path / "dump"
    summary = run(data, out, weights)
    assert summary.complete == ["mixture", "target", "enroll", "enroll_pos", "enroll_neg"] and summary.encoded == 40
    codec = load_codec("encodec_24khz", bandwidth=3.0, weights=str(weights))
    for signal in ("enroll_pos", "enroll_neg"):
        clips, mats = read_table(data / f"{signal}.scp"), read_signal(out, signal)
        assert set(mats) == set(read_table(data / "wav.scp"))
        for row, entry in clips.items():
            audio, _ = sf.read(entry, dtype="float32")
            with torch.inference_mode():
                expected = codec.encode(resample(torch.from_numpy(audio)[None], RATE, 24000))[0].numpy()
            np.testing.assert_array_equal(mats[row], expected)


def test_two_jobs_give_the_tokens_of_one_run_and_the_last_writes_the_scp(one_torch_thread, data, weights, tmp_path):
    run(data, tmp_path / "one", weights)
    runner = CliRunner()
    # the bandwidth as the recipe passes it: the system config's codec.params
    args = ["tokenize", "--codec", "encodec_24khz", "--params", "{bandwidth: 3.0}", "--weights", str(weights),
            str(data), str(tmp_path / "two"), "--nj", "2"]
    first = runner.invoke(cli, [*args, "--job", "1"])
    assert first.exit_code == 0, first.output
    assert not list((tmp_path / "two").glob("*/tokens.scp"))  # job 2's rows are missing: no scp yet
    second = runner.invoke(cli, [*args, "--job", "2"])
    assert second.exit_code == 0, second.output
    for signal in SIGNALS:
        assert (tmp_path / "two" / signal / "tokens.1.ark").is_file()
        assert (tmp_path / "two" / signal / "tokens.2.ark").is_file()
        one, two = read_signal(tmp_path / "one", signal), read_signal(tmp_path / "two", signal)
        assert one.keys() == two.keys()
        for key in one:
            np.testing.assert_array_equal(one[key], two[key])


def test_a_rerun_encodes_nothing_and_rewrites_nothing(one_torch_thread, data, weights, tmp_path):
    out = tmp_path / "dump"
    run(data, out, weights)
    stamps = {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}
    again = run(data, out, weights)
    assert again.encoded == 0 and again.skipped == 24 and again.complete == ["mixture", "target", "enroll"]
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()} == stamps


def test_a_killed_run_resumes_where_it_stopped(one_torch_thread, data, weights, tmp_path, monkeypatch):
    run(data, tmp_path / "reference", weights)
    out = tmp_path / "dump"
    calls = []

    def dies_on_the_sixth_call(*args):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return resample(*args)

    monkeypatch.setattr(registry, "resample", dies_on_the_sixth_call)
    with pytest.raises(KeyboardInterrupt):
        run(data, out, weights)
    monkeypatch.undo()
    assert not list(out.glob("*/tokens.scp"))
    # a kill while writing a record line leaves it torn: it must be dropped, not read
    with open(out / "mixture" / "parts" / "all.scp", "a", encoding="utf-8") as f:
        f.write("61-260-1-0_61-1-0-s2 /some/where.ar")  # a row not encoded yet
    resumed = run(data, out, weights)
    assert resumed.encoded == 24 - 5 and resumed.skipped == 5
    for signal in SIGNALS:
        reference, resumed_mats = read_signal(tmp_path / "reference", signal), read_signal(out, signal)
        assert reference.keys() == resumed_mats.keys()
        for key in reference:
            np.testing.assert_array_equal(reference[key], resumed_mats[key])


def test_a_missing_audio_file_is_one_line_naming_it_and_nothing_is_written(one_torch_thread, data, weights, tmp_path):
    gone = Path(read_table(data / "spk1.scp")["61-260-1-0_61-1-0-s2"])
    gone.unlink()
    out = tmp_path / "dump"
    with pytest.raises(TsekitError) as err:
        run(data, out, weights)
    assert str(gone) in str(err.value) and "spk1.scp" in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()
    result = CliRunner().invoke(cli, ["tokenize", "--codec", "encodec_24khz", "--weights", str(weights), str(data),
                                      str(out)])
    assert result.exit_code == 1 and isinstance(result.exception, TsekitError)
    assert not out.exists()


def test_another_codec_setting_into_the_same_out_is_refused(one_torch_thread, data, weights, tmp_path):
    out = tmp_path / "dump"
    run(data, out, weights, bandwidth=1.5)
    with pytest.raises(TsekitError, match="holds tokens of encodec_24khz") as err:
        run(data, out, weights, bandwidth=3.0)
    assert "\n" not in str(err.value)
    assert read_codec_info(out)["num_codebooks"] == 2
    # the same codec and setting with other weights (a retrained codec): refused, naming both
    other = random_checkpoint(tmp_path / "other.th", 1)
    recorded = read_codec_info(out)["weights_sha256"]
    with pytest.raises(TsekitError) as err:
        run(data, out, other, bandwidth=1.5)
    named = re.search(f"^{re.escape(str(out / 'codec.yaml'))}: tokens of encodec_24khz with weights sha256 "
                      f"{recorded[:16]}, but codec encodec_24khz holds weights sha256 ([0-9a-f]{{16}}) ",
                      str(err.value))
    assert named and named[1] != recorded[:16] and "\n" not in str(err.value)
    # a codec.yaml written before the hash was recorded: accepted, and left without one
    info = read_codec_info(out)
    del info["weights_sha256"]
    (out / "codec.yaml").write_text(yaml.safe_dump(info))
    assert run(data, out, other, bandwidth=1.5).encoded == 0
    assert "weights_sha256" not in read_codec_info(out)


def test_read_tokens_checks_codebooks_range_and_format(tmp_path):
    info = {"num_codebooks": 2, "codebook_size": 8}
    ark = tmp_path / "t.ark"
    entries = {}
    with open(ark, "ab") as f:
        for key, mat in {"ok": np.array([[0, 7], [1, 2]], np.int32), "three": np.zeros((3, 2), np.int32),
                         "big": np.array([[0, 8], [1, 2]], np.int32), "float": np.zeros((2, 2), np.float32)}.items():
            entries[key] = f"{ark}:{f.tell() + len(key) + 1}"
            kaldiio.save_ark(f, {key: mat}, write_function="numpy")
        entries["pickle"] = f"{ark}:{f.tell() + len('pickle') + 1}"
        kaldiio.save_ark(f, {"pickle": np.zeros((2, 2), np.int32)}, write_function="pickle")
    np.testing.assert_array_equal(read_tokens(entries["ok"], info), [[0, 7], [1, 2]])
    for key, message in [("three", "3 codebooks, but the codec uses 2"), ("big", r"outside \[0, 8\)"),
                         ("float", "expected integer tokens"), ("pickle", "not a token matrix")]:
        with pytest.raises(TsekitError, match=message) as err:
            read_tokens(entries[key], info, "what")
        assert str(err.value).startswith(f"what: {entries[key]}") and "\n" not in str(err.value)
    with pytest.raises(TsekitError, match="file not found"):
        read_tokens(f"{tmp_path / 'gone.ark'}:5", info)
    npy = tmp_path / "t.npy"
    np.save(npy, np.array([[3, 4], [5, 6]], np.int64))
    assert read_tokens(npy, info).dtype == np.int32


def test_codec_options_read_the_config_mapping_and_named_options_win():
    from tsekit.codec.registry import codec_options

    assert codec_options("{bandwidth: 6.0, weights: w.th}", bandwidth=3.0, weights=None) == {"bandwidth": 3.0,
                                                                                              "weights": "w.th"}
    assert codec_options("{}") == {} and codec_options(None) == {}
    with pytest.raises(TsekitError, match="expected a YAML mapping"):
        codec_options("[6.0]")
