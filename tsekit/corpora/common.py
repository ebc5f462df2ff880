"""What every corpus preparation shares: rows, audio checks, atomic writing, summary."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tsekit import TsekitError
from tsekit.data.audio import audio_info
from tsekit.data.datadir import atomic_dir, write_tables

Tables = dict[str, dict[str, str]]

# LibriMix and WHAM! mixture folder -> (holds every source, else source 1 only; holds noise). mix_single is
# source 1 + noise whatever the number of speakers (LibriMix's generation scripts), so Libri3Mix's is too.
MIXTURE_FOLDERS = {
    "mix_clean": (True, False),
    "mix_both": (True, True),
    "mix_single": (False, True),
}


def mixture_contents(mixture: str, num_sources: int = 2) -> tuple[tuple[int, ...], bool]:
    """(sources, noise?) of a mixture folder of a ``num_sources``-speaker corpus; TsekitError for an unknown one."""
    if mixture not in MIXTURE_FOLDERS:
        raise TsekitError(f"mixture must be one of {', '.join(MIXTURE_FOLDERS)}, got {mixture!r}")
    every_source, noise = MIXTURE_FOLDERS[mixture]
    return (tuple(range(1, num_sources + 1)) if every_source else (1,)), noise


# the two-speaker corpora's (WHAM!, Libri2Mix) contents, as a table
MIXTURE_CONTENTS = {mixture: mixture_contents(mixture) for mixture in MIXTURE_FOLDERS}


@dataclass(frozen=True)
class Row:
    """One extraction task: the target is source ``index`` (1-based) of the mixture."""

    mixture_id: str
    index: int
    speaker: str
    mixture: Path
    target: Path
    source_utt: str  # the target's original utterance id (utt2uniq)
    noise: Path | None = None
    text: str | None = None
    # how long the recording the text describes is: a target shorter than that (cut by LibriMix's min mode) has
    # lost some of its words, and gets no text
    text_seconds: float | None = None

    @property
    def utt(self) -> str:
        # Speaker first, joined by '-', so that utt2spk sorted by utterance is
        # also sorted by speaker (Kaldi's rule): '-' sorts before every digit
        # and letter.
        return f"{self.speaker}-{self.mixture_id}-s{self.index}"


def rows_to_tables(rows: Iterable[Row], sample_rate: int, desc: str = "") -> Tables:
    """Check the audio of every row (headers only) and build the data-dir tables.

    Raises TsekitError naming the file for: a missing/unreadable file, empty
    audio, a sample rate other than ``sample_rate``, a target or noise whose
    length differs from its mixture, or two rows with the same key.
    """
    from tqdm import tqdm

    tables: Tables = {name: {} for name in ("wav.scp", "spk1.scp", "utt2spk", "utt2dur", "utt2uniq")}
    rows = list(rows)
    if any(row.noise is not None for row in rows):
        tables["noise1.scp"] = {}
    if any(row.text is not None for row in rows):
        tables["text"] = {}
    lengths: dict[Path, int] = {}

    def length_of(path: Path) -> int:
        if path not in lengths:
            rate, frames = audio_info(str(path))
            if frames == 0:
                raise TsekitError(f"{path}: empty audio")
            if rate != sample_rate:
                raise TsekitError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz")
            lengths[path] = frames
        return lengths[path]

    for row in tqdm(rows, desc=desc or "checking audio", unit="row", disable=None, leave=False):
        utt = row.utt
        if utt in tables["wav.scp"]:
            raise TsekitError(f"{row.mixture}: duplicate row {utt}")
        frames = length_of(row.mixture)
        for other in (row.target, row.noise):
            if other is not None and length_of(other) != frames:
                raise TsekitError(
                    f"{other}: {length_of(other)} samples, but its mixture {row.mixture} has {frames}"
                )
        tables["wav.scp"][utt] = str(row.mixture)
        tables["spk1.scp"][utt] = str(row.target)
        tables["utt2spk"][utt] = row.speaker
        tables["utt2dur"][utt] = f"{frames / sample_rate:.3f}"
        tables["utt2uniq"][utt] = row.source_utt
        if row.noise is not None:
            tables["noise1.scp"][utt] = str(row.noise)
        # a resampled copy (LibriMix's 8 kHz) may round its length down by a sample
        if row.text is not None and (row.text_seconds is None or frames + 1 >= row.text_seconds * sample_rate):
            tables["text"][utt] = row.text
    if not rows:
        raise TsekitError("no rows to write")
    return tables


def write_splits(out: str | os.PathLike, splits: Mapping[str, Tables]) -> str:
    """Write ``out/<split>/`` for every split (each atomically) and return a summary table.

    Call it only after every split's tables were built, so that an error in
    one split leaves no data dir behind for any of them.
    """
    out = Path(out)
    lines = [f"{'split':<12} {'rows':>7} {'mixtures':>9} {'speakers':>9} {'hours':>8}"]
    for name, tables in splits.items():
        with atomic_dir(out / name) as tmp:
            write_tables(tmp, tables)
        rows = len(tables["wav.scp"])
        mixtures = len(set(tables["wav.scp"].values()))
        speakers = len(set(tables["utt2spk"].values()))
        # hours of mixture audio (each mixture counted once)
        seconds = sum({tables["wav.scp"][u]: float(d) for u, d in tables["utt2dur"].items()}.values())
        lines.append(f"{name:<12} {rows:>7} {mixtures:>9} {speakers:>9} {seconds / 3600:>8.2f}")
    return "\n".join(lines)


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise TsekitError(f"{path}: {what} not found")
    return path
