"""Recipes end to end through run.sh: stages 1-2, idempotent reruns, unbuilt stages stop cleanly."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from corpus_trees import (
    make_libri2mix_tree,
    make_libri3mix_tree,
    make_wham_tree,
    make_wsj0_2mix_tree,
    write_librispeech_transcripts,
)
from recipe_runs import TINY_ZSPEX, recipe_copy, run_recipe
from test_codec_pretrained_vocoders import HIFIGAN_CONFIG, hifigan_reference
from test_codec_train import tiny_config as tiny_codec_config

from tsekit.data.table import read_table, write_table
from tsekit.data.validate import validate_data_dir


def check_stages_1_2(recipe: Path, sets: tuple[str, ...], root_option: list[str]) -> None:
    proc = run_recipe(recipe, *root_option, "--stop-stage", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in sets:
        data = recipe / "data" / name
        assert validate_data_dir(data, require_enroll=True) == [], name
        enroll, target, mixture = (read_table(data / f) for f in ("enroll.scp", "spk1.scp", "wav.scp"))
        assert set(enroll) == set(target)
        assert all(enroll[u] != target[u] and enroll[u] not in mixture.values() for u in enroll)
        assert "enroll.scp" in proc.stdout  # stage 2 prints what it wrote
    before = {p: p.stat().st_mtime_ns for p in (recipe / "data").rglob("*") if p.is_file()}
    again = run_recipe(recipe, *root_option, "--stop-stage", "2")
    assert again.returncode == 0 and "skipping" in again.stdout
    assert before == {p: p.stat().st_mtime_ns for p in (recipe / "data").rglob("*") if p.is_file()}
    # stage 3: nothing to do for a system without a codec; a codec it cannot train is one clear line, not a crash
    skipped = run_recipe(recipe, *root_option, "--stage", "3", "--stop-stage", "3")
    assert skipped.returncode == 0 and "needs no codec or vocoder; skipped" in skipped.stdout
    missing = run_recipe(recipe, *root_option, "--stage", "3", "--stop-stage", "3", "--codec", "exp/nocodec")
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "exp/nocodec is not trained and there is no conf/nocodec.yaml" in missing.stdout
    assert "Traceback" not in missing.stderr


def test_libri2mix_recipe(tmp_path):
    root = tmp_path / "Libri2Mix"
    mixtures = make_libri2mix_tree(root, splits=("train-100", "dev", "test"), per_split=30)
    write_librispeech_transcripts(tmp_path / "LibriSpeech", mixtures)
    recipe = recipe_copy(tmp_path, "libri2mix")
    check_stages_1_2(recipe, ("train-100", "dev", "test"),
                     ["--librimix-root", str(root), "--librispeech-root", str(tmp_path / "LibriSpeech")])
    assert (recipe / "data" / "test" / "text").is_file()
    root_option = ["--librimix-root", str(root)]
    # stage 8 with nothing scored yet: says so and writes nothing
    nothing = run_recipe(recipe, *root_option, "--stage", "8", "--stop-stage", "8", "--system", "mysys")
    assert nothing.returncode == 0 and "no system is scored on data/test" in nothing.stdout
    assert not (recipe / "exp" / "report").exists()
    # stage 7 on estimates from elsewhere: 2 jobs through utils/run.pl, then merge
    data, decode = recipe / "data" / "test", recipe / "exp" / "mysys" / "decode_test"
    estimates = {}
    for utt, path in read_table(data / "spk1.scp").items():
        target, rate = sf.read(path)
        (decode / "wav").mkdir(parents=True, exist_ok=True)
        sf.write(decode / "wav" / f"{utt}.wav", target + 0.01 * np.random.default_rng(0).standard_normal(len(target)),
                 rate)
        estimates[utt] = str(decode / "wav" / f"{utt}.wav")
    write_table(decode / "wav.scp", estimates)
    proc = run_recipe(recipe, *root_option, "--stage", "7", "--stop-stage", "7", "--system", "mysys", "--nj", "2",
                      "--score-metrics", "si_sdr,si_sdri,stoi")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    scores = decode / "scores"
    assert (scores / "log" / "score.1.log").is_file() and (scores / "log" / "score.2.log").is_file()
    header, *rows = (scores / "scores.tsv").read_text().splitlines()
    assert header.split("\t") == ["utt", "si_sdr", "si_sdri", "stoi"] and len(rows) == len(estimates)
    assert "| si_sdr |" in (scores / "RESULTS.md").read_text() and "| si_sdr |" in proc.stdout
    # stage 8: the report of every scored system, its path on the last line
    reported = run_recipe(recipe, *root_option, "--stage", "8", "--stop-stage", "8", "--system", "mysys")
    assert reported.returncode == 0, reported.stdout + reported.stderr
    page = (recipe / "exp" / "report" / "test" / "index.html").resolve()
    assert reported.stdout.splitlines()[-2].endswith(f"report of data/test: {page}")
    text = page.read_text()
    assert text.count("<audio") == 12 * 4  # 12 utterances: mixture, enrollment, mysys, reference
    assert "<td>mysys</td>" in text and "tsekit score --data data/test --est exp/mysys/decode_test/wav.scp" in text
    # stage 3 with a toolkit codec the recipe trains itself (conf/tinycodec.yaml): trained once, the test targets
    # resynthesized and scored (its ceiling, a row of the report), the training and validation sets tokenized (a
    # token system's inference encodes its test inputs itself)
    config = tiny_codec_config("tsekit_codec", steps=12)
    config["codec"]["params"].update(sample_rate=16000)
    (recipe / "conf").mkdir(exist_ok=True)
    (recipe / "conf" / "tinycodec.yaml").write_text(yaml.safe_dump(config))
    codec = run_recipe(recipe, *root_option, "--stage", "3", "--stop-stage", "3", "--codec", "exp/tinycodec",
                       "--nj", "2", "--ngpu", "0", "--score-metrics", "si_sdr,stoi")
    assert codec.returncode == 0, codec.stdout + codec.stderr
    assert (recipe / "exp" / "tinycodec" / "codec.pt").is_file()
    resynth = recipe / "exp" / "tinycodec" / "resynth_test"
    assert set(read_table(resynth / "wav.scp")) == set(estimates)
    assert len((resynth / "scores" / "scores.tsv").read_text().splitlines()) == len(estimates) + 1
    for name in ("train-100", "dev"):
        rows = set(read_table(recipe / "data" / name / "wav.scp"))
        for signal in ("mixture", "target", "enroll"):
            assert set(read_table(recipe / "dump" / "tinycodec" / name / signal / "tokens.scp")) == rows
    assert not (recipe / "dump" / "tinycodec" / "test").exists()
    again = run_recipe(recipe, *root_option, "--stage", "3", "--stop-stage", "3", "--codec", "exp/tinycodec",
                       "--nj", "2", "--ngpu", "0", "--score-metrics", "si_sdr,stoi")
    assert again.returncode == 0 and "training exp/tinycodec" not in again.stdout  # trained once
    # a published vocoder by path (HiFi-GAN, the authors' checkpoint format; random weights): its ceiling only
    _, checkpoint = hifigan_reference(tmp_path / "hifigan", {**HIFIGAN_CONFIG, "sampling_rate": 16000})
    vocoder = run_recipe(recipe, *root_option, "--stage", "3", "--stop-stage", "3", "--vocoder", "hifigan",
                         "--vocoder-params", f"{{checkpoint: {checkpoint}}}", "--score-metrics", "si_sdr")
    assert vocoder.returncode == 0, vocoder.stdout + vocoder.stderr
    assert set(read_table(recipe / "exp" / "hifigan" / "resynth_test" / "wav.scp")) == set(estimates)
    assert not (recipe / "dump" / "hifigan").exists()  # a vocoder has no tokens
    reported = run_recipe(recipe, *root_option, "--stage", "8", "--stop-stage", "8", "--system", "mysys")
    assert reported.returncode == 0, reported.stdout + reported.stderr
    assert "<td>tinycodec_resynth</td>" in page.read_text() and "<td>hifigan_resynth</td>" in page.read_text()


def test_libri2mix_recipe_on_libri3mix(tmp_path):
    root = tmp_path / "Libri3Mix"
    make_libri3mix_tree(root, splits=("train-100", "dev", "test"), per_split=20)
    recipe = recipe_copy(tmp_path, "libri2mix")
    check_stages_1_2(recipe, ("train-100", "dev", "test"), ["--librimix-root", str(root), "--num-speakers", "3"])
    utt2spk = read_table(recipe / "data" / "test" / "utt2spk")
    mixtures = read_table(recipe / "data" / "test" / "wav.scp")
    assert len(utt2spk) == 3 * len(set(mixtures.values()))  # one row per source of each mixture
    wrong = run_recipe(recipe, "--librimix-root", str(root), "--num-speakers", "4", "--stop-stage", "1")
    assert wrong.returncode == 1 and "--num-speakers must be 2 or 3" in wrong.stderr


def test_wsj0_2mix_recipe(tmp_path):
    make_wsj0_2mix_tree(tmp_path / "2speakers", per_split=30)
    recipe = recipe_copy(tmp_path, "wsj0_2mix")
    check_stages_1_2(recipe, ("tr", "cv", "tt"), ["--wsj0-2mix-root", str(tmp_path / "2speakers")])


def test_wham_recipe_with_posneg_enrollments(tmp_path):
    make_wham_tree(tmp_path / "wham_mix", per_split=30)
    recipe = recipe_copy(tmp_path, "wham_noisy")
    check_stages_1_2(recipe, ("tr", "cv", "tt"), ["--wham-root", str(tmp_path / "wham_mix"), "--posneg", "true"])
    for name in ("tr", "cv", "tt"):
        data = recipe / "data" / name
        assert set(read_table(data / "enroll_pos.scp")) == set(read_table(data / "wav.scp"))
        assert set(read_table(data / "noise1.scp")) == set(read_table(data / "wav.scp"))
    # the paper's 3-speaker positives with WHAM! noise: stage 2 rebuilds the clips for the new options
    proc = run_recipe(recipe, "--wham-root", str(tmp_path / "wham_mix"), "--posneg", "true", "--stage", "2",
                      "--stop-stage", "2", "--posneg-interferers", "2", "--posneg-noise", "scp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("tr", "cv", "tt"):
        header, *lines = (recipe / "data" / name / "enroll_posneg.tsv").read_text().splitlines()
        columns = header.split("\t")
        records = [dict(zip(columns, line.split("\t"), strict=True)) for line in lines]
        assert len(records) == len(read_table(recipe / "data" / name / "wav.scp"))
        assert all(len(r["interferer"].split(",")) == 2 and r["noise"] for r in records)


TINY = {"n_fft": 64, "hop": 32, "embed_dim": 4, "lstm_hidden": 4, "heads": 2, "attention_dim": 2, "kernel_size": 4,
        "kernel_stride": 4}
TINY_DATA = {"sample_rate": 16000, "chunk_seconds": 0.3, "enroll_seconds": 0.3, "batch_size": 4, "num_workers": 0}


# slow (CI's 30 minutes): the teacher, distillation and frozen-extractor training it wires run in
# tests/test_posneg_pipeline.py
@pytest.mark.slow
def test_libri2mix_recipe_trains_the_teacher_then_a_posneg_system(tmp_path):
    root = tmp_path / "Libri2Mix"
    make_libri2mix_tree(root, splits=("train-100", "dev", "test"), per_split=20)
    recipe = recipe_copy(tmp_path, "libri2mix")
    (recipe / "conf").mkdir()
    teacher = {"model": {"name": "tfgridnet_speaker", "params": {**TINY, "num_blocks": 1, "speaker_dim": 4}},
               "data": {**TINY_DATA, "enroll": "sampled"}, "loss": [{"name": "speaker_ce", "output": "speaker_logits"}],
               "train": {"epochs": 1}}
    student = {"model": {"name": "tfgridnet_posneg_early",
                         "params": {**TINY, "num_blocks": 1, "enroll_blocks": 1, "head_layers": 1,
                                    "enroll_kernel_size": 4, "enroll_kernel_stride": 4}},
               "data": TINY_DATA, "loss": [{"name": "distill", "output": "cue", "target": "teacher_features"}],
               "distill": {"teacher": "exp/tiny_teacher", "freeze": ["extractor"]},
               "stage2": {"enabled": True, "epochs": 1, "freeze": ["enroll_encoder", "head"],
                          "loss": [{"name": "si_sdr"}]},
               "train": {"epochs": 1}}
    (recipe / "conf" / "tiny_teacher.yaml").write_text(yaml.safe_dump(teacher))
    (recipe / "conf" / "tiny_posneg.yaml").write_text(yaml.safe_dump(student))
    options = ["--librimix-root", str(root), "--system", "tiny_posneg", "--ngpu", "0", "--nj", "1"]
    proc = run_recipe(recipe, *options, "--stop-stage", "6")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # stage 2 built the pos/neg clips the system needs; stage 4 split the training speakers' utterances, trained
    # the teacher the config names, then distilled; stage 5 trained the extractor; stage 6 extracted every row
    assert (recipe / "data" / "test" / "enroll_pos.scp").is_file()
    assert "training the distillation teacher exp/tiny_teacher (conf/tiny_teacher.yaml)" in proc.stdout
    assert (recipe / "data" / "train-100_teacher_valid" / "wav.scp").is_file()
    for stage in ("tiny_teacher/stage1", "tiny_posneg/stage1", "tiny_posneg/stage2"):
        assert (recipe / "exp" / stage / "checkpoints" / "averaged.pt").is_file(), stage
    distilled = yaml.safe_load((recipe / "exp" / "tiny_posneg" / "stage1" / "config.yaml").read_text())
    assert distilled["distill"]["teacher"] == "exp/tiny_teacher"
    decoded = read_table(recipe / "exp" / "tiny_posneg" / "decode_test" / "wav.scp")
    assert set(decoded) == set(read_table(recipe / "data" / "test" / "wav.scp"))
    # a rerun finds the teacher trained and trains nothing again
    again = run_recipe(recipe, *options, "--stage", "4", "--stop-stage", "5")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "distillation teacher" not in again.stdout and again.stdout.count("already trained") == 2


FAKE_TSEKIT = """#!{python}
import json, os, sys
with open(os.environ["FAKE_TSEKIT_CALLS"], "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:2] == ["infer"] and "--help" not in sys.argv:
    os.makedirs(os.path.join(sys.argv[sys.argv.index("--out") + 1], "wav"), exist_ok=True)
"""


def test_stage_6_passes_infer_params_to_every_infer_job_and_keeps_a_decode_dir_to_one_setting(tmp_path):
    # a fake tsekit that records its arguments: the wiring of stage 6 only, no model
    recipe = recipe_copy(tmp_path, "libri2mix")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "tsekit").write_text(FAKE_TSEKIT.format(python=sys.executable))
    (fake / "tsekit").chmod(0o755)
    (recipe / "path.sh").unlink()  # the real one puts this checkout's .venv first on PATH
    (recipe / "path.sh").write_text("export LC_ALL=C\n")
    (recipe / "exp" / "other" / "decode_test").mkdir(parents=True)
    (recipe / "exp" / "other" / "decode_test" / "wav.scp").write_text("")
    calls = tmp_path / "calls"
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "FAKE_TSEKIT_CALLS": str(calls)}
    env.pop("TSEKIT_BACKEND", None)

    def stage_6(system: str, *options: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
        calls.write_text("")
        proc = subprocess.run(["./run.sh", "--stage", "6", "--stop-stage", "6", "--ngpu", "0", "--nj", "2",
                               "--system", system, *options], cwd=recipe, env=env, capture_output=True, text=True,
                              timeout=60)
        runs = [json.loads(line) for line in calls.read_text().splitlines()]
        return proc, [run for run in runs if run[0] == "infer" and "--help" not in run]

    proc, runs = stage_6("sys", "--refine", "other", "--infer-params", "temperature=0.5  flow_steps=[1,2]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(runs) == 4  # 2 jobs, the system's own outputs and its refinement of other's
    assert all(run[-4:] == ["--param", "temperature=0.5", "--param", "flow_steps=[1,2]"] for run in runs), runs
    for decode in ("decode_test", "decode_test_refine_other"):
        assert (recipe / "exp" / "sys" / decode / "infer_params").read_text() == "temperature=0.5 flow_steps=[1,2]\n"
    again, runs = stage_6("sys", "--refine", "other", "--infer-params", "temperature=0.5 flow_steps=[1,2]")
    assert again.returncode == 0 and len(runs) == 4, again.stdout + again.stderr
    other, runs = stage_6("sys", "--infer-params", "temperature=1.0")
    assert other.returncode == 1 and runs == []
    assert ("exp/sys/decode_test holds outputs decoded with --infer-params 'temperature=0.5 flow_steps=[1,2]'; "
            "remove it to decode with 'temperature=1.0'") in other.stdout
    proc, runs = stage_6("plain")
    assert proc.returncode == 0 and len(runs) == 2, proc.stdout + proc.stderr
    assert not any("--param" in run for run in runs)


def test_bad_corpus_root_fails_with_one_line(tmp_path):
    recipe = recipe_copy(tmp_path, "wsj0_2mix")
    proc = run_recipe(recipe, "--wsj0-2mix-root", str(tmp_path / "nowhere"), "--stop-stage", "2")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tsekit: error:")]
    assert len(errors) == 1 and str(tmp_path / "nowhere") in errors[0]
    assert not (recipe / "data").exists() or not any((recipe / "data").iterdir())


# what stage 7 scores each test set of --conversations true by (--score-metrics chooses for test only)
SET_METRICS = {"test": {"si_sdr"},
               "test_conv": {"si_sdr_active", "sdr_active", "interferer_suppression", "target_kept"},
               "test_absent": {"absent_energy", "audible"}}


def check_scored_and_reported_on_every_set(recipe: Path, system: str) -> None:
    """Stages 6-8 of ``system`` on the test, conversation and absent-target sets: every row decoded and scored
    by its set's metrics, a report page per set naming the system."""
    for name, metrics in SET_METRICS.items():
        rows = set(read_table(recipe / "data" / name / "wav.scp"))
        header, *lines = (recipe / "exp" / system / f"decode_{name}" / "scores" / "scores.tsv").read_text().splitlines()
        assert metrics <= set(header.split("\t")), (name, header)
        assert {line.split("\t")[0] for line in lines} == rows, name
        assert f"<td>{system}</td>" in (recipe / "exp" / "report" / name / "index.html").read_text(), name


@pytest.mark.tts
def test_mini_libri2mix_recipe_from_stage_0(tmp_path):
    recipe = recipe_copy(tmp_path, "mini_libri2mix")
    options = ["--size", "tiny", "--corpus-dir", str(tmp_path / "corpus"), "--conversations", "true",
               "--conv-opts", "--recordings 2 --minutes 0.3"]
    proc = run_recipe(recipe, *options, "--stop-stage", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "corpus" / "Libri2Mix" / "wav16k" / "min" / "metadata" / "mixture_test_mix_both.csv").is_file()
    for name in ("train-100", "dev", "test"):
        data = recipe / "data" / name
        assert validate_data_dir(data, require_enroll=True) == []
        # the demo's default mixture is the noisy one, with transcripts from the synthesized LibriSpeech tree
        rows = set(read_table(data / "wav.scp"))
        assert set(read_table(data / "noise1.scp")) == rows
        # min mode: one target of each mixture is whole and has its transcript, the other is cut and has none
        assert len(rows) <= 2 * len(read_table(data / "text")) < 2 * len(rows) and set(read_table(data / "text")) < rows
    train = set(read_table(recipe / "data" / "train-100" / "utt2spk").values())
    assert train.isdisjoint(read_table(recipe / "data" / "test" / "utt2spk").values())
    # --conversations true: the conversation and absent-target sets of the test speakers, with their own enrollments
    test_speakers = set(read_table(recipe / "data" / "test" / "utt2spk").values())
    for name in ("test_conv", "test_absent"):
        data = recipe / "data" / name
        assert validate_data_dir(data, require_enroll=True) == [], name
        assert set(read_table(data / "utt2spk").values()) <= test_speakers
        assert f"data/{name} brings its own enroll.scp" in proc.stdout
    assert len(set(read_table(recipe / "data" / "test_conv" / "utt2reco").values())) == 2
    assert (recipe / "data" / "test_conv" / "rttm").stat().st_size > 0
    # stages 3-8 of a system: decoded, scored by each set's own metrics, on a report page each
    (recipe / "conf").mkdir()
    (recipe / "conf" / "tiny_zspex.yaml").write_text(yaml.safe_dump(TINY_ZSPEX))
    proc = run_recipe(recipe, *options, "--stage", "3", "--system", "tiny_zspex", "--ngpu", "0", "--nj", "1",
                      "--score-metrics", "si_sdr")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_scored_and_reported_on_every_set(recipe, "tiny_zspex")


@pytest.fixture(scope="module")
def conversation_recipe(tmp_path_factory) -> tuple[Path, list[str]]:
    """(egs/mini_libri2mix after stages 0-2 with --conversations true, its options): a tiny corpus, conversations
    of 36 s (longer than whisper_cfm takes at once and than the report's excerpts), and tiny configs in conf/ of a
    codec system (maskgit_tse, its codec conf/codec.yaml), a pos/neg one and a transcribing one."""
    from test_maskgit_tse import recipe_config as maskgit_config
    from test_whisper_cfm import SMALL, VOCODER, tiny_whisper

    root = tmp_path_factory.mktemp("conversations")
    recipe = recipe_copy(root, "mini_libri2mix")
    options = ["--size", "tiny", "--corpus-dir", str(root / "corpus"), "--conversations", "true",
               "--conv-opts", "--recordings 2 --minutes 0.6", "--ngpu", "0", "--nj", "1", "--score-metrics", "si_sdr"]
    conf = recipe / "conf"
    conf.mkdir()
    codec = tiny_codec_config("tsekit_codec", steps=12)
    codec["codec"]["params"].update(sample_rate=16000)
    data = {**TINY_DATA, "chunk_seconds": 0.5, "enroll_seconds": 0.5}
    # trained straight on the SNR loss: the tiny corpus has too few utterances per speaker to hold out the
    # distillation teacher's validation set; the enrollment clips are what this test is about
    posneg = {"model": {"name": "tfgridnet_posneg", "params": {**TINY, "num_blocks": 1, "enroll_blocks": 1,
                                                              "head_layers": 1, "fusion_blocks": 1}},
              "data": data, "loss": [{"name": "snr"}], "train": {"epochs": 1}}
    whisper = {"model": {"name": "whisper_cfm", "params": {**SMALL, "whisper": tiny_whisper(root / "whisper.pt")}},
               "vocoder": {"spec": "tsekit_vocoder", "params": VOCODER},
               "data": {**data, "chunk_seconds": None, "enroll_seconds": None},
               "loss": [{"name": "objective", "output": "objective"}], "train": {"epochs": 1}}
    for name, config in (("codec", codec), ("maskgit_tse", maskgit_config()), ("tfgridnet_posneg", posneg),
                         ("whisper_cfm", whisper)):
        (conf / f"{name}.yaml").write_text(yaml.safe_dump(config))
    proc = run_recipe(recipe, *options, "--stop-stage", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return recipe, options


# slow (CI's 30 minutes): each system costs minutes; test_mini_libri2mix_recipe_from_stage_0 runs a Z-SpEx through
# the same stages in CI
@pytest.mark.tts
@pytest.mark.slow
@pytest.mark.parametrize("system", ["maskgit_tse", "tfgridnet_posneg", "whisper_cfm"])
def test_every_kind_of_system_is_scored_and_reported_on_the_conversation_and_absent_sets(conversation_recipe,
                                                                                        system):
    recipe, options = conversation_recipe
    proc = run_recipe(recipe, *options, "--stage", "2", "--system", system)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    check_scored_and_reported_on_every_set(recipe, system)
    conv = recipe / "data" / "test_conv"
    if system == "maskgit_tse":  # the codec's tokens of the sets it trains on; its inference encodes the rest
        assert (recipe / "dump" / "codec" / "train-100" / "mixture" / "tokens.scp").is_file()
        assert not (recipe / "dump" / "codec" / "test_conv").exists()
    if system == "tfgridnet_posneg":  # its positive and negative clips for the sets that bring their own enrollment
        for name in ("test_conv", "test_absent"):
            data = recipe / "data" / name
            rows = set(read_table(data / "wav.scp"))
            assert set(read_table(data / "enroll_pos.scp")) == set(read_table(data / "enroll_neg.scp")) == rows
        assert "positive enrollment" in (recipe / "exp" / "report" / "test_conv" / "index.html").read_text()
    if system == "whisper_cfm":  # its transcripts of the conversations, in 20 s chunks, scored against theirs
        transcripts = (recipe / "exp" / system / "decode_test_conv" / "text").read_text()
        assert transcripts.count("\n") == len(read_table(conv / "wav.scp"))  # a line each, empty where it heard none
        header = (recipe / "exp" / system / "decode_test_conv" / "scores" / "scores.tsv").read_text().split("\n")[0]
        assert "tsasr_wer" in header.split("\t")
    # 36 s rows play 30 s excerpts
    assert min(float(d) for d in read_table(conv / "utt2dur").values()) > 30
    page = (recipe / "exp" / "report" / "test_conv" / "index.html").read_text()
    assert page.count("excerpt ") == len(re.findall(r"<div class='utt' id=", page)) > 0
    for wav in (recipe / "exp" / "report" / "test_conv" / "audio").rglob("mixture.wav"):
        assert sf.info(wav).duration == 30.0


# slow (CI's 30 minutes): the refinement it wires runs in tests/test_ddtse_pipeline.py
@pytest.mark.slow
def test_libri2mix_recipe_refines_another_systems_outputs_with_ddtse(tmp_path):
    root = tmp_path / "Libri2Mix"
    make_libri2mix_tree(root, splits=("train-100", "dev", "test"), per_split=20)
    recipe = recipe_copy(tmp_path, "libri2mix")
    (recipe / "conf").mkdir()
    ddtse = {"model": {"name": "ddtse", "params": {
                 "nf": 4, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
                 "speaker_encoder": "learned", "embed_dim": 8, "min_enroll_seconds": 0.3, "steps": 2}},
             "data": {"sample_rate": 16000, "chunk_seconds": 0.3, "enroll": "target", "batch_size": 4,
                      "num_workers": 0},
             "loss": [{"name": "objective", "output": "objective"}],
             "train": {"epochs": 1, "ema": 0.9}}
    (recipe / "conf" / "tiny_zspex.yaml").write_text(yaml.safe_dump(TINY_ZSPEX))
    (recipe / "conf" / "tiny_ddtse.yaml").write_text(yaml.safe_dump(ddtse))
    options = ["--librimix-root", str(root), "--ngpu", "0", "--nj", "1", "--score-metrics", "si_sdr,si_sdri"]
    first = run_recipe(recipe, *options, "--system", "tiny_zspex", "--stop-stage", "7")
    assert first.returncode == 0, first.stdout + first.stderr
    proc = run_recipe(recipe, *options, "--system", "tiny_ddtse", "--refine", "tiny_zspex", "--stage", "4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = set(read_table(recipe / "data" / "test" / "wav.scp"))
    for decode in ("decode_test", "decode_test_refine_tiny_zspex"):
        assert set(read_table(recipe / "exp" / "tiny_ddtse" / decode / "wav.scp")) == rows, decode
        assert (recipe / "exp" / "tiny_ddtse" / decode / "scores" / "scores.tsv").is_file(), decode
    page = (recipe / "exp" / "report" / "test" / "index.html").read_text()
    for system in ("tiny_zspex", "tiny_ddtse", "tiny_ddtse_refine_tiny_zspex"):
        assert f"<td>{system}</td>" in page, system
    # a system that cannot refine says so, naming the system, before writing anything
    wrong = run_recipe(recipe, *options, "--system", "tiny_zspex", "--refine", "tiny_ddtse", "--stage", "6",
                       "--stop-stage", "6")
    assert wrong.returncode != 0 and "cannot refine" in (recipe / "exp" / "tiny_zspex" / "decode_test_refine_tiny_ddtse"
                                                         / "log" / "infer.1.log").read_text()
