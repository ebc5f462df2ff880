"""Scores for real recordings: targets that are not there, and conversations scored where each speaker talks.

Absent-target rows (the enrolled speaker is not in the mixture, so there is no reference; the right output is
silence):

    absent_energy = 10 log10(sum est^2 / sum mix^2)      dB over the whole utterance, lower is better
    audible       = 1 if absent_energy > threshold else 0 (default -20 dB); its mean is the fraction of rows a
                    system leaves audible

Whole-utterance energies rather than frame-wise ones: the question is how much of the mixture a system lets
through in total, and a frame-wise mean of dB values would be dominated by the quiet frames of both signals. An
all-zero output (what a presence decision writes) would be -inf dB; it scores the floor -CLAMP_DB (-100 dB) like
every energy ratio in tsekit (``sdr.ratio_db``), so means stay finite and silence is simply the best value.

Conversations (one row per (recording, speaker), the whole recording as the mixture, the speaker's own track as
the reference, an RTTM or tsekit's ``segments`` saying who speaks when). Per row, from the turns (samples
``round(seconds * rate)``):

    A, the target's active samples:      the target has a turn there (overlapped or not)
    T, the target's solo samples:        the target has a turn and nobody else has
    I, the interferers' solo samples:    exactly one speaker has a turn, and it is not the target

    si_sdr_active          = SI-SDR of est[A] against ref[A]          (A's samples concatenated)
    sdr_active             = BSS-Eval SDR of est[A] against ref[A]    (the 512-tap distortion filter of bss_eval)
    interferer_suppression = 10 log10(E_mix(I) / E_est(I))            dB, higher is better
    target_kept            = 10 log10(E_est(T) / E_ref(T))            dB, 0 is best

Scoring over the whole recording would let the long stretches where the target is silent (its reference is zero
there) decide SI-SDR, and says nothing about what a listener hears while someone else talks alone. Gaps, where
nobody talks, enter no score. Interferer turns are pooled (one energy ratio over every interferer's solo samples),
so a speaker heard for two minutes weighs more than one heard for two seconds, as for a listener. A row with no
solo samples of the kind (an interferer who never talks alone; a target always overlapped) gets NaN for that
metric, and RESULTS.md counts the rows that have it. Both energy ratios measure the output as written, so they
depend on its level (``tsekit infer --output-level``); their sum, E_mix(I) E_est(T) / (E_est(I) E_ref(T)), does
not. Concatenating A's samples joins turns end to end; the distortion filter of sdr_active spans a join for its
first 512 samples (32 ms at 16 kHz), negligible against turns of seconds.

Every step is linear in the recording's length and works on the region's samples BLOCK (2^20, 65 s at 16 kHz)
at a time (``masked_blocks``), so scoring holds the three signals, three masks and one block, whatever the
length. The block-wise values are exact, not an approximation: si_sdr_active sums the means, energies and inner
product block by block (``sdr.si_sdr_of_blocks``), and sdr_active sums the correlations bss_eval's filter fit
needs, solves the one 512-tap filter of the whole region as bss_eval does, and sums the residual's energy in a
second pass (``sdr.sdr_of_blocks``): both equal the whole-signal functions up to float64 rounding. A one-hour
16 kHz recording of 3 rows scores in 1.2 GB peak (docs/RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from tsekit import TsekitError
from tsekit.data.rttm import Turn
from tsekit.metrics import sdr

ABSENT_METRICS = ("absent_energy", "audible")
CONVERSATION_METRICS = ("si_sdr_active", "sdr_active", "interferer_suppression", "target_kept")
AUDIBLE_THRESHOLD_DB = -20.0
# samples of a row's regions scored at a time (about 65 s at 16 kHz): what bounds scoring's memory besides the
# signals themselves
BLOCK = 1 << 20
def check_rows_speak(turns: Mapping[str, list[Turn]], utt2reco: Mapping[str, str], utt2spk: Mapping[str, str],
                     source: str) -> None:
    """Every row's target has a turn in its recording: a row the turns (of file ``source``) never hear has no
    active region."""
    for utt, reco in utt2reco.items():
        if not any(turn.speaker == utt2spk[utt] for turn in turns.get(reco, ())):
            raise TsekitError(f"{source}: no turn of speaker {utt2spk[utt]!r} in recording {reco!r} (row {utt})")


@dataclass
class Regions:
    """Boolean masks over a row's samples (module docstring): A, T and I."""

    active: np.ndarray
    target_solo: np.ndarray
    others_solo: np.ndarray


