"""Noisy positive / negative enrollments for the TF-GridNet pos/neg system.

Xu et al., "Target Speaker Extraction through Comparing Noisy Positive and
Negative Audio Enrollments" (NeurIPS 2025) identify the target by contrasting
a clip where the target talks among interferers (POSITIVE) with a clip where
only the interferers talk (NEGATIVE). We build both from the corpus's own
clean sources (spk1.scp audio of other rows), per row:

* positive = the row's clean enrollment (enroll.scp) + a segment of an
  interferer's utterance, scaled to a signal-to-interferer ratio (SIR) drawn
  uniformly from ``sir_range`` (default [-5, 5] dB, the usual range for
  noisy-enrollment TSE), measured over the whole clip;
* negative = a segment of ANOTHER utterance of the same interferer speaker
  (the same utterance, another segment, when the speaker has only one), at
  the interferer's level in the positive; the target is absent.

Both clips are as long as the enrollment; a longer source is cut at a random
offset, a shorter one is placed at a random offset in silence. The
interferer is never the target speaker and, when the corpus allows, not a
speaker of the row's own mixture. Every draw is seeded by (seed, row key).
Both clips share one scale that keeps peaks below 0.9 (16-bit wavs).

Output: ``enroll_posneg/{pos,neg}/<utt>.wav``, ``enroll_posneg.tsv`` (header +
one line per row: what was used, offsets, SIR, gains) and, written last,
``enroll_pos.scp`` / ``enroll_neg.scp``. A row is done once its line is in
``enroll_posneg/progress.tsv`` (appended after both wavs), so an interrupted
run resumes and a finished one rewrites nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsekit import TsekitError
from tsekit.data.audio import load_audio, write_audio
from tsekit.data.enroll import Tables, row_rng, speaker_candidates, utt2uniq_of
from tsekit.data.table import atomic_open, read_table, sorted_keys, write_table

DEFAULT_SIR_RANGE = (-5.0, 5.0)
POSNEG_DIR = "enroll_posneg"
PEAK = 0.9
COLUMNS = (
    "utt", "enroll", "interferer", "interferer_offset", "negative", "negative_offset",
    "sir_db", "interferer_gain", "negative_gain", "scale",
)
PLAN_COLUMNS = ("utt", "enroll", "interferer", "negative", "sir_db")


@dataclass(frozen=True)
class Plan:
    """What a row's clips are made of, decided before any audio is read."""

    utt: str
    enroll: str  # audio of the target's clean enrollment
    interferer: str  # row key: its spk1.scp audio interferes in the positive
    negative: str  # row key: its spk1.scp audio is the negative
    sir_db: float

    def fields(self) -> tuple[str, ...]:
        return (self.utt, self.enroll, self.interferer, self.negative, f"{self.sir_db:.2f}")


def plan_posneg(
    tables: Tables,
    enroll: Mapping[str, str],
    seed: int = 0,
    sir_range: tuple[float, float] = DEFAULT_SIR_RANGE,
    data_dir: str | os.PathLike = "",
) -> dict[str, Plan]:
    """Choose interferer, negative and SIR of every row (seeded per row)."""
    low, high = sir_range
    if not low <= high:
        raise TsekitError(f"SIR range [{low}, {high}] dB: low end is above high end")
    candidates = speaker_candidates(tables)
    speakers = sorted_keys(candidates)
    uniq = utt2uniq_of(tables)
    mixture_speakers: dict[str, set[str]] = {}
    for utt, mixture in tables["wav.scp"].items():
        mixture_speakers.setdefault(mixture, set()).add(tables["utt2spk"][utt])
    plans = {}
    for utt in sorted_keys(tables["wav.scp"]):
        target = tables["utt2spk"][utt]
        others = [s for s in speakers if s not in mixture_speakers[tables["wav.scp"][utt]]]
        others = others or [s for s in speakers if s != target]
        if not others:
            raise TsekitError(f"{data_dir}: no speaker other than {target} to interfere in posneg clips")
        rng = row_rng(seed, "posneg", utt)
        speaker = others[int(rng.integers(len(others)))]
        interferer = candidates[speaker][int(rng.integers(len(candidates[speaker])))]
        negatives = [r for r in candidates[speaker] if uniq[r] != uniq[interferer]] or [interferer]
        negative = negatives[int(rng.integers(len(negatives)))]
        sir_db = round(float(rng.uniform(low, high)), 2)
        plans[utt] = Plan(utt, enroll[utt], interferer, negative, sir_db)
    return plans


def _mono(samples: np.ndarray) -> np.ndarray:
    return samples if samples.ndim == 1 else samples[:, 0]


