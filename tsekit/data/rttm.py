"""Who speaks when: RTTM files and Kaldi ``segments`` of a conversation data dir.

RTTM (NIST's Rich Transcription Time Marked format), one speech turn a line::

    SPEAKER <recording> 1 <onset s> <duration s> <NA> <NA> <speaker> <NA> <NA>

Kaldi ``segments``, one speech turn a line: ``<segment> <recording> <start s> <end s>``, where tsekit's
conversation sets name a segment ``<recording>-<speaker>-<start cs>-<end cs>`` (centiseconds, 7 digits), so
the speaker is in its id as in the RTTM. Times are written with 3 decimals (1 ms). Both readers check every
line against the recordings' durations and raise a one-line TsekitError naming the file and line.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from tsekit import TsekitError
from tsekit.data.table import read_lines, sorted_keys

# a turn may end this much past its recording's end: times are written rounded to 1 ms, durations to 1 ms too
END_TOLERANCE = 0.002


@dataclass(frozen=True)
class Turn:
    """One speaker talking from ``start`` to ``end`` seconds of ``recording``."""

    recording: str
    speaker: str
    start: float
    end: float

    @property
    def segment_id(self) -> str:
        return f"{self.recording}-{self.speaker}-{round(self.start * 100):07d}-{round(self.end * 100):07d}"


def format_rttm(turns: Iterable[Turn]) -> str:
    """RTTM text of ``turns``, by recording (C order), then onset, then speaker."""
    return "".join(
        f"SPEAKER {t.recording} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker} <NA> <NA>\n"
        for t in _ordered(turns)
    )


def format_segments(turns: Iterable[Turn]) -> str:
    """Kaldi segments text of ``turns``, sorted by segment id (C order, as every Kaldi table)."""
    by_id = {}
    for turn in turns:
        if turn.segment_id in by_id:
            raise TsekitError(f"two turns share the segment id {turn.segment_id}")
        by_id[turn.segment_id] = turn
    return "".join(
        f"{key} {t.recording} {t.start:.3f} {t.end:.3f}\n" for key in sorted_keys(by_id) for t in [by_id[key]]
    )


def _ordered(turns: Iterable[Turn]) -> list[Turn]:
    return sorted(turns, key=lambda t: (t.recording.encode(), t.start, t.speaker.encode()))


def _number(text: str, where: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TsekitError(f"{where}: {what} {text!r} is not a number") from None
    if not value >= 0:  # also catches nan
        raise TsekitError(f"{where}: negative {what} {text}")
    return value


def _check_turn(turn: Turn, where: str, durations: Mapping[str, float] | None) -> None:
    if turn.end <= turn.start:
        raise TsekitError(f"{where}: turn of {turn.speaker} has no duration ({turn.start:.3f}-{turn.end:.3f} s)")
    if durations is None:
        return
    if turn.recording not in durations:
        raise TsekitError(f"{where}: recording {turn.recording} is not in the data (utt2reco)")
    if turn.end > durations[turn.recording] + END_TOLERANCE:
        raise TsekitError(
            f"{where}: turn ends at {turn.end:.3f} s, past the end of {turn.recording} "
            f"({durations[turn.recording]:.3f} s)"
        )


def read_rttm(
    path: str | os.PathLike,
    durations: Mapping[str, float] | None = None,
    speakers: Mapping[str, Collection[str]] | None = None,
) -> list[Turn]:
    """The SPEAKER lines of an RTTM file as turns (other line types are skipped, as RTTM allows).

    With ``durations`` (recording -> seconds) a turn of an unknown recording or one ending past its
    recording's end is an error naming the line; with ``speakers`` (recording -> its speakers) so is a turn
    of a speaker the recording does not have.
    """
    turns = []
    for lineno, line in enumerate(read_lines(path), 1):
        fields = line.split()
        where = f"{path}:{lineno}"
        if not fields or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise TsekitError(f"{where}: an RTTM SPEAKER line has 10 fields, this one {len(fields)}")
        onset, duration = _number(fields[3], where, "onset"), _number(fields[4], where, "duration")
        turn = Turn(fields[1], fields[7], onset, onset + duration)
        _check_turn(turn, where, durations)
        if speakers is not None and turn.speaker not in speakers.get(turn.recording, ()):
            raise TsekitError(f"{where}: speaker {turn.speaker} is not a speaker of {turn.recording} (utt2spk)")
        turns.append(turn)
    return turns


def read_segments(path: str | os.PathLike, durations: Mapping[str, float] | None = None) -> dict[str, Turn]:
    """A Kaldi segments file: segment id -> turn (its speaker is the id's text between recording and times).

    With ``durations`` (recording -> seconds) a segment of an unknown recording or one ending past its
    recording's end is an error naming the line.
    """
    segments: dict[str, Turn] = {}
    for lineno, line in enumerate(read_lines(path), 1):
        fields = line.split()
        where = f"{path}:{lineno}"
        if not fields:
            continue
        if len(fields) != 4:
            raise TsekitError(f"{where}: a segments line is '<segment> <recording> <start> <end>', got {line!r}")
        segment, recording = fields[0], fields[1]
        if segment in segments:
            raise TsekitError(f"{where}: duplicate segment {segment}")
        # the id's own speaker: tsekit's ids are <recording>-<speaker>-<start>-<end>; others' ids tell none
        rest = segment.removeprefix(f"{recording}-").rsplit("-", 2)
        speaker = rest[0] if segment.startswith(f"{recording}-") and len(rest) == 3 else ""
        turn = Turn(recording, speaker, _number(fields[2], where, "start"), _number(fields[3], where, "end"))
        _check_turn(turn, where, durations)
        segments[segment] = turn
    return segments
