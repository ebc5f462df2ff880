"""Noisy positive / negative enrollments for the TF-GridNet pos/neg system.

Xu et al., "Target Speaker Extraction through Comparing Noisy Positive and
Negative Audio Enrollments" (NeurIPS 2025) identify the target by contrasting
a clip where the target talks among interferers (POSITIVE) with a clip where
only the interferers talk (NEGATIVE). We build both from the corpus's own
clean sources (spk1.scp audio of other rows), per row:

* positive = the row's clean enrollment (enroll.scp) + a segment of one
  utterance of each of ``interferers`` distinct interferer speakers (1: the
  paper's 2-speaker positives, 2: its 3-speaker ones). Each interferer is
  scaled on its own to a target-to-that-interferer signal-to-interferer
  ratio (SIR) drawn per interferer, uniformly from ``sir_range`` (default
  [-5, 5] dB, the usual range for noisy-enrollment TSE), measured over the
  whole clip. So the SIR range keeps its meaning for any number of
  interferers, and the target against all interferers together lies about
  10*log10(interferers) dB lower;
* negative = for each interferer speaker, a segment of ANOTHER utterance of
  that speaker (the same utterance, another segment, when the speaker has
  only one) at that interferer's level in the positive, summed; the target
  is absent.

Optional noise (``noise``: a list of noise files, e.g. the WHAM! noise of
the data dir's noise1.scp or of a wham_noise split folder) makes both clips
noisy scenes: per row one noise file is drawn (never the noise of the row's
own mixture when another is listed), each clip gets its own segment of it at
its own random offset, and the positive's noise sits at an SNR drawn
uniformly from ``snr_range`` (default [0, 10] dB) below the positive's speech
(target + interferers). The negative's noise has the same power as the
positive's (its gain follows the same rule against the POSITIVE's speech),
so both clips are the same scene with and without the target. A noise file
shorter than the clip is tiled (repeated), not padded with silence, so the
background never stops mid-clip; offsets are where the segment starts in the
file. Multi-channel audio contributes channel 0.

A conversation set and an absent-target set bring their own enroll.scp and have no clean targets to cut
interferers from (a conversation row's spk1.scp is its speaker's track of the whole recording, mostly
silence; an absent-target row has none): their clips take the interferers from the rows of another data
dir, the test set they were built from (``sources``; ``tsekit enroll --posneg-sources``).

Both clips are as long as the enrollment; a longer speech source is cut at a
random offset, a shorter one is placed at a random offset in silence. An
interferer is never the target speaker and, when the corpus has enough
speakers, not a speaker of the row's own mixture. Every draw is seeded by
(seed, row key); the draws of the first interferer come first, so a row's
1-interferer clips are exactly those of the original 2-speaker builder, and
its first interferer stays the same for any ``interferers``. Both clips share
one scale that keeps peaks below 0.9 (16-bit wavs).

Output: ``enroll_posneg/{pos,neg}/<utt>.wav``, ``enroll_posneg.tsv`` (header +
one line per row: what was used, offsets, SIRs, gains; with several
interferers the interferer columns hold comma-separated lists, one item per
interferer in the same order; with noise, the NOISE_COLUMNS follow) and,
written last, ``enroll_pos.scp`` / ``enroll_neg.scp``. A row is done once its
line is in ``enroll_posneg/progress.tsv`` (appended after both wavs) with the
plan of the current options, so an interrupted run resumes, a finished one
rewrites nothing, and a run with other options rebuilds the rows they change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsekit import TsekitError
from tsekit.data.audio import audio_info, is_pipe, load_audio, write_audio
from tsekit.data.enroll import Tables, row_rng, speaker_candidates, utt2uniq_of
from tsekit.data.table import read_table, sorted_keys, write_table_if_changed, write_text_if_changed

DEFAULT_SIR_RANGE = (-5.0, 5.0)
DEFAULT_SNR_RANGE = (0.0, 10.0)
POSNEG_DIR = "enroll_posneg"
PEAK = 0.9
# the interferer columns hold one comma-separated item per interferer
COLUMNS = (
    "utt", "enroll", "interferer", "interferer_offset", "negative", "negative_offset",
    "sir_db", "interferer_gain", "negative_gain", "scale",
)
# only when noise was added (so records without noise stay as they always were)
NOISE_COLUMNS = ("noise", "noise_offset", "negative_noise_offset", "snr_db", "noise_gain", "negative_noise_gain")
PLAN_COLUMNS = ("utt", "enroll", "interferer", "negative", "sir_db")
NOISE_PLAN_COLUMNS = ("noise", "snr_db")


def record_columns(noisy: bool) -> tuple[str, ...]:
    """Columns of enroll_posneg.tsv and progress.tsv, with or without noise."""
    return COLUMNS + NOISE_COLUMNS if noisy else COLUMNS


@dataclass(frozen=True)
class Plan:
    """What a row's clips are made of, decided before any audio is read."""

    utt: str
    enroll: str  # audio of the target's clean enrollment
    interferers: tuple[str, ...]  # row keys, one per interferer speaker: their spk1.scp audio is in the positive
    negatives: tuple[str, ...]  # row keys, one per interferer: another utterance of that speaker, in the negative
    sir_db: tuple[float, ...]  # target-to-interferer SIR, one per interferer
    noise: str | None = None  # noise file of both clips
    snr_db: float | None = None  # positive's speech to its noise

    @property
    def columns(self) -> tuple[str, ...]:
        return PLAN_COLUMNS + (NOISE_PLAN_COLUMNS if self.noise is not None else ())

    def fields(self) -> tuple[str, ...]:
        fields = (
            self.utt, self.enroll, ",".join(self.interferers), ",".join(self.negatives),
            ",".join(f"{sir:.2f}" for sir in self.sir_db),
        )
        if self.noise is not None:
            fields += (self.noise, f"{self.snr_db:.2f}")
        return fields


