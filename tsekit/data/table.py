"""Kaldi text tables: ``key value`` per line (wav.scp, utt2spk, text, ...).

Keys are written sorted as ``LC_ALL=C sort`` orders them (byte order) and every
write goes to a temporary file that is renamed into place, so a killed process
never leaves a half-written table behind. Tables are read as UTF-8 (a byte-order
mark is dropped); any other encoding is a one-line error naming the line.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from tsekit import TsekitError
from tsekit.jobs import atomic_open


def c_sort_key(key: str) -> bytes:
    """Sort key matching ``LC_ALL=C sort`` (byte order of the UTF-8 text)."""
    return key.encode("utf-8")


def sorted_keys(keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=c_sort_key)


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a text file (a table, an utterance list) without their line ends.

    Every text table a user hands tsekit is read through here, so that a file in another encoding is one line
    naming the file and line, and a UTF-8 byte-order mark (as some editors write) is not read as part of the
    first key.
    """
    path = Path(path)
    if not path.is_file():
        raise TsekitError(f"{path}: file not found")
    with open(path, "rb") as f:
        raw = f.read().removeprefix(codecs.BOM_UTF8).split(b"\n")
    if raw[-1] == b"":  # the piece after the last line end
        raw.pop()
    lines = []
    for lineno, line in enumerate(raw, 1):
        try:
            lines.append(line.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError:
            raise TsekitError(f"{path}:{lineno}: not UTF-8 (convert it, e.g. with iconv -t UTF-8)") from None
    return lines


def read_table(path: str | os.PathLike, allow_empty: bool = False) -> dict[str, str]:
    """Read ``key value...`` lines into a dict (value = rest of the line, stripped).

    Raises TsekitError naming the file and line on a duplicate key or, unless
    ``allow_empty`` (a transcript table, where a system that heard nothing
    writes only the key), a line without a value.
    """
    table: dict[str, str] = {}
    for lineno, line in enumerate(read_lines(path), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split(maxsplit=1)
        if len(parts) < 2 and not allow_empty:
            raise TsekitError(f"{path}:{lineno}: line has a key but no value: {line!r}")
        key, value = parts[0], parts[1] if len(parts) > 1 else ""
        if key in table:
            raise TsekitError(f"{path}:{lineno}: duplicate key {key!r}")
        table[key] = value
    return table


def read_list_table(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read ``key item1 item2 ...`` lines (spk2utt, spk2enroll)."""
    return {key: value.split() for key, value in read_table(path).items()}


def format_table(path: str | os.PathLike, table: Mapping[str, str | Iterable[str]]) -> str:
    """A table's file text, sorted by key; list values are joined by spaces (spk2utt style)."""
    lines = []
    for key in sorted_keys(table):
        value = table[key]
        if not isinstance(value, str):
            value = " ".join(value)
        if not key or any(c.isspace() for c in key):
            raise TsekitError(f"{path}: key {key!r} is empty or contains whitespace")
        lines.append(f"{key} {value}\n")
    return "".join(lines)


def write_table(path: str | os.PathLike, table: Mapping[str, str | Iterable[str]]) -> None:
    """Write a table sorted by key (atomically); list values are joined by spaces (spk2utt style)."""
    text = format_table(path, table)
    with atomic_open(path) as f:
        f.write(text)


def write_text_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Write ``text`` atomically unless the file already holds exactly it (reruns keep mtimes); True if written."""
    if Path(path).is_file() and Path(path).read_text(encoding="utf-8") == text:
        return False
    with atomic_open(path) as f:
        f.write(text)
    return True


def write_table_if_changed(path: str | os.PathLike, table: Mapping[str, str | Iterable[str]]) -> bool:
    """`write_table` unless the file already holds exactly this table; True if written."""
    return write_text_if_changed(path, format_table(path, table))


def invert_utt2spk(utt2spk: Mapping[str, str]) -> dict[str, list[str]]:
    """utt2spk -> spk2utt with utterances in sorted order."""
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted_keys(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return spk2utt
