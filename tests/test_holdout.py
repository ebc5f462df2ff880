"""tsekit data holdout: a data dir split by source utterance, and the teacher validated on the held-out part."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from corpus_trees import make_libri2mix_tree

from tsekit import TsekitError
from tsekit.cli import cli
from tsekit.corpora.librimix import prepare_libri2mix
from tsekit.data.enroll import enroll_data_dir
from tsekit.data.holdout import choose_heldout, holdout_data_dir
from tsekit.data.table import read_list_table, read_table
from tsekit.data.validate import validate_data_dir

RATE = 8000
PER_ROW = ("wav.scp", "spk1.scp", "utt2spk", "utt2uniq", "utt2dur", "noise1.scp")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """data/train-100 (enrolled, with pos/neg clips), data/plain (the same rows, never enrolled), data/dev."""
    root = tmp_path_factory.mktemp("holdout")
    make_libri2mix_tree(root / "Libri2Mix", rates=(RATE,), splits=("train-100", "dev"), per_split=24)
    prepare_libri2mix(root / "Libri2Mix", root / "data", sample_rate=RATE, mixture="mix_both",
                      splits=("train-100", "dev"))
    shutil.copytree(root / "data" / "train-100", root / "data" / "plain")
    enroll_data_dir(root / "data" / "train-100", posneg=True)
    enroll_data_dir(root / "data" / "dev")
    return root / "data"


def tables(folder: Path) -> dict[str, dict[str, str]]:
    return {p.name: read_table(p) for p in sorted(folder.iterdir()) if p.is_file()}


def sources_by_speaker(folder: Path) -> dict[str, set[str]]:
    uniq, utt2spk = read_table(folder / "utt2uniq"), read_table(folder / "utt2spk")
    out: dict[str, set[str]] = {}
    for utt, spk in utt2spk.items():
        out.setdefault(spk, set()).add(uniq[utt])
    return out


def test_split_by_source_utterance(corpus, tmp_path):
    data = corpus / "train-100"
    per = 3  # the fake corpus's speakers have 4 to 13 source utterances: one has too few to take part
    result = holdout_data_dir(data, tmp_path / "tr", tmp_path / "ho", per_speaker=per, seed=3)
    train, held = tmp_path / "tr", tmp_path / "ho"
    for part in (train, held):
        assert validate_data_dir(part, require_enroll=True) == [], part
    original, tr, ho = tables(data), tables(train), tables(held)

    # the rows are split, not changed: every per-row table is the input's, cut to the part's rows
    assert set(tr["wav.scp"]).isdisjoint(ho["wav.scp"])
    assert set(tr["wav.scp"]) | set(ho["wav.scp"]) == set(original["wav.scp"])
    for name in PER_ROW:
        for part in (tr, ho):
            assert part[name] == {u: original[name][u] for u in part["wav.scp"]}, name

    # no held-out source utterance is a training target; each speaker that takes part holds out exactly
    # per_speaker of them and keeps two (sampled enrollments need another source) for training
    before, kept, out = sources_by_speaker(data), sources_by_speaker(train), sources_by_speaker(held)
    held_sources = set().union(*out.values())
    assert held_sources.isdisjoint(set(tr["utt2uniq"].values()))
    assert len(held_sources) == result.heldout_sources and out
    for spk, sources in before.items():
        if spk in out:
            assert len(out[spk]) == per and len(kept[spk]) == len(sources) - per >= 2
        else:
            assert len(sources) < per + 2 and kept[spk] == sources  # too few to take part: all of it trains
    assert set(kept) == set(before)  # every speaker is still a training speaker
    assert result.too_few == len(set(before) - set(out)) == 1
    assert (result.train_rows, result.heldout_rows) == (len(tr["wav.scp"]), len(ho["wav.scp"]))

    # enrollments stay on their side: fixed ones (enroll.scp, utt2enroll) and the pool sampled ones come from
    for part, own in ((tr, set(tr["wav.scp"])), (ho, set(ho["wav.scp"]))):
        targets = {part["spk1.scp"][u] for u in own}
        assert set(part["utt2enroll"].values()) <= own
        assert set(part["enroll.scp"].values()) <= targets
        assert all(part["utt2uniq"][part["utt2enroll"][u]] != part["utt2uniq"][u] for u in own)
    for folder, part in ((train, tr), (held, ho)):
        pool = read_list_table(folder / "spk2enroll")
        assert {u for rows in pool.values() for u in rows} <= set(part["wav.scp"])
        assert read_list_table(folder / "spk2utt") == {
            spk: sorted(u for u in part["utt2spk"] if part["utt2spk"][u] == spk) for spk in pool}
    # the pos/neg clips were mixed from the old enrollments: not carried, and said so
    assert not any((part / name).exists() for part in (train, held)
                   for name in ("enroll_pos.scp", "enroll_neg.scp", "enroll_posneg.tsv", "enroll_posneg"))
    assert result.not_carried == ["enroll_pos.scp", "enroll_neg.scp", "enroll_posneg.tsv"]
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind


def test_deterministic_by_seed_and_a_rerun_rewrites_nothing(corpus, tmp_path):
    data = corpus / "train-100"
    first = holdout_data_dir(data, tmp_path / "a" / "tr", tmp_path / "a" / "ho", seed=1)
    holdout_data_dir(data, tmp_path / "b" / "tr", tmp_path / "b" / "ho", seed=1)
    holdout_data_dir(data, tmp_path / "c" / "tr", tmp_path / "c" / "ho", seed=2)
    assert not first.unchanged
    for name in ("tr", "ho"):
        assert tables(tmp_path / "a" / name) == tables(tmp_path / "b" / name)
    assert read_table(tmp_path / "a" / "ho" / "wav.scp") != read_table(tmp_path / "c" / "ho" / "wav.scp")

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*")}
    again = holdout_data_dir(data, tmp_path / "a" / "tr", tmp_path / "a" / "ho", seed=1)
    assert again.unchanged and again.summary().endswith("; unchanged")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*")} == stamps
    # a damaged part is rebuilt on a rerun
    (tmp_path / "a" / "tr" / "text").write_text("broken\n")
    assert not holdout_data_dir(data, tmp_path / "a" / "tr", tmp_path / "a" / "ho", seed=1).unchanged
    assert tables(tmp_path / "a" / "tr") == tables(tmp_path / "b" / "tr")


def test_a_speakers_draw_depends_on_its_own_utterances_only():
    utt2spk = {f"{spk}-{i}": spk for spk in ("a", "b", "c") for i in range(6)}
    uniq = {utt: utt for utt in utt2spk}
    everyone, _ = choose_heldout(utt2spk, uniq, per_speaker=2, min_train=2, seed=0)
    without_b, _ = choose_heldout({u: s for u, s in utt2spk.items() if s != "b"}, uniq, 2, 2, seed=0)
    assert without_b == {u for u in everyone if not u.startswith("b-")}
    assert len(everyone) == 6


def test_without_enrollments_one_per_speaker_and_other_tables(corpus, tmp_path):
    data = tmp_path / "plain"
    shutil.copytree(corpus / "plain", data)
    rows = read_table(data / "wav.scp")
    speakers = sorted(set(read_table(data / "utt2spk").values()))
    (data / "utt2lang").write_text("".join(f"{u} en\n" for u in sorted(rows)))  # another per-row table
    (data / "spk2gender").write_text("".join(f"{s} f\n" for s in speakers))  # a per-speaker one
    (data / "notes.md").write_text("# how this dir was made\n")  # neither
    result = holdout_data_dir(data, tmp_path / "tr", tmp_path / "ho", per_speaker=1)
    assert not (tmp_path / "tr" / "enroll.scp").exists() and not (tmp_path / "tr" / "spk2enroll").exists()
    before, kept, out = (sources_by_speaker(d) for d in (data, tmp_path / "tr", tmp_path / "ho"))
    for spk, sources in before.items():  # every speaker with two sources holds one out
        assert len(out.get(spk, ())) == (1 if len(sources) >= 2 else 0) and kept[spk]
    for part in (tmp_path / "tr", tmp_path / "ho"):
        assert validate_data_dir(part) == []
        assert set(read_table(part / "utt2lang")) == set(read_table(part / "wav.scp"))
        assert set(read_table(part / "spk2gender")) == set(read_table(part / "utt2spk").values())
        assert not (part / "notes.md").exists()
    assert result.not_carried == ["notes.md"] and "not carried: notes.md" in result.summary()


@pytest.mark.parametrize("setup, kwargs, message", [
    (lambda d: shutil.rmtree(d), {}, "train-100: data directory not found"),
    (lambda d: (d / "utt2spk").unlink(), {}, r"train-100/utt2spk: file not found"),
    (lambda d: (d / "text").write_text("nobody HELLO\n"), {}, r"train-100/text: keys do not match wav.scp"),
    (None, {"per_speaker": 0}, "per_speaker must be at least 1, got 0"),
    (None, {"per_speaker": 1}, r"train-100/enroll.scp: held-out rows are enrolled by another held-out utterance"),
    (None, {"per_speaker": 40}, "no speaker has the 42 distinct source utterances needed to hold out 40"),
])
def test_errors_leave_no_output(corpus, tmp_path, setup, kwargs, message):
    data = tmp_path / "train-100"
    shutil.copytree(corpus / "train-100", data)
    if setup:
        setup(data)
    with pytest.raises(TsekitError, match=message):
        holdout_data_dir(data, tmp_path / "out" / "tr", tmp_path / "out" / "ho", **kwargs)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_outputs_must_differ_from_the_input_and_each_other(corpus, tmp_path):
    with pytest.raises(TsekitError, match="must be two folders other than the input"):
        holdout_data_dir(corpus / "train-100", corpus / "train-100", tmp_path / "ho")
    with pytest.raises(TsekitError, match="must be two folders other than the input"):
        holdout_data_dir(corpus / "train-100", tmp_path / "x", tmp_path / "x")


def test_cli(corpus, tmp_path):
    runner = CliRunner()
    args = ["data", "holdout", str(corpus / "train-100"), "--train-out", str(tmp_path / "tr"),
            "--heldout-out", str(tmp_path / "ho")]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = len(read_table(tmp_path / "tr" / "wav.scp"))
    assert len(result.output.strip().splitlines()) == 1 and f"{tmp_path / 'tr'} {rows} rows" in result.output
    assert "2 per speaker, seed 0" in result.output
    tsekit = Path(sys.executable).parent / "tsekit"
    proc = subprocess.run([str(tsekit), *args, "--per-speaker", "1"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"tsekit: error: {corpus / 'train-100' / 'enroll.scp'}: held-out rows are enrolled by another held-out "
        "utterance of their speaker, so hold out at least 2 per speaker (got 1)"]


@pytest.mark.usefixtures("one_torch_thread")
def test_teacher_validated_on_held_out_utterances_has_a_loss(corpus, tmp_path):
    """On unseen speakers (a dev set) every validation row's speaker loss is 0; on the held-out part it is not."""
    from tsekit.train.config import load_config
    from tsekit.train.trainer import train

    holdout_data_dir(corpus / "train-100", tmp_path / "tr", tmp_path / "ho")
    teacher = {"model": {"name": "tfgridnet_speaker",
                         "params": {"n_fft": 32, "hop": 16, "embed_dim": 4, "lstm_hidden": 4, "heads": 1,
                                    "attention_dim": 2, "num_blocks": 1, "speaker_dim": 4}},
               "data": {"sample_rate": RATE, "chunk_seconds": 0.2, "enroll": "sampled", "enroll_seconds": 0.3,
                        "batch_size": 4, "num_workers": 0},
               "loss": [{"name": "speaker_ce", "output": "speaker_logits"}],
               "train": {"epochs": 1, "max_steps_per_epoch": 2, "log_interval": 1}}
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    cfg = load_config(tmp_path / "teacher.yaml")

    def valid_loss(valid: Path, exp: str) -> float:
        stage = train(cfg, tmp_path / "tr", valid, tmp_path / exp, device="cpu")
        rows = [line.split("\t") for line in (stage / "log" / "scalars.tsv").read_text().splitlines()]
        return [float(value) for _, key, value in rows if key == "valid/loss"][-1]

    # the fake corpus's dev set has the training speakers; renamed, it is a dev set of unseen speakers
    unseen = tmp_path / "unseen"
    shutil.copytree(corpus / "dev", unseen)
    (unseen / "utt2spk").write_text("".join(f"{u} new{s}\n" for u, s in read_table(unseen / "utt2spk").items()))
    assert valid_loss(unseen, "on_unseen") == 0.0  # the old recipe's choice: nothing to select a checkpoint on
    assert valid_loss(tmp_path / "ho", "on_heldout") > 0.1


def test_a_transcript_of_some_rows_only_is_split_with_them(corpus, tmp_path):
    # LibriMix's min mode: a target cut short has no transcript, so text leaves rows out (the mini recipe's data)
    data = tmp_path / "data"
    shutil.copytree(corpus / "plain", data)
    rows = sorted(read_table(data / "wav.scp"))
    text = {utt: f"WORDS OF {utt}" for utt in rows[::2]}
    (data / "text").write_text("".join(f"{utt} {words}\n" for utt, words in text.items()))
    holdout_data_dir(data, tmp_path / "tr", tmp_path / "ho", per_speaker=2)
    for part in ("tr", "ho"):
        kept = set(read_table(tmp_path / part / "wav.scp"))
        assert read_table(tmp_path / part / "text") == {u: w for u, w in text.items() if u in kept}, part