def noise_files(data_dir: str | os.PathLike, source: str | os.PathLike) -> dict[str, str]:
    """The noise list of ``tsekit enroll --posneg-noise``: key -> audio.

    ``source`` is ``"scp"`` for the data dir's own noise1.scp (WHAM! noise in
    Libri2Mix mix_both and WHAM! data dirs) or a folder whose every ``*.wav``,
    searched recursively, is a noise file (e.g. ``wham_noise/tr``; write
    ``./scp`` for a folder named scp).
    """
    data_dir = Path(data_dir)
    if str(source) == "scp":
        path = data_dir / "noise1.scp"
        if not path.is_file():
            raise TsekitError(f"{data_dir}: no noise1.scp to take posneg noise from (not a noisy corpus?)")
        table = read_table(path)
        if not table:
            raise TsekitError(f"{path}: empty; no posneg noise to draw")
        return table
    folder = Path(source)
    if not folder.is_dir():
        raise TsekitError(f"{folder}: not a folder of noise wavs (posneg noise is 'scp' or a folder)")
    folder = folder.resolve()  # absolute paths: the record then names the same files from any working dir
    wavs = sorted_keys(str(path) for path in folder.rglob("*.wav") if path.is_file())
    if not wavs:
        raise TsekitError(f"{folder}: no .wav files to take posneg noise from")
    return {str(Path(path).relative_to(folder).with_suffix("")): path for path in wavs}


def _file_key(entry: str) -> str:
    """How two lists may spell one noise file (relative vs absolute path)."""
    return entry if is_pipe(entry) else os.path.abspath(entry)


def _draw_index(rng: np.random.Generator, count: int, skip: list[int]) -> int:
    """A uniform index in range(count) outside the sorted ``skip`` (all of range(count) if that leaves none)."""
    if len(skip) >= count:
        return int(rng.integers(count))
    index = int(rng.integers(count - len(skip)))
    for skipped in skip:  # shift past each skipped index at or below: O(len(skip)), not O(count)
        if index >= skipped:
            index += 1
    return index


def _check_noise(plans: Mapping[str, Plan]) -> None:
    """Every chosen noise file is readable audio at the enrollments' rate (header only where possible)."""
    first = next(iter(plans.values()), None)
    if first is None or first.noise is None:
        return
    rate, _ = audio_info(first.enroll, f"enroll.scp: {first.utt}")
    for noise in sorted_keys({plan.noise for plan in plans.values()}):
        noise_rate, _ = audio_info(noise, "posneg noise")
        if noise_rate != rate:
            raise TsekitError(f"{noise}: {noise_rate} Hz noise, but the enrollments have {rate} Hz")


