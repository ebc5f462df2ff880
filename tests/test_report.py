"""tsekit report on a fake corpus: summary table, selection, errors, --link, self-containedness, real Chromium.

Two fake systems are scored for real (tsekit's scorer, SI-SDR/SNR metrics):
`good` (enroll.scp, a zspex config) with little noise on the target, and
`posneg` (enroll_pos/enroll_neg.scp, a tfgridnet_posneg_early config) with more.
The Chromium test needs the Debian package chromium and websocket-client; it is
skipped without them unless TSEKIT_REQUIRE_BROWSER=1 (CI) makes that an error.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from browser import check_page, chromium_binary
from click.testing import CliRunner
from corpus_trees import speechlike, write_wav

from tsekit import TsekitError
from tsekit.cli import cli

pytest.importorskip("matplotlib", reason="the report extra is not installed")
from tsekit.data.table import write_table
from tsekit.metrics.jobs import inputs_from_manifests, run_scoring
from tsekit.metrics.results import merge_scores, read_scores
from tsekit.report.experiments import load_system, select_utterances, summarize
from tsekit.report.page import build_report

RATE = 16000
UTTS = sorted(f"spk{i % 3}-utt{i}" for i in range(6))
SIGNALS_PER_ROW = 7  # mixture, enroll, enroll_pos, enroll_neg, 2 systems, reference


def make_system(root: Path, name: str, model: str, noise: float, seed: int,
                hypotheses: dict[str, str] | None = None) -> Path:
    """exp/<name> as stages 4-7 leave it: config, train/infer/score log headers, estimates, scores.

    ``hypotheses``: the system's own transcripts (a target-speaker ASR system's decode_test/text), scored as
    tsasr_wer against data/test/text.
    """
    exp, data = root / "exp" / name, root / "data" / "test"
    rng = np.random.default_rng(seed)
    decode = exp / "decode_test"
    estimates = {}
    for utt in UTTS:
        target, _ = sf.read(data / "ref" / f"{utt}.wav", dtype="float32")
        # some utterances come out badly, so best and worst differ between systems
        level = noise * (4.0 if (UTTS.index(utt) + seed) % 3 == 0 else 1.0)
        write_wav(decode / "wav" / f"{utt}.wav", target + level * rng.standard_normal(len(target)), RATE)
        estimates[utt] = str(decode / "wav" / f"{utt}.wav")
    write_table(decode / "wav.scp", estimates)
    (exp / "stage1").mkdir(parents=True)
    teacher = "distill:\n  teacher: exp/teacher\n" if model.startswith("tfgridnet_posneg") else ""
    (exp / "stage1" / "config.yaml").write_text(f"model:\n  name: {model}\n  params: {{}}\n{teacher}")
    if teacher:  # trained by stage 4 before the student, its log beside the student's
        (root / "exp" / "teacher" / "log").mkdir(parents=True)
        (root / "exp" / "teacher" / "log" / "train_stage1.log").write_text(
            "# tsekit train --config conf/tfgridnet_speaker.yaml --exp-dir exp/teacher\n")
    (exp / "log").mkdir()
    (exp / "log" / "train_stage1.log").write_text(f"# tsekit train --config conf/{name}.yaml --exp-dir exp/{name}\n"
                                                  "# Started at some time\nepoch 1 valid loss 1.0\n")
    (decode / "log").mkdir()
    for job in (1, 2):
        (decode / "log" / f"infer.{job}.log").write_text(
            f"# tsekit infer --exp-dir exp/{name} --data data/test --out exp/{name}/decode_test --job {job} --nj 2\n")
    scores = decode / "scores"
    metrics, text, hyp_text = "si_sdr,si_sdri,snr,snri", None, None
    if hypotheses is not None:
        write_table(decode / "text", hypotheses)
        metrics, text, hyp_text = metrics + ",tsasr_wer", str(data / "text"), str(decode / "text")
    inputs = inputs_from_manifests(str(data / "spk1.scp"), str(decode / "wav.scp"), str(data / "wav.scp"),
                                   text=text, hyp_text=hyp_text)
    run_scoring(inputs, scores, metrics=metrics)
    merge_scores(scores)
    (scores / "log").mkdir()
    (scores / "log" / "score.1.log").write_text(f"# tsekit score --ref data/test/spk1.scp --out {scores}\n")
    return exp


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """data/test (6 rows, every kind of enrollment, transcripts) and the two scored systems."""
    root = tmp_path_factory.mktemp("report")
    data = root / "data" / "test"
    rng = np.random.default_rng(0)
    tables: dict[str, dict[str, str]] = {name: {} for name in
                                         ("wav.scp", "spk1.scp", "enroll.scp", "enroll_pos.scp", "enroll_neg.scp")}
    for utt in UTTS:
        target, other = speechlike(0.8, RATE, rng), speechlike(0.8, RATE, rng)
        files = {"spk1.scp": target, "wav.scp": target + other, "enroll.scp": speechlike(0.6, RATE, rng),
                 "enroll_pos.scp": speechlike(0.6, RATE, rng) + 0.5 * other[:9600],
                 "enroll_neg.scp": other[:9600]}
        for name, samples in files.items():
            path = data / name.split(".")[0].replace("spk1", "ref") / f"{utt}.wav"
            write_wav(path, samples, RATE)
            tables[name][utt] = str(path)
    for name, table in tables.items():
        write_table(data / name, table)
    write_table(data / "utt2spk", {u: u.split("-")[0] for u in UTTS})
    write_table(data / "text", {u: f"HELLO WORLD NUMBER {i}" for i, u in enumerate(UTTS)})
    make_system(root, "good", "zspex", 0.002, seed=1)
    make_system(root, "posneg", "tfgridnet_posneg_early", 0.02, seed=2)
    return root


@pytest.fixture(scope="module")
def report(corpus) -> Path:
    return build_report(corpus / "data" / "test", [corpus / "exp" / "good", corpus / "exp" / "posneg"],
                        corpus / "report", n=3, progress=False)


def systems(corpus: Path) -> list:
    return [load_system(corpus / "exp" / name, corpus / "data" / "test", UTTS) for name in ("good", "posneg")]


def test_summary_matches_results_md_and_marks_the_best(corpus, report):
    summary = summarize(systems(corpus), UTTS)
    for name in ("good", "posneg"):
        results = (corpus / "exp" / name / "decode_test" / "scores" / "RESULTS.md").read_text()
        for metric in ("si_sdr", "snr"):
            cell = summary.systems[name][metric]
            mix = summary.mixture[metric]
            row = (f"| {metric} | {cell.mean:.2f} ± {cell.std:.2f} | {mix.mean:.2f} ± {mix.std:.2f} | "
                   f"{cell.improvement:+.2f} |")
            assert row in results, (row, results)
        gain = summary.systems[name]["si_sdri"]
        assert f"| si_sdri | {gain.mean:.2f} ± {gain.std:.2f} |" in results
        accepted, total = summary.acceptance[name]
        assert f"({accepted}/{total})" in results
    assert all(summary.systems["good"][m].best and not summary.systems["posneg"][m].best for m in summary.metrics)
    page = report.read_text()
    good_row = re.search(r"<tr><td>good</td>.*?</tr>", page).group(0)
    posneg_row = re.search(r"<tr><td>posneg</td>.*?</tr>", page).group(0)
    assert good_row.count("class='best'") == len(summary.metrics) + 1  # + acceptance
    assert "class='best'" not in posneg_row
    assert "HELLO WORLD NUMBER" in page and "tsekit infer --exp-dir exp/good" in page
    assert "model:\n  name: tfgridnet_posneg_early" in page  # the config, verbatim in a <pre>


def test_page_lists_the_commands_that_made_each_system(corpus, report):
    good, posneg = systems(corpus)
    assert "teacher" not in good.commands and [c.command for c in posneg.commands["teacher"]] == [
        "tsekit train --config conf/tfgridnet_speaker.yaml --exp-dir exp/teacher"]
    page = report.read_text()
    assert page.count("training of the distillation teacher") == 1  # the pos/neg system's only
    assert list(posneg.commands) == ["teacher", "train", "infer", "score"]  # the order they ran, and are listed
    teacher_at = page.index("tsekit train --config conf/tfgridnet_speaker.yaml --exp-dir exp/teacher")
    assert teacher_at < page.index("tsekit train", teacher_at + 1) < page.index("tsekit infer", teacher_at)
    assert page.count("tsekit train --config conf/") == 3 and page.count("--job 2 --nj 2") == 2


def test_selection_modes(corpus, tmp_path):
    found = systems(corpus)

    def mean_gain(utt: str) -> float:
        return np.mean([s.scores[utt]["si_sdri"] for s in found])

    by_gain = sorted(UTTS, key=mean_gain)
    assert select_utterances(found, UTTS, "best", 2) == by_gain[::-1][:2]
    assert select_utterances(found, UTTS, "worst", 2) == by_gain[:2]
    random = select_utterances(found, UTTS, "random", 3, seed=5)
    assert len(random) == 3 and random == sorted(random) and random == select_utterances(found, UTTS, "random", 3, 5)
    listed = tmp_path / "list"
    listed.write_text(f"{UTTS[4]}\n{UTTS[1]} comment\n")
    assert select_utterances(found, UTTS, "list", 1, utt_list=listed) == [UTTS[4], UTTS[1]]
    listed.write_text(f"{UTTS[0]}\nnobody-here\n")
    with pytest.raises(TsekitError, match=r"list: 1 ids are not utterances of the data dir \(e.g. nobody-here\)"):
        select_utterances(found, UTTS, "list", 1, utt_list=listed)


def run_report(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["report", *args])
    if isinstance(result.exception, TsekitError):
        return 1, str(result.exception)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_errors_name_the_file_and_leave_no_output(corpus, tmp_path):
    data, good = str(corpus / "data" / "test"), str(corpus / "exp" / "good")
    unscored = tmp_path / "exp" / "unscored"
    (unscored / "decode_test").mkdir(parents=True)
    code, message = run_report("--data", data, "--exp", good, "--exp", str(unscored), "--out", str(tmp_path / "r"))
    assert code == 1 and message.startswith(f"{unscored}/decode_test/scores/scores.tsv: not found")
    partial = tmp_path / "exp" / "partial"
    shutil.copytree(good, partial)
    scp = partial / "decode_test" / "wav.scp"
    scp.write_text("".join(scp.read_text().splitlines(keepends=True)[1:]))
    code, message = run_report("--data", data, "--exp", str(partial), "--out", str(tmp_path / "r"))
    assert code == 1 and f"{scp}: no estimate for 1 of the 6 utterances" in message
    broken = tmp_path / "exp" / "broken"
    shutil.copytree(good, broken)
    for wav in (broken / "decode_test" / "wav").iterdir():
        wav.write_bytes(b"not audio")
    write_table(broken / "decode_test" / "wav.scp",
                {u: str(broken / "decode_test" / "wav" / f"{u}.wav") for u in UTTS})
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "index.html").write_text("the previous report")
    code, message = run_report("--data", data, "--exp", str(broken), "--out", str(tmp_path / "r"))
    assert code == 1 and "cannot read audio" in message and str(broken / "decode_test" / "wav") in message
    # the previous report is untouched, and no temporary folder is left beside it
    assert (tmp_path / "r" / "index.html").read_text() == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "r"]
    code, message = run_report("--data", data, "--exp", good, "--out", str(tmp_path / "r"), "--select", "best",
                               "--utt-list", str(tmp_path / "r" / "index.html"))
    assert code == 1 and "--utt-list goes with --select list" in message


def test_copies_or_links_audio_and_is_self_contained(corpus, report, tmp_path):
    page = report.read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    sources = re.findall(r"src='([^']+)'", page)
    assert len(sources) == 3 * SIGNALS_PER_ROW * 2 + 4 + 2  # 3 rows of players + images; 4 box plots, 2 plots
    for source in sources:
        path = report.parent / source
        assert not source.startswith("/") and path.is_file() and not path.is_symlink(), source
    code, output = run_report("--data", str(corpus / "data" / "test"), "--exp", str(corpus / "exp" / "good"),
                              "--out", str(tmp_path / "linked"), "--link", "--select", "random", "--n", "2")
    assert code == 0 and output.strip().endswith(f"report written: {tmp_path / 'linked' / 'index.html'}")
    linked = [p for p in (tmp_path / "linked" / "audio").rglob("*.wav")]
    assert len(linked) == 2 * 4 and all(p.is_symlink() and p.resolve().is_file() for p in linked)
    assert not (tmp_path / "linked" / "audio" / UTTS[0] / "enroll_pos.wav").exists()  # no pos/neg system here


def browser_or_skip() -> None:
    why = ""
    if chromium_binary() is None:
        why = "no chromium on PATH (Debian package chromium; tools/system_packages.sh --browser)"
    else:
        try:
            import websocket  # noqa: F401
        except ImportError:
            why = "websocket-client is not installed (the test extra)"
    if why:
        if os.environ.get("TSEKIT_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)


def test_page_in_headless_chromium(report, tmp_path):
    browser_or_skip()
    checked = check_page(report, tmp_path / "screenshot.png")
    assert checked.problems() == []
    assert len(checked.audio) == 3 * SIGNALS_PER_ROW and len(checked.images) == 3 * SIGNALS_PER_ROW + 6
    assert all(math.isclose(a["decoded"]["duration"], a["element"]["duration"], rel_tol=0.01) for a in checked.audio)
    # everything comes from the report's folder (data: URLs are Chromium's own player icons)
    folder = report.parent.as_uri() + "/"
    assert all(url.startswith((folder, "data:")) for url in checked.requests)
    assert {a["src"] for a in checked.audio} <= set(checked.requests)
    screenshot = (tmp_path / "screenshot.png").read_bytes()
    assert screenshot.startswith(b"\x89PNG") and len(screenshot) > 20_000
    # the check sees a broken page too: one audio file gone, one image not a PNG
    broken = tmp_path / "broken"
    shutil.copytree(report.parent, broken)
    first_audio = sorted((broken / "audio").rglob("*.wav"))[0]
    first_audio.unlink()
    sorted((broken / "img").rglob("*.png"))[0].write_bytes(b"not a png")
    problems = check_page(broken / "index.html", tmp_path / "broken.png").problems()
    assert any(first_audio.name in p and p.startswith("audio") for p in problems)
    assert any(p.startswith("image") for p in problems) and any(p.startswith("console") for p in problems)


def test_a_system_scored_on_its_own_transcripts_shows_tsasr_wer(corpus, tmp_path):
    data = tmp_path / "data"
    data.symlink_to(corpus / "data")
    # odd rows exact; even rows "HELLO WORD": world -> word, number and the digit deleted: 3 errors of 4 words
    hypotheses = {u: f"hello world number {i}" if i % 2 else "HELLO WORD" for i, u in enumerate(UTTS)}
    make_system(tmp_path, "tsasr", "zspex", 0.002, seed=1, hypotheses=hypotheses)
    columns, rows = read_scores(tmp_path / "exp" / "tsasr" / "decode_test" / "scores" / "scores.tsv")
    assert columns[-1] == "tsasr_wer" and [rows[u]["tsasr_wer"] for u in UTTS] == [0.75, 0.0] * 3
    found = [load_system(corpus / "exp" / "good", data / "test", UTTS),
             load_system(tmp_path / "exp" / "tsasr", data / "test", UTTS)]
    summary = summarize(found, UTTS)
    assert summary.metrics[-1] == "tsasr_wer" and "tsasr_wer" not in summary.systems["good"]
    cell = summary.systems["tsasr"]["tsasr_wer"]
    assert (cell.mean, cell.improvement, cell.best) == (0.375, None, True) and "tsasr_wer" not in summary.mixture
    page = build_report(data / "test", [corpus / "exp" / "good", tmp_path / "exp" / "tsasr"], tmp_path / "report",
                        n=1, progress=False).read_text()
    assert "<th>tsasr_wer (%) ↓</th>" in page and "★ 37.50 ± 37.50" in page


def test_scores_tables_read_back(corpus):
    columns, rows = read_scores(corpus / "exp" / "good" / "decode_test" / "scores" / "scores.tsv")
    assert columns == ["si_sdr", "si_sdri", "snr", "snri"] and sorted(rows) == sorted(UTTS)


def test_a_system_whose_enrollment_clips_are_gone_is_shown_without_them(corpus, tmp_path):
    # data/test prepared again without --posneg: no enroll_pos.scp / enroll_neg.scp, the scored pos/neg system stays
    data = tmp_path / "data" / "test"
    data.mkdir(parents=True)
    for path in (corpus / "data" / "test").iterdir():
        if path.name not in ("enroll_pos.scp", "enroll_neg.scp"):
            (data / path.name).symlink_to(path)
    page = build_report(data, [corpus / "exp" / "good", corpus / "exp" / "posneg"], tmp_path / "report", n=2,
                        progress=False).read_text()
    assert "<tr><td>posneg</td>" in page and "system-posneg" in page
    assert f"not shown, not in the data dir: {data / 'enroll_pos.scp'}, {data / 'enroll_neg.scp'}" in page
    utt = re.search(r"<div class='utt' id='([^']+)'>", page).group(1)
    assert sorted(p.stem for p in (tmp_path / "report" / "audio" / utt).iterdir()) == [
        "enroll", "mixture", "reference", "system-good", "system-posneg"]


def test_the_mixture_has_no_sar(corpus, tmp_path):
    """The mixture is exactly target + interference: its SAR is the 100 dB clamp, not a baseline (n/a)."""
    data, good = corpus / "data" / "test", corpus / "exp" / "good"
    scores = tmp_path / "scores"
    run_scoring(inputs_from_manifests(str(data / "spk1.scp"), str(good / "decode_test" / "wav.scp"),
                                      str(data / "wav.scp")), scores, metrics="sdr,sir,sar")
    results = merge_scores(scores)
    assert read_scores(scores / "mixture.tsv")[0] == ["sdr", "sir"]
    assert re.search(r"\| sar \| [0-9.]+ ± [0-9.]+ \| n/a \| \| 6 \|", results), results
    assert re.search(r"\| sir \| [0-9.]+ ± [0-9.]+ \| [0-9.]+ ± [0-9.]+ \| \+[0-9.]+ \| 6 \|", results), results
    # a system scored before: its mixture.tsv holds the mixture's SAR, 100 dB, which the report does not show
    old = tmp_path / "exp" / "old"
    shutil.copytree(good, old)
    shutil.copy(scores / "scores.tsv", old / "decode_test" / "scores" / "scores.tsv")
    lines = (scores / "mixture.tsv").read_text().splitlines()
    (old / "decode_test" / "scores" / "mixture.tsv").write_text(
        "".join(f"{line}\t{'sar' if i == 0 else '100.0000'}\n" for i, line in enumerate(lines)))
    assert "sar" not in load_system(old, data, UTTS).mixture[UTTS[0]]
    page = build_report(data, [old], tmp_path / "report", n=1, select="random", progress=False).read_text()
    mixture_row = re.search(r"<tr class='mixture'>.*?</tr>", page).group(0)
    assert mixture_row.endswith("<td>n/a</td></tr>") and "100.00" not in page


def test_excerpt_window_is_where_the_reference_speaks():
    from tsekit.report.page import excerpt_window

    rate = 100
    reference = np.zeros(100 * rate)
    reference[52 * rate:60 * rate] = 1.0  # she speaks from 52 s to 60 s of a 100 s row
    start, stop = excerpt_window(reference, len(reference), rate, seconds=30.0)
    assert stop - start == 30 * rate and start <= 52 * rate and stop >= 60 * rate
    assert start == 30 * rate  # the earliest of the windows holding all of it
    assert excerpt_window(reference, 30 * rate, rate, seconds=30.0) is None  # short rows are shown whole
    assert excerpt_window(None, len(reference), rate, seconds=30.0) == (0, 30 * rate)  # no reference: the start


def test_a_long_row_is_shown_as_an_excerpt_around_its_target(tmp_path):
    # a conversation of minutes would put whole recordings in every player: its rows play 30 s where she speaks
    from tsekit.report.page import EXCERPT_SECONDS

    rate, rng = 8000, np.random.default_rng(5)
    data, decode = tmp_path / "data" / "conv", tmp_path / "exp" / "sys" / "decode_conv"
    lengths = {"long": 50.0, "short": 3.0}
    tables: dict[str, dict[str, str]] = {"wav.scp": {}, "spk1.scp": {}, "enroll.scp": {}}
    estimates = {}
    for utt, seconds in lengths.items():
        target = np.zeros(int(seconds * rate))
        speech = speechlike(min(seconds, 6.0), rate, rng)
        at = int(min(35.0, seconds - 6.0) * rate) if seconds > 6.0 else 0  # the long row's target: 35 s to 41 s
        target[at:at + len(speech)] = speech
        files = {"spk1.scp": target, "wav.scp": target + 0.3 * speechlike(seconds, rate, rng),
                 "enroll.scp": speechlike(40.0 if utt == "long" else 1.0, rate, rng)}
        for name, samples in files.items():
            write_wav(data / name.split(".")[0] / f"{utt}.wav", samples, rate)
            tables[name][utt] = str(data / name.split(".")[0] / f"{utt}.wav")
        write_wav(decode / "wav" / f"{utt}.wav", target + 0.01 * rng.standard_normal(len(target)), rate)
        estimates[utt] = str(decode / "wav" / f"{utt}.wav")
    for name, table in tables.items():
        write_table(data / name, table)
    write_table(decode / "wav.scp", estimates)
    run_scoring(inputs_from_manifests(str(data / "spk1.scp"), str(decode / "wav.scp"), str(data / "wav.scp")),
                decode / "scores", metrics="si_sdr")
    merge_scores(decode / "scores")
    page = build_report(data, [tmp_path / "exp" / "sys"], tmp_path / "report", progress=False).read_text()
    audio = tmp_path / "report" / "audio"
    size = int(EXCERPT_SECONDS * rate)
    for name in ("mixture", "system-sys", "reference", "enroll"):
        assert sf.info(audio / "long" / f"{name}.wav").frames == size, name
        assert sf.info(audio / "short" / f"{name}.wav").frames == (1 if name == "enroll" else 3) * rate, name
    # the reference's excerpt holds all of her speech (35-41 s), starting on a half second
    full = sf.read(tables["spk1.scp"]["long"])[0]
    excerpt = sf.read(audio / "long" / "reference.wav")[0]
    start = next(s for s in range(0, len(full) - size + 1, rate // 2) if np.array_equal(full[s:s + size], excerpt))
    assert start <= 35 * rate and start + size >= 41 * rate
    assert f"excerpt {start / rate:.1f}-{(start + size) / rate:.1f} s of 50.0 s" in page
    enrollment = sf.read(tables["enroll.scp"]["long"])[0]
    assert np.array_equal(sf.read(audio / "long" / "enroll.wav")[0], enrollment[:size])  # a long one: its start
    assert "excerpt" not in page.split("id='short'")[1].split("class='utt'")[0]