def segment(source: np.ndarray, length: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """``length`` samples of ``source``: cut at offset >= 0, or placed after -offset zeros when shorter."""
    if len(source) >= length:
        offset = int(rng.integers(len(source) - length + 1))
        return source[offset : offset + length].copy(), offset
    start = int(rng.integers(length - len(source) + 1))
    out = np.zeros(length, dtype=np.float32)
    out[start : start + len(source)] = source
    return out, -start


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def build_clips(
    plan: Plan, tables: Tables, seed: int
) -> tuple[np.ndarray, np.ndarray, int, dict[str, str]]:
    """(positive, negative, sample rate, record) of one row; the record holds COLUMNS as text."""
    target, rate = load_audio(plan.enroll, f"enroll.scp: {plan.utt}")
    target = _mono(target)
    sources = {}
    for role, row in (("interferer", plan.interferer), ("negative", plan.negative)):
        samples, source_rate = load_audio(tables["spk1.scp"][row], f"spk1.scp: {row}")
        if source_rate != rate:
            raise TsekitError(
                f"spk1.scp: {row}: {source_rate} Hz, but the enrollment of {plan.utt} has {rate} Hz"
            )
        sources[role] = _mono(samples)
    rng = row_rng(seed, "posneg-segment", plan.utt)
    interferer, interferer_offset = segment(sources["interferer"], len(target), rng)
    negative, negative_offset = segment(sources["negative"], len(target), rng)
    target_power = float(np.sum(target.astype(np.float64) ** 2))
    interferer_power = float(np.sum(interferer.astype(np.float64) ** 2))
    negative_power = float(np.sum(negative.astype(np.float64) ** 2))
    if target_power == 0 or interferer_power == 0 or negative_power == 0:
        raise TsekitError(f"{plan.utt}: silent enrollment or interferer segment; cannot set an SIR")
    gain = _round(np.sqrt(target_power / (interferer_power * 10 ** (plan.sir_db / 10))))
    negative_gain = _round(gain * np.sqrt(interferer_power / negative_power))
    positive = target + gain * interferer
    negative = negative_gain * negative
    peak = max(float(np.abs(positive).max()), float(np.abs(negative).max()))
    scale = _round(min(1.0, PEAK / peak))
    record = dict(zip(PLAN_COLUMNS, plan.fields(), strict=True))
    record.update(
        interferer_offset=str(interferer_offset),
        negative_offset=str(negative_offset),
        interferer_gain=repr(gain),
        negative_gain=repr(negative_gain),
        scale=repr(scale),
    )
    return scale * positive, scale * negative, rate, record


def clip_paths(data_dir: Path, utt: str) -> tuple[Path, Path]:
    if "/" in utt or utt in (".", ".."):
        raise TsekitError(f"{data_dir}: row key {utt!r} cannot be a file name")
    base = data_dir.resolve() / POSNEG_DIR
    return base / "pos" / f"{utt}.wav", base / "neg" / f"{utt}.wav"


def _read_progress(path: Path) -> dict[str, dict[str, str]]:
    """Records of finished rows (the last line of a row wins; a torn last line is ignored)."""
    done: dict[str, dict[str, str]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            fields = line.split("\t")
            if len(fields) == len(COLUMNS):
                done[fields[0]] = dict(zip(COLUMNS, fields, strict=True))
    return done


def _ends_torn(path: Path) -> bool:
    """True when a non-empty file does not end with a newline."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _write_if_changed(path: Path, table: Mapping[str, str]) -> bool:
    if path.is_file() and read_table(path) == dict(table):
        return False
    write_table(path, table)
    return True


def _write_text_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    with atomic_open(path) as f:
        f.write(text)
    return True


def make_posneg(
    data_dir: str | os.PathLike,
    tables: Tables,
    enroll: Mapping[str, str],
    seed: int = 0,
    sir_range: tuple[float, float] = DEFAULT_SIR_RANGE,
) -> str:
    """Write the positive/negative clips and lists of a data dir; returns a one-line summary."""
    from tqdm import tqdm

    data_dir = Path(data_dir)
    plans = plan_posneg(tables, enroll, seed, sir_range, data_dir)
    progress_path = data_dir / POSNEG_DIR / "progress.tsv"
    done = _read_progress(progress_path)
    records: dict[str, dict[str, str]] = {}
    todo = []
    for utt, plan in plans.items():
        record = done.get(utt)
        positive_path, negative_path = clip_paths(data_dir, utt)
        if (
            record is not None
            and tuple(record[c] for c in PLAN_COLUMNS) == plan.fields()
            and positive_path.is_file()
            and negative_path.is_file()
        ):
            records[utt] = record
        else:
            todo.append(plan)
    if todo:
        progress_path.parent.mkdir(parents=True, exist_ok=True)
        torn = _ends_torn(progress_path)
        with open(progress_path, "a", encoding="utf-8") as progress:
            if torn:  # a killed run left half a line: start ours on a fresh one
                progress.write("\n")
            for plan in tqdm(todo, desc="posneg enrollments", unit="row", disable=None, leave=False):
                positive, negative, rate, record = build_clips(plan, tables, seed)
                positive_path, negative_path = clip_paths(data_dir, plan.utt)
                write_audio(positive_path, positive, rate)
                write_audio(negative_path, negative, rate)
                progress.write("\t".join(record[c] for c in COLUMNS) + "\n")
                progress.flush()
                records[plan.utt] = record
    lines = ["\t".join(COLUMNS)] + ["\t".join(records[u][c] for c in COLUMNS) for u in sorted_keys(records)]
    changed = _write_text_if_changed(data_dir / "enroll_posneg.tsv", "\n".join(lines) + "\n")
    scps = {"enroll_pos.scp": 0, "enroll_neg.scp": 1}
    for name, which in scps.items():
        table = {utt: str(clip_paths(data_dir, utt)[which]) for utt in plans}
        changed = _write_if_changed(data_dir / name, table) or changed
    if todo or changed:
        # keep only the current records so the file does not grow over reruns
        _write_text_if_changed(progress_path, "\n".join(lines[1:]) + "\n")
    low, high = sir_range
    return (
        f"posneg: {len(todo)} rows written, {len(plans) - len(todo)} already done; "
        f"SIR uniform in [{low:g}, {high:g}] dB -> enroll_pos.scp, enroll_neg.scp, enroll_posneg.tsv"
    )