def plan_posneg(
    tables: Tables,
    enroll: Mapping[str, str],
    seed: int = 0,
    sir_range: tuple[float, float] = DEFAULT_SIR_RANGE,
    data_dir: str | os.PathLike = "",
    interferers: int = 1,
    noise: Mapping[str, str] | None = None,
    snr_range: tuple[float, float] = DEFAULT_SNR_RANGE,
    sources: Tables | None = None,
) -> dict[str, Plan]:
    """Choose interferers, negatives, SIRs (and noise file, SNR) of every row (seeded per row).

    ``sources``: the rows whose clean targets (spk1.scp) the interferers and negatives are cut from (default:
    ``tables`` itself); a set that has no usable targets of its own (module docstring) takes another's.
    Also checks the chosen noise files' headers (existence, sample rate), so
    that a caller running this first fails before writing anything.
    """
    low, high = sir_range
    if not low <= high:
        raise TsekitError(f"SIR range [{low}, {high}] dB: low end is above high end")
    if interferers < 1:
        raise TsekitError(f"posneg interferers: {interferers}; a positive clip needs at least 1")
    noise_list: list[str] = []
    if noise is not None:
        snr_low, snr_high = snr_range
        if not snr_low <= snr_high:
            raise TsekitError(f"SNR range [{snr_low}, {snr_high}] dB: low end is above high end")
        noise_list = sorted_keys(set(noise.values()))  # a noise1.scp names each file once per row
        if not noise_list:
            raise TsekitError(f"{data_dir}: empty posneg noise list")
    noise_index = {_file_key(path): index for index, path in enumerate(noise_list)}
    sources = tables if sources is None else sources
    candidates = speaker_candidates(sources)
    speakers = sorted_keys(candidates)
    uniq = utt2uniq_of(sources)
    mixture_speakers: dict[str, set[str]] = {}
    # the speakers of a mixture, known from every row that names it: an absent-target row's own speaker is not in
    # its mixture, the rows of the set it was drawn from (the sources) say who is
    for rows in (tables, sources):
        for utt, mixture in rows["wav.scp"].items():
            mixture_speakers.setdefault(mixture, set()).add(rows["utt2spk"][utt])
    mixture_noise: dict[str, set[str]] = {}
    for utt, mixture in tables["wav.scp"].items():
        if utt in tables.get("noise1.scp", {}):
            mixture_noise.setdefault(mixture, set()).add(_file_key(tables["noise1.scp"][utt]))
    plans = {}
    for utt in sorted_keys(tables["wav.scp"]):
        target = tables["utt2spk"][utt]
        mixture = tables["wav.scp"][utt]
        outside = [s for s in speakers if s not in mixture_speakers[mixture]]
        non_target = [s for s in speakers if s != target]
        if len(non_target) < interferers:
            raise TsekitError(
                f"{data_dir}: {len(non_target)} speakers other than {target}, "
                f"too few for {interferers} posneg interferer(s)"
            )
        rng = row_rng(seed, "posneg", utt)
        # per interferer, in this order: speaker, its utterance, the negative's utterance, the SIR
        chosen: list[str] = []
        rows, negatives, sirs = [], [], []
        for _ in range(interferers):
            pool = [s for s in outside if s not in chosen] or [s for s in non_target if s not in chosen]
            speaker = pool[int(rng.integers(len(pool)))]
            interferer = candidates[speaker][int(rng.integers(len(candidates[speaker])))]
            options = [r for r in candidates[speaker] if uniq[r] != uniq[interferer]] or [interferer]
            negative = options[int(rng.integers(len(options)))]
            chosen.append(speaker)
            rows.append(interferer)
            negatives.append(negative)
            sirs.append(round(float(rng.uniform(low, high)), 2))
        if interferers > 1:
            for row in rows + negatives:
                if "," in row:
                    raise TsekitError(f"{data_dir}: row key {row!r} has a comma; cannot list it in enroll_posneg.tsv")
        noise_file, snr_db = None, None
        if noise is not None:
            # a separate stream, so adding noise never changes the speech draws above
            noise_rng = row_rng(seed, "posneg-noise", utt)
            own = sorted(noise_index[key] for key in mixture_noise.get(mixture, ()) if key in noise_index)
            noise_file = noise_list[_draw_index(noise_rng, len(noise_list), own)]
            snr_db = round(float(noise_rng.uniform(*snr_range)), 2)
        plans[utt] = Plan(utt, enroll[utt], tuple(rows), tuple(negatives), tuple(sirs), noise_file, snr_db)
    _check_noise(plans)
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


