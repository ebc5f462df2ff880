"""Who speaks when: RTTM files and tsekit's Kaldi ``segments``, read (data validation, scoring) and written
(conversation sets, tsekit.corpora.conversations).

RTTM (NIST's Rich Transcription Time Marked format), one speech turn a line::

    SPEAKER <recording> 1 <onset s> <duration s> <NA> <NA> <speaker> <NA> <NA>

Kaldi ``segments``, one speech turn a line: ``<segment> <recording> <start s> <end s>``, where tsekit names a
segment ``<recording>-<speaker>-<start cs>-<end cs>`` (centiseconds, 7 digits), so that the speaker is in its id
as in the RTTM (Kaldi's own segments do not say who speaks). Times are written with 3 decimals (1 ms). Every
reading error is one TsekitError naming the file and line.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tsekit import TsekitError
from tsekit.data.table import read_lines, sorted_keys

# RTTM times have 3 decimals, and onset and duration are rounded separately: a turn that ends on the recording's
# last sample may be written up to 1 ms past it
END_TOLERANCE_S = 0.001
RTTM_LAYOUT = "SPEAKER <recording> <channel> <onset s> <duration s> <NA> <NA> <speaker> [<NA> <NA>]"
# tsekit's segment ids (docs/data.md): <recording>-<speaker>-<start cs, 7 digits>-<end cs, 7 digits>
SEGMENT_TIMES = re.compile(r"-(\d{7})-(\d{7})$")


@dataclass(frozen=True)
class Turn:
    """One speech turn, in seconds; ``line`` is its line in the file it was read from (for messages; 0: made, not
    read)."""

    speaker: str
    onset: float
    end: float
    line: int = 0

    def span(self, rate: int, length: int) -> tuple[int, int]:
        """[start, end) in samples, clipped to ``length`` (``check_turn_ends`` refused turns further out)."""
        return min(round(self.onset * rate), length), min(round(self.end * rate), length)


def read_rttm(path: str, recordings: Collection[str], recordings_source: str) -> dict[str, list[Turn]]:
    """recording -> its turns, in file order, from the SPEAKER lines of an RTTM.

    Blank lines, ``;;`` comments and NIST's SPKR-INFO lines (speaker metadata, no times) are skipped; any other
    line must be a SPEAKER line with a known recording, a finite onset >= 0 and a duration >= 0, else a
    TsekitError names the file and line.
    """
    turns: dict[str, list[Turn]] = {}
    for lineno, line in enumerate(read_lines(path), 1):
        fields = line.split()
        if not fields or fields[0].startswith(";;") or fields[0] == "SPKR-INFO":
            continue
        where = f"{path}:{lineno}"
        if fields[0] != "SPEAKER" or len(fields) < 8:
            raise TsekitError(f"{where}: not an RTTM SPEAKER line ({RTTM_LAYOUT}): {line.strip()!r}")
        try:
            onset, duration = float(fields[3]), float(fields[4])
        except ValueError:
            raise TsekitError(f"{where}: onset {fields[3]!r} and duration {fields[4]!r} must be seconds") from None
        if not (math.isfinite(onset) and math.isfinite(duration)) or onset < 0 or duration < 0:
            raise TsekitError(f"{where}: onset {fields[3]} and duration {fields[4]} must be finite and >= 0")
        if fields[1] not in recordings:
            raise TsekitError(f"{where}: recording {fields[1]!r} is not in {recordings_source}")
        turns.setdefault(fields[1], []).append(Turn(fields[7], onset, onset + duration, lineno))
    if not turns:
        raise TsekitError(f"{path}: no SPEAKER lines")
    return turns


def read_segments(path: str, recordings: Collection[str], recordings_source: str) -> dict[str, list[Turn]]:
    """recording -> its turns from a Kaldi ``segments`` file in tsekit's layout, where the segment id
    ``<recording>-<speaker>-<start cs>-<end cs>`` names the speaker (Kaldi's own segments do not).

    Each line is ``<segment id> <recording> <start s> <end s>``; a TsekitError names the file and line of one
    that is not, of an id that does not name its recording and speaker so, or of an unknown recording.
    """
    turns: dict[str, list[Turn]] = {}
    for lineno, line in enumerate(read_lines(path), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) != 4:
            raise TsekitError(f"{where}: not a segments line (<recording>-<speaker>-<start cs>-<end cs> <recording> "
                              f"<start s> <end s>): {line.strip()!r}")
        segment, reco = fields[0], fields[1]
        try:
            start, end = float(fields[2]), float(fields[3])
        except ValueError:
            raise TsekitError(f"{where}: start {fields[2]!r} and end {fields[3]!r} must be seconds") from None
        if not (math.isfinite(start) and math.isfinite(end)) or not 0 <= start <= end:
            raise TsekitError(f"{where}: start {fields[2]} and end {fields[3]} must be finite, 0 <= start <= end")
        times = SEGMENT_TIMES.search(segment)
        if not segment.startswith(f"{reco}-") or times is None or times.start() <= len(reco) + 1:
            raise TsekitError(f"{where}: segment id {segment!r} is not <recording>-<speaker>-<start cs>-<end cs> "
                              f"of recording {reco!r}")
        if reco not in recordings:
            raise TsekitError(f"{where}: recording {reco!r} is not in {recordings_source}")
        turns.setdefault(reco, []).append(Turn(segment[len(reco) + 1:times.start()], start, end, lineno))
    if not turns:
        raise TsekitError(f"{path}: no segments")
    return turns



def read_turns(path: str | os.PathLike, recordings: Collection[str], recordings_source: str,
               kind: str | None = None) -> dict[str, list[Turn]]:
    """recording -> its turns, from an RTTM or, with ``kind`` "segments" (by default: a file named ``segments``),
    from tsekit's segments."""
    segments = kind == "segments" if kind is not None else Path(path).name == "segments"
    return (read_segments if segments else read_rttm)(str(path), recordings, recordings_source)

def check_turn_ends(turns: list[Turn], rate: int, frames: int, source: str, recording: str) -> None:
    """Refuse a turn (of file ``source``) that ends more than END_TOLERANCE_S after its recording (``recording``
    names it)."""
    for turn in turns:
        if turn.end > frames / rate + END_TOLERANCE_S:
            raise TsekitError(f"{source}:{turn.line}: turn of {turn.speaker} ends at {turn.end:.3f} s, after the "
                              f"end of the recording ({frames / rate:.3f} s, {recording})")


def segment_id(recording: str, turn: Turn) -> str:
    """tsekit's id of a turn's segment: ``<recording>-<speaker>-<start cs>-<end cs>`` (7 digits each)."""
    return f"{recording}-{turn.speaker}-{round(turn.onset * 100):07d}-{round(turn.end * 100):07d}"


def format_rttm(turns: Mapping[str, Sequence[Turn]]) -> str:
    """RTTM text of recording -> turns: recordings in C order, each one's turns by onset."""
    return "".join(
        f"SPEAKER {recording} 1 {t.onset:.3f} {t.end - t.onset:.3f} <NA> <NA> {t.speaker} <NA> <NA>\n"
        for recording in sorted_keys(turns) for t in sorted(turns[recording], key=lambda t: t.onset)
    )


def format_segments(turns: Mapping[str, Sequence[Turn]]) -> str:
    """tsekit's segments text of recording -> turns, sorted by segment id (C order, as every Kaldi table)."""
    lines: dict[str, str] = {}
    for recording, recording_turns in turns.items():
        for t in recording_turns:
            key = segment_id(recording, t)
            if key in lines:
                raise TsekitError(f"two turns of {recording} share the segment id {key}")
            lines[key] = f"{key} {recording} {t.onset:.3f} {t.end:.3f}\n"
    return "".join(lines[key] for key in sorted_keys(lines))
