"""Joining the scored parts into scores.tsv, mixture.tsv, asr.tsv and RESULTS.md."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from tsekit import TsekitError
from tsekit.data.table import sorted_keys
from tsekit.jobs import atomic_open
from tsekit.lock import writer_lock
from tsekit.metrics.conversation import CONVERSATION_METRICS
from tsekit.metrics.jobs import read_parts
from tsekit.metrics.scorer import IMPROVEMENTS, NO_BASELINE
from tsekit.metrics.sdr import CLAMP_DB

ACCEPTANCE_THRESHOLD = 1.0  # dB of SI-SDRi, as WeSep reports target confusion
WORST_SHOWN = 10
PERCENT = {"wer", "cer", "tsasr_wer", "audible"}  # rates, shown in %
# error rates, the audible fraction and the energy let through for an absent target; every other metric is better
# when higher, except the target's energy kept over its solo turns, best at 0 dB (neither lost nor boosted)
LOWER_IS_BETTER = frozenset(PERCENT | {"absent_energy"})
ZERO_IS_BEST = frozenset({"target_kept"})


def _number(value: float) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.4f}"


def _write_tsv(path: Path, columns: list[str], rows: dict[str, dict]) -> None:
    with atomic_open(path) as f:
        f.write("\t".join(["utt", *columns]) + "\n")
        for utt in sorted_keys(rows):
            f.write("\t".join([utt, *(_number(rows[utt].get(c, math.nan)) for c in columns)]) + "\n")


def display_scale(metric: str) -> float:
    """Factor a metric is shown with: error rates in %, everything else as it is."""
    return 100.0 if metric in PERCENT else 1.0


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """(mean, std, count) over the finite values; NaN (a metric that could not be computed) is left out."""
    finite = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if finite.size == 0:
        return math.nan, math.nan, 0
    return float(finite.mean()), float(finite.std()), int(finite.size)


def acceptance(improvements: list[float], threshold: float = ACCEPTANCE_THRESHOLD) -> tuple[int, int]:
    """(accepted, total): utterances whose SI-SDRi exceeds ``threshold``; the rest are likely target confusions."""
    return sum(1 for v in improvements if v > threshold), len(improvements)


def read_scores(path: str | os.PathLike) -> tuple[list[str], dict[str, dict[str, float]]]:
    """(metric columns, utt -> metric -> value) of a scores.tsv or mixture.tsv that merge_scores wrote."""
    path = Path(path)
    if not path.is_file():
        raise TsekitError(f"{path}: file not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].split("\t")[0] != "utt":
        raise TsekitError(f"{path}: not a scores table (the header must start with 'utt')")
    columns = lines[0].split("\t")[1:]
    rows = {}
    for lineno, line in enumerate(lines[1:], 2):
        fields = line.split("\t")
        if len(fields) != len(columns) + 1:
            raise TsekitError(f"{path}:{lineno}: {len(fields)} fields, the header has {len(columns) + 1}")
        try:
            rows[fields[0]] = {c: float(v) for c, v in zip(columns, fields[1:], strict=True)}
        except ValueError as err:
            raise TsekitError(f"{path}:{lineno}: {err}") from None
    return columns, rows


def merge_scores(out: str | os.PathLike, threshold: float = ACCEPTANCE_THRESHOLD) -> str:
    """Write OUT/scores.tsv (+ mixture.tsv, asr.tsv, warnings.txt) and OUT/RESULTS.md; return RESULTS.md's text.

    Fails naming the missing utterances when some job has not finished. Holds OUT's "merge" writer lock.
    """
    out = Path(out)
    with writer_lock(out, "merge"):
        settings_path = out / "parts" / "settings.json"
        if not settings_path.is_file():
            raise TsekitError(f"{out}: nothing scored here yet (no parts/settings.json)")
        settings = json.loads(settings_path.read_text())
        records = read_parts(out)
        if len(records) < settings["utterances"]:
            raise TsekitError(f"{out}: {settings['utterances'] - len(records)} of {settings['utterances']} utterances "
                              "are not scored yet; rerun the unfinished jobs, then merge")
        metrics = settings["metrics"]
        _write_tsv(out / "scores.tsv", metrics, {u: r["scores"] for u, r in records.items()})
        baseline = [m for m in metrics if m not in IMPROVEMENTS and m not in NO_BASELINE]
        if any(r["mixture"] for r in records.values()):
            _write_tsv(out / "mixture.tsv", baseline, {u: r["mixture"] for u, r in records.items()})
        if any(r["asr"] for r in records.values()):
            _write_asr(out / "asr.tsv", records)
        warnings = [w for u in sorted_keys(records) for w in records[u]["warnings"]]
        with atomic_open(out / "warnings.txt") as f:
            f.write("".join(f"{w}\n" for w in warnings))
        text = results_markdown(out, settings, records, threshold, len(warnings))
        with atomic_open(out / "RESULTS.md") as f:
            f.write(text)
        return text


def _write_asr(path: Path, records: dict[str, dict]) -> None:
    """asr.tsv: per utterance the truth, the error counts and the hypotheses of Whisper (wer) and of the
    system's own transcript (tsasr_wer), the columns of those scored."""
    whisper = any("estimate_hyp" in r["asr"] for r in records.values())
    tsasr = any("tsasr_hyp" in r["asr"] for r in records.values())
    columns = ["truth_source", "words"]
    columns += ["estimate_word_errors", "mixture_word_errors"] if whisper else []
    columns += ["tsasr_word_errors"] if tsasr else []
    columns += ["truth"]
    columns += ["estimate_hyp", "mixture_hyp"] if whisper else []
    columns += ["tsasr_hyp"] if tsasr else []
    with atomic_open(path) as f:
        f.write("\t".join(["utt", *columns]) + "\n")
        for utt in sorted_keys(records):
            asr = records[utt]["asr"]
            f.write("\t".join([utt, *(str(asr.get(c, "")) for c in columns)]) + "\n")