def regions(turns: list[Turn], target: str, rate: int, length: int) -> Regions:
    """The target's active and solo samples and the interferers' solo samples of a recording ``length`` long."""
    talking = np.zeros(length, dtype=np.uint8)  # how many speakers have a turn at each sample
    target_mask = np.zeros(length, dtype=bool)
    speaks = np.empty(length, dtype=bool)  # one mask reused for every speaker: an hour is 58 MB a mask
    for speaker in dict.fromkeys(turn.speaker for turn in turns):
        speaks[:] = False
        for turn in (t for t in turns if t.speaker == speaker):
            start, end = turn.span(rate, length)
            speaks[start:end] = True  # a speaker's own overlapping turns count once
        talking += speaks
        if speaker == target:
            target_mask = speaks.copy()
    solo = talking == 1
    return Regions(target_mask, target_mask & solo, solo & ~target_mask)


def masked_blocks(mask: np.ndarray, *signals: np.ndarray, block: int = BLOCK) -> Iterator[tuple[np.ndarray, ...]]:
    """The samples of ``signals`` where ``mask`` holds, concatenated and handed out ``block`` at a time (float64):
    ``signal[mask]`` of every signal, in pieces, without holding it whole."""
    change = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    bounds = np.concatenate([[0], change, [len(mask)]])
    runs = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if mask[a]]
    pieces: list[tuple[int, int]] = []
    held = 0
    for start, end in runs:
        while start < end:
            take = min(end - start, block - held)
            pieces.append((start, start + take))
            held += take
            start += take
            if held == block:
                yield tuple(np.concatenate([x[a:b] for a, b in pieces]).astype(np.float64) for x in signals)
                pieces, held = [], 0
    if pieces:
        yield tuple(np.concatenate([x[a:b] for a, b in pieces]).astype(np.float64) for x in signals)


def _energies(mask: np.ndarray, *signals: np.ndarray) -> list[float]:
    """The energy of each signal where ``mask`` holds, in one pass over the mask's blocks."""
    totals = [0.0] * len(signals)
    for parts in masked_blocks(mask, *signals):
        totals = [total + float(np.dot(part, part)) for total, part in zip(totals, parts, strict=True)]
    return totals


def _energy_ratio_db(mask: np.ndarray, numerator: np.ndarray, denominator: np.ndarray) -> float:
    """10 log10 of the two signals' energies where ``mask`` holds; NaN where it holds nowhere."""
    return sdr.ratio_db(*_energies(mask, numerator, denominator)) if mask.any() else math.nan


def absent_energy(estimate: np.ndarray, mixture: np.ndarray) -> float:
    """10 log10(E_est / E_mix) over the whole utterance, dB; an all-zero estimate scores -CLAMP_DB."""
    return sdr.ratio_db(*(float(np.dot(x, x.astype(np.float64))) for x in (estimate, mixture)))


def conversation_scores(estimate: np.ndarray, reference: np.ndarray, mixture: np.ndarray | None, where: Regions,
                        wanted: set[str]) -> dict[str, float]:
    """The CONVERSATION_METRICS in ``wanted`` of one row (module docstring); NaN where a region is empty."""
    values: dict[str, float] = {}
    if wanted & {"si_sdr_active", "sdr_active"}:
        if where.active.any():
            def active() -> Iterator[tuple[np.ndarray, ...]]:
                return masked_blocks(where.active, estimate, reference)

            if "si_sdr_active" in wanted:
                values["si_sdr_active"] = sdr.si_sdr_of_blocks(active)
            if "sdr_active" in wanted:
                values["sdr_active"] = sdr.sdr_of_blocks(active)
        else:  # every turn of the target clipped away at the end of a shortened estimate
            values["si_sdr_active"] = values["sdr_active"] = math.nan
    if "interferer_suppression" in wanted:
        values["interferer_suppression"] = _energy_ratio_db(where.others_solo, mixture, estimate)
    if "target_kept" in wanted:
        values["target_kept"] = _energy_ratio_db(where.target_solo, estimate, reference)
    return {m: v for m, v in values.items() if m in wanted}