def noise_segment(noise: np.ndarray, length: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """``length`` samples of ``noise`` from a random offset, the file repeated as often as needed.

    Sample i of the segment is ``noise[(offset + i) % len(noise)]``; a file at
    least ``length`` long is simply cut.
    """
    if len(noise) >= length:
        offset = int(rng.integers(len(noise) - length + 1))
        return noise[offset : offset + length].copy(), offset
    offset = int(rng.integers(len(noise)))
    return noise[(offset + np.arange(length)) % len(noise)], offset


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _power(samples: np.ndarray) -> float:
    return float(np.sum(samples.astype(np.float64) ** 2))


def _load_source(entry: str, what: str, utt: str, rate: int, name: str = "") -> np.ndarray:
    """Channel 0 of an audio entry at the enrollment's rate; ``name`` (default ``what``) heads a rate error."""
    samples, source_rate = load_audio(entry, what)
    if source_rate != rate:
        raise TsekitError(f"{name or what}: {source_rate} Hz, but the enrollment of {utt} has {rate} Hz")
    return _mono(samples)


def build_clips(
    plan: Plan, sources: Tables, seed: int
) -> tuple[np.ndarray, np.ndarray, int, dict[str, str]]:
    """(positive, negative, sample rate, record) of one row, its interferers cut from the spk1.scp audio of
    ``sources``; the record holds ``record_columns`` as text."""
    target, rate = load_audio(plan.enroll, f"enroll.scp: {plan.utt}")
    target = _mono(target)
    rng = row_rng(seed, "posneg-segment", plan.utt)
    target_power = _power(target)
    positive, negative = target, None
    offsets: dict[str, list[str]] = {"interferer": [], "negative": []}
    gains: dict[str, list[str]] = {"interferer": [], "negative": []}
    for row, negative_row, sir_db in zip(plan.interferers, plan.negatives, plan.sir_db, strict=True):
        # both segments of one interferer before the next one's: the first interferer draws as it always did
        interferer_source = _load_source(sources["spk1.scp"][row], f"spk1.scp: {row}", plan.utt, rate)
        negative_source = _load_source(sources["spk1.scp"][negative_row], f"spk1.scp: {negative_row}",
                                       plan.utt, rate)
        interferer, interferer_offset = segment(interferer_source, len(target), rng)
        negative_part, negative_offset = segment(negative_source, len(target), rng)
        interferer_power, negative_power = _power(interferer), _power(negative_part)
        if target_power == 0 or interferer_power == 0 or negative_power == 0:
            raise TsekitError(f"{plan.utt}: silent enrollment or interferer segment; cannot set an SIR")
        gain = _round(np.sqrt(target_power / (interferer_power * 10 ** (sir_db / 10))))
        negative_gain = _round(gain * np.sqrt(interferer_power / negative_power))
        positive = positive + gain * interferer
        negative = negative_gain * negative_part if negative is None else negative + negative_gain * negative_part
        offsets["interferer"].append(str(interferer_offset))
        offsets["negative"].append(str(negative_offset))
        gains["interferer"].append(repr(gain))
        gains["negative"].append(repr(negative_gain))
    record = dict(zip(plan.columns, plan.fields(), strict=True))
    if plan.noise is not None:
        noise = _load_source(plan.noise, "posneg noise", plan.utt, rate, plan.noise)
        noise_rng = row_rng(seed, "posneg-noise-segment", plan.utt)
        positive_noise, noise_offset = noise_segment(noise, len(target), noise_rng)
        negative_noise, negative_noise_offset = noise_segment(noise, len(target), noise_rng)
        speech_power = _power(positive)
        positive_noise_power, negative_noise_power = _power(positive_noise), _power(negative_noise)
        if positive_noise_power == 0 or negative_noise_power == 0:
            raise TsekitError(f"{plan.noise}: silent noise segment for {plan.utt}; cannot set an SNR")
        # both noises at the level the SNR sets against the positive's speech: one scene, target on or off
        noise_gain = _round(np.sqrt(speech_power / (positive_noise_power * 10 ** (plan.snr_db / 10))))
        negative_noise_gain = _round(np.sqrt(speech_power / (negative_noise_power * 10 ** (plan.snr_db / 10))))
        positive = positive + noise_gain * positive_noise
        negative = negative + negative_noise_gain * negative_noise
        record.update(
            noise_offset=str(noise_offset),
            negative_noise_offset=str(negative_noise_offset),
            noise_gain=repr(noise_gain),
            negative_noise_gain=repr(negative_noise_gain),
        )
    peak = max(float(np.abs(positive).max()), float(np.abs(negative).max()))
    scale = _round(min(1.0, PEAK / peak))
    record.update(
        interferer_offset=",".join(offsets["interferer"]),
        negative_offset=",".join(offsets["negative"]),
        interferer_gain=",".join(gains["interferer"]),
        negative_gain=",".join(gains["negative"]),
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
        lines = path.read_text(encoding="utf-8").split("\n")
        # the piece after the last newline is empty, or half a line of a killed run: never a record
        for line in lines[:-1]:
            fields = line.split("\t")
            for columns in (COLUMNS, COLUMNS + NOISE_COLUMNS):
                if len(fields) == len(columns):
                    done[fields[0]] = dict(zip(columns, fields, strict=True))
    return done


def _drop_torn_tail(path: Path) -> None:
    """Cut a killed run's half-written last line, so that no later line is appended to it."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
    data = path.read_bytes()
    with open(path, "r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)


def _is_done(record: dict[str, str] | None, plan: Plan, data_dir: Path) -> bool:
    """A row is done when its record was made from this plan (same options) and both clips exist."""
    if record is None or set(record) != set(record_columns(plan.noise is not None)):
        return False
    if tuple(record[c] for c in plan.columns) != plan.fields():
        return False
    return all(path.is_file() for path in clip_paths(data_dir, plan.utt))


def make_posneg(
    data_dir: str | os.PathLike,
    tables: Tables,
    enroll: Mapping[str, str],
    seed: int = 0,
    sir_range: tuple[float, float] = DEFAULT_SIR_RANGE,
    interferers: int = 1,
    noise: Mapping[str, str] | None = None,
    snr_range: tuple[float, float] = DEFAULT_SNR_RANGE,
    sources: Tables | None = None,
) -> str:
    """Write the positive/negative clips and lists of a data dir; returns a one-line summary.

    ``interferers`` speakers talk with the target in the positive; ``noise``
    (key -> audio, see :func:`noise_files`) adds noise to both clips at an
    SNR drawn from ``snr_range``; ``sources`` (default ``tables``) are the rows
    the interferers come from. See the module docstring for the rules.
    """
    from tqdm import tqdm

    data_dir = Path(data_dir)
    sources = tables if sources is None else sources
    plans = plan_posneg(tables, enroll, seed, sir_range, data_dir, interferers, noise, snr_range, sources)
    progress_path = data_dir / POSNEG_DIR / "progress.tsv"
    done = _read_progress(progress_path)
    columns = record_columns(noise is not None)
    records: dict[str, dict[str, str]] = {}
    todo = []
    for utt, plan in plans.items():
        if _is_done(done.get(utt), plan, data_dir):
            records[utt] = done[utt]
        else:
            todo.append(plan)
    if todo:
        progress_path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(progress_path)
        with open(progress_path, "a", encoding="utf-8") as progress:
            for plan in tqdm(todo, desc="posneg enrollments", unit="row", disable=None, leave=False):
                positive, negative, rate, record = build_clips(plan, sources, seed)
                positive_path, negative_path = clip_paths(data_dir, plan.utt)
                write_audio(positive_path, positive, rate)
                write_audio(negative_path, negative, rate)
                progress.write("\t".join(record[c] for c in columns) + "\n")
                progress.flush()
                records[plan.utt] = record
    lines = ["\t".join(columns)] + ["\t".join(records[u][c] for c in columns) for u in sorted_keys(records)]
    changed = write_text_if_changed(data_dir / "enroll_posneg.tsv", "\n".join(lines) + "\n")
    scps = {"enroll_pos.scp": 0, "enroll_neg.scp": 1}
    for name, which in scps.items():
        table = {utt: str(clip_paths(data_dir, utt)[which]) for utt in plans}
        changed = write_table_if_changed(data_dir / name, table) or changed
    if todo or changed:
        # keep only the current records so the file does not grow over reruns
        write_text_if_changed(progress_path, "\n".join(lines[1:]) + "\n")
    low, high = sir_range
    what = f"SIR uniform in [{low:g}, {high:g}] dB"
    if interferers > 1:
        what += f" per interferer, {interferers} interferers"
    if noise is not None:
        snr_low, snr_high = snr_range
        files = len(set(noise.values()))
        what += f"; noise from {files} files at SNR uniform in [{snr_low:g}, {snr_high:g}] dB"
    return (
        f"posneg: {len(todo)} rows written, {len(plans) - len(todo)} already done; "
        f"{what} -> enroll_pos.scp, enroll_neg.scp, enroll_posneg.tsv"
    )
