"""Kaldi data directories for TSE: one row per (mixture, target) pair.

Files (all sorted by key, ``LC_ALL=C``):
  wav.scp      utt -> mixture audio            spk1.scp    utt -> clean target
  enroll.scp   utt -> enrollment of the target  noise1.scp  utt -> noise (noisy corpora)
  enroll_pos.scp / enroll_neg.scp  noisy positive / negative enrollments
  utt2spk, spk2utt   target speaker           text        target transcript (only rows whose
                                                            target holds every word of it)
  utt2dur      mixture duration (s)            utt2uniq    id of the target's source
                                                            utterance (excluded as its own
                                                            enrollment)
  utt2enroll   utt -> the row whose target was chosen as enrollment
  spk2enroll   speaker -> rows whose target can serve as an enrollment
  utt2reco     utt -> recording (conversation sets: one row per speaker of a recording; wav.scp names the
               whole recording, spk1.scp the speaker's own track)
  rttm, segments   who speaks when in each recording of utt2reco (tsekit.data.rttm)
  utt2present  utt -> 1 or 0; 0: the enrolled speaker is not in the mixture (absent-target rows, which have no
               spk1.scp); without the file every row's target is present
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from tsekit import TsekitError
from tsekit.data.table import (
    c_sort_key,
    invert_utt2spk,
    read_lines,
    read_list_table,
    read_table,
    sorted_keys,
    write_table,
)
from tsekit.jobs import atomic_open, temporary_name

SCP_FILES = ("wav.scp", "spk1.scp", "enroll.scp", "noise1.scp", "enroll_pos.scp", "enroll_neg.scp")
PER_UTT_FILES = SCP_FILES + ("utt2spk", "text", "utt2dur", "utt2uniq", "utt2enroll", "utt2reco", "utt2present")
# spk1.scp is required too, unless every row is an absent-target one (utt2present 0): see present_rows
REQUIRED_FILES = ("wav.scp", "utt2spk", "spk2utt")
# per-utterance tables that may leave rows out: a target cut short (LibriMix's min mode) has no transcript, as
# its audio lacks some of the words; training on text and WER scoring skip those rows
PARTIAL_FILES = ("text",)
# per-utterance tables of the target, which only the rows whose target is in the mixture have (present_rows)
TARGET_FILES = ("spk1.scp",)
# per-recording files of conversation sets (lines name a recording of utt2reco)
RECORDING_FILES = ("rttm", "segments")


def present_rows(tables: Mapping[str, Mapping[str, str]]) -> set[str]:
    """The rows whose target speaks in the mixture: every row, unless utt2present marks some 0."""
    presence = tables.get("utt2present")
    if presence is None:
        return set(tables["wav.scp"])
    return {utt for utt, value in presence.items() if value != "0"}


def read_data_dir(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """Every per-utterance table present in ``path``, keyed by file name."""
    path = Path(path)
    if not path.is_dir():
        raise TsekitError(f"{path}: data directory not found")
    if not (path / "wav.scp").is_file():
        raise TsekitError(f"{path}/wav.scp: file not found (not a data directory?)")
    return {name: read_table(path / name) for name in PER_UTT_FILES if (path / name).is_file()}


def replace_dir(new: Path, out: Path) -> None:
    """Put the finished directory ``new`` (on out's file system) at ``out``, replacing what was there."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(new, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, out)


def make_temporary_dir(out: Path) -> Path:
    """A new empty directory beside ``out`` to build it in, with the permissions ``mkdir`` would give (0777 less
    the umask; ``tempfile.mkdtemp`` would make it 0700, unreadable to colleagues on a shared cluster)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(out)
    tmp.mkdir()
    return tmp


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name; it replaces ``out`` only on success."""
    out = Path(out)
    tmp = make_temporary_dir(out)
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_tables(path: Path, tables: Mapping[str, Mapping[str, str]]) -> None:
    """Write tables into an existing directory; spk2utt is derived from utt2spk."""
    for name, table in tables.items():
        write_table(path / name, table)
    if "utt2spk" in tables:
        write_table(path / "spk2utt", invert_utt2spk(tables["utt2spk"]))


def check_tables(out: str | os.PathLike, tables: Mapping[str, Mapping[str, str]]) -> None:
    """TsekitError unless every per-utterance table of a data dir to be written at ``out`` covers its rows."""
    keys, present = set(tables["wav.scp"]), present_rows(tables)
    for name, table in tables.items():
        if name in PARTIAL_FILES and not set(table) <= keys:
            raise TsekitError(f"{out}/{name}: keys not in wav.scp (e.g. {sorted(set(table) - keys)[:3]})")
        if name in TARGET_FILES and set(table) != present:
            raise TsekitError(f"{out}/{name}: keys are not the rows whose target is present (utt2present)")
        if name in PER_UTT_FILES and name not in PARTIAL_FILES + TARGET_FILES and set(table) != keys:
            missing = sorted(keys - set(table))[:3]
            raise TsekitError(f"{out}/{name}: keys do not match wav.scp (e.g. missing {missing})")


def write_data_dir(out: str | os.PathLike, tables: Mapping[str, Mapping[str, str]]) -> Path:
    """Write a whole data dir atomically (``out`` appears complete or not at all)."""
    check_tables(out, tables)
    with atomic_dir(out) as tmp:
        write_tables(tmp, tables)
    return Path(out)


def subset_tables(tables: Mapping[str, Mapping[str, str]], utts: list[str]) -> dict[str, dict[str, str]]:
    """Each table cut to the rows ``utts``."""
    return {name: {u: table[u] for u in utts if u in table or name not in PARTIAL_FILES + TARGET_FILES}
            for name, table in tables.items()}


def subset_data_dir(path: str | os.PathLike, utt_list: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Copy the rows named in ``utt_list`` (first field of each line) to ``out``."""
    tables = read_data_dir(path)
    wanted = [line.split()[0] for line in read_lines(utt_list) if line.strip()]
    unknown = [u for u in wanted if u not in tables["wav.scp"]]
    if unknown:
        raise TsekitError(f"{utt_list}: {len(unknown)} utterances are not in {path} (e.g. {unknown[:3]})")
    if not wanted:
        raise TsekitError(f"{utt_list}: empty utterance list")
    subset = subset_tables(tables, sorted_keys(set(wanted)))
    with atomic_dir(out) as tmp:
        write_tables(tmp, subset)
        _copy_spk2enroll(Path(path), tmp, subset)
        _copy_recording_files(Path(path), tmp, subset)
    return Path(out)


def _copy_spk2enroll(src: Path, dst: Path, tables: Mapping[str, Mapping[str, str]]) -> None:
    """Keep spk2enroll entries of the speakers present whose rows are present."""
    if not (src / "spk2enroll").is_file():
        return
    speakers = set(tables["utt2spk"].values())
    rows = tables["wav.scp"]
    kept = {}
    for spk, utts in read_list_table(src / "spk2enroll").items():
        utts = [u for u in utts if u in rows]
        if spk in speakers and utts:
            kept[spk] = utts
    write_table(dst / "spk2enroll", kept)


def _copy_recording_files(src: Path, dst: Path, tables: Mapping[str, Mapping[str, str]]) -> None:
    """Keep the rttm and segments lines of the recordings whose rows are kept (the recording is field 2 of both)."""
    recordings = set(tables.get("utt2reco", {}).values())
    for name in RECORDING_FILES:
        if (src / name).is_file():
            kept = [line + "\n" for line in read_lines(src / name) if line.split()[1:2] and
                    line.split()[1] in recordings]
            with atomic_open(dst / name) as f:
                f.writelines(kept)


def split_data_dir(path: str | os.PathLike, num_parts: int) -> list[Path]:
    """Split into ``path/split{N}/{1..N}``: contiguous runs of sorted rows, sizes within one."""
    path = Path(path)
    tables = read_data_dir(path)
    utts = sorted_keys(tables["wav.scp"])
    if num_parts < 1:
        raise TsekitError(f"number of parts must be positive, got {num_parts}")
    if num_parts > len(utts):
        raise TsekitError(f"{path}: cannot split {len(utts)} utterances into {num_parts} parts")
    parts = []
    base, extra = divmod(len(utts), num_parts)
    start = 0
    with atomic_dir(path / f"split{num_parts}") as tmp:
        for index in range(num_parts):
            size = base + (1 if index < extra else 0)
            part = tmp / str(index + 1)
            part.mkdir()
            subset = subset_tables(tables, utts[start : start + size])
            write_tables(part, subset)
            _copy_spk2enroll(path, part, subset)
            _copy_recording_files(path, part, subset)
            start += size
            parts.append(path / f"split{num_parts}" / str(index + 1))
    return parts


def utt2spk_sorted_by_speaker(utt2spk: Mapping[str, str]) -> bool:
    """Kaldi's rule: sorting utt2spk by speaker gives the same order as sorting by utterance."""
    by_utt = sorted_keys(utt2spk)
    by_spk = sorted(utt2spk, key=lambda u: (c_sort_key(utt2spk[u]), c_sort_key(u)))
    return by_utt == by_spk