def _corpus_wer(records: dict[str, dict], signal: str) -> float:
    """sum(errors) / sum(words) in %, of ``signal``: estimate or mixture (Whisper), or tsasr (the system's text)."""
    errors = sum(r["asr"].get(f"{signal}_word_errors", 0) for r in records.values())
    words = sum(r["asr"].get("words", 0) for r in records.values())
    return 100.0 * errors / words if words else math.nan


def results_markdown(out: Path, settings: dict, records: dict[str, dict], threshold: float,
                     num_warnings: int) -> str:
    metrics = settings["metrics"]
    has_mix = any(r["mixture"] for r in records.values())
    lines = [f"# Scores of {out}", ""]
    lines += [f"- {role}: `{source}`" for role, source in settings["inputs"].items()]
    lines += [f"- utterances: {len(records)}", ""]
    header = "| metric | estimate (mean ± std) |" + (" mixture (mean ± std) | improvement |" if has_mix else "")
    lines += [header + " n |", "|---|---|" + ("---|---|" if has_mix else "") + "---|"]
    for metric in metrics:
        scale = display_scale(metric)
        unit = " (%)" if metric in PERCENT else ""
        mean, std, n = mean_std([r["scores"].get(metric) for r in records.values()])
        row = f"| {metric}{unit} | {scale * mean:.2f} ± {scale * std:.2f} |"
        if has_mix:
            if metric in IMPROVEMENTS:
                row += " | |"
            elif metric in NO_BASELINE:
                row += " n/a | |"
            else:
                mix_mean, mix_std, _ = mean_std([r["mixture"].get(metric) for r in records.values()])
                row += f" {scale * mix_mean:.2f} ± {scale * mix_std:.2f} | {scale * (mean - mix_mean):+.2f} |"
        lines.append(row + f" {n} |")
    lines.append("")
    if has_mix and "sar" in metrics:
        lines += ["The mixture has no SAR (n/a): it is exactly target + interference, with no artifacts.", ""]
    untranscribed = sum(r["asr"].get("truth_source") == "none" for r in records.values())
    skipped = (f" ({untranscribed} of {len(records)} rows have no transcript, their targets being cut short, "
               "and are left out)") if untranscribed else ""
    if "wer" in metrics:
        source = {r["asr"]["truth_source"] for r in records.values()} - {"none"}
        against = "the `text` transcripts" if source == {"text"} else "Whisper's transcript of the clean reference"
        lines.append(f"WER over all words (errors / words){skipped}, against {against}, ASR model "
                     f"`{settings['asr_model']}`: estimate {_corpus_wer(records, 'estimate'):.2f}%"
                     + (f", mixture {_corpus_wer(records, 'mixture'):.2f}%" if has_mix else "") + ".")
        lines.append("")
    if "tsasr_wer" in metrics:
        lines.append(f"TS-ASR WER over all words (errors / words){skipped} of the system's own transcripts "
                     f"`{settings['inputs']['hyp_text']}`, against the `text` transcripts: "
                     f"{_corpus_wer(records, 'tsasr'):.2f}%.")
        lines.append("")
    if "audible" in metrics:
        audible = [r["scores"]["audible"] for r in records.values()]
        lines.append(f"Audible (absent_energy > {settings['audible_threshold']:g} dB, output over mixture energy) on "
                     f"absent-target rows: {100.0 * sum(audible) / len(audible):.1f}% ({sum(audible):g}/"
                     f"{len(audible)}); a silent output scores the floor {-CLAMP_DB:g} dB.")
        lines.append("")
    if set(CONVERSATION_METRICS) & set(metrics):
        turns = settings["inputs"].get("rttm") or settings["inputs"]["segments"]
        lines.append(f"Conversation metrics over the turns of `{turns}`: *_active over the "
                     "target's turns, interferer_suppression over the other speakers' solo turns, target_kept over "
                     "the target's solo turns (0 dB best); n counts the rows that have such turns.")
        lines.append("")
    if "si_sdri" in metrics:
        improvements = {u: r["scores"]["si_sdri"] for u, r in records.items()}
        accepted, total = acceptance(list(improvements.values()), threshold)
        lines.append(f"Acceptance rate (SI-SDRi > {threshold:g} dB; the rest are likely target confusions): "
                     f"{100.0 * accepted / total:.1f}% ({accepted}/{total}).")
        worst = sorted(improvements, key=lambda u: improvements[u])[:WORST_SHOWN]
        lines += ["", f"Worst {len(worst)} utterances by SI-SDRi:", ""]
        lines += [f"- `{u}`: {improvements[u]:.2f} dB" for u in worst]
        lines.append("")
    if num_warnings:
        lines += [f"{num_warnings} warnings (lengths trimmed to the shorter signal, silent or short enrollments): "
                  "see `warnings.txt`.", ""]
    lines.append("Per-utterance values: `scores.tsv`" + (", mixture baseline: `mixture.tsv`" if has_mix else "")
                 + (", transcripts: `asr.tsv`" if {"wer", "cer", "tsasr_wer"} & set(metrics) else "") + ".")
    return "\n".join(lines) + "\n"
