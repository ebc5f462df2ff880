"""Libri2Mix and Libri3Mix on disk -> one Kaldi data dir per split (train-100, train-360, dev, test).

Layout (Libri3Mix adds s3/ and ``source_3_path``; otherwise the two are alike)::

    ROOT/wav{8k,16k}/{min,max}/{train-100,train-360,dev,test}/{mix_clean,mix_both,mix_single,s1,s2,noise}/<id>.wav
    ROOT/wav{8k,16k}/{min,max}/metadata/mixture_<split>_<mixture>.csv

The CSVs list every mixture (``mixture_ID``, ``mixture_path``,
``source_1_path``, ``source_2_path``, ``noise_path``, ``length``; the set of
columns differs between LibriMix versions, so they are read by name). Their
paths are absolute paths from generation time that rarely exist where the
corpus lives now, so only their file names are kept and looked up under ROOT.
A mixture ID such as ``1272-128104-0000_2035-147961-0014`` joins the
LibriSpeech utterance ids of its sources (three of them in Libri3Mix); a
speaker id is the text before the first ``-`` of an utterance id. Every source
of a mixture is the target of one row, except in mix_single (source 1 + noise).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tsekit import TsekitError
from tsekit.corpora.common import Row, Tables, mixture_contents, require_dir, rows_to_tables, write_splits
from tsekit.data.audio import audio_info
from tsekit.data.table import read_lines

LIBRIMIX_SPLITS = ("train-100", "train-360", "dev", "test")
MODES = ("min", "max")
NUM_SOURCES = (2, 3)  # Libri2Mix, Libri3Mix


def librimix_name(num_sources: int) -> str:
    """``Libri2Mix`` or ``Libri3Mix``; TsekitError for a number of sources LibriMix does not make."""
    if num_sources not in NUM_SOURCES:
        raise TsekitError(f"LibriMix has {' or '.join(map(str, NUM_SOURCES))} sources, got {num_sources}")
    return f"Libri{num_sources}Mix"


def parse_librimix_id(mixture_id: str, num_sources: int = 2) -> list[str]:
    """LibriSpeech utterance ids of the ``num_sources`` sources of a LibriMix mixture ID."""
    utts = mixture_id.split("_")
    form = "_".join(["<spk-chapter-utt>"] * num_sources)
    if not all(re.fullmatch(r"[^-\s]+-[^-\s]+-[^-\s]+", utt) for utt in utts):
        raise ValueError(f"mixture ID {mixture_id!r} is not {form}")
    if len(utts) != num_sources:
        raise ValueError(
            f"mixture ID {mixture_id!r} joins {len(utts)} utterance ids, {librimix_name(num_sources)} "
            f"mixtures have {num_sources} ({form})"
        )
    return utts


def librispeech_speaker(utt: str) -> str:
    """Speaker id of a LibriSpeech utterance id (``1272-128104-0000`` -> ``1272``)."""
    return utt.split("-", 1)[0]


@dataclass(frozen=True)
class Transcript:
    """A LibriSpeech utterance's words and the flac they describe (``<chapter dir>/<uttid>.flac``)."""

    text: str
    audio: Path


def read_librispeech_transcripts(librispeech: str | os.PathLike) -> dict[str, Transcript]:
    """Every ``uttid WORDS...`` line of ``DIR/**/<spk>-<chapter>.trans.txt``, with the flac beside it."""
    librispeech = require_dir(Path(librispeech).absolute(), "LibriSpeech folder")
    texts: dict[str, Transcript] = {}
    files = sorted(librispeech.rglob("*.trans.txt"))
    if not files:
        raise TsekitError(f"{librispeech}: no *.trans.txt transcript files found")
    for path in files:
        for lineno, line in enumerate(read_lines(path), 1):
            parts = line.split(maxsplit=1)
            if not parts:
                continue
            if len(parts) < 2:
                raise TsekitError(f"{path}:{lineno}: transcript line without words: {line.strip()!r}")
            texts[parts[0]] = Transcript(parts[1].strip(), path.parent / f"{parts[0]}.flac")
    return texts


def spoken_seconds(flac: Path) -> float:
    """The length of the LibriSpeech recording a transcript describes (from its header)."""
    if not flac.is_file():
        raise TsekitError(f"{flac}: file not found (needed to tell whether a LibriMix source keeps all of its words)")
    rate, frames = audio_info(str(flac))
    return frames / rate


def read_mixture_csv(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs of a LibriMix metadata CSV, with names and values stripped.

    Raises TsekitError naming the CSV if it is missing, has no rows, or lacks
    one of ``columns``.
    """
    if not path.is_file():
        raise TsekitError(f"{path}: metadata CSV not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        header = [name.strip() for name in (reader.fieldnames or [])]
        for column in columns:
            if column not in header:
                raise TsekitError(f"{path}: no column {column!r} (columns: {', '.join(header)})")
        rows = []
        for row in reader:
            clean = {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
            if any(clean.values()):
                rows.append((reader.line_num, clean))
    if not rows:
        raise TsekitError(f"{path}: no mixtures listed")
    return rows


def _local_path(split_dir: Path, subdir: str, listed: str, csv_path: Path, lineno: int) -> Path:
    """The file a CSV path names, looked up under this corpus copy's split folder."""
    name = re.split(r"[\\/]", listed)[-1]
    if not name:
        raise TsekitError(f"{csv_path}:{lineno}: empty path in the {subdir} column")
    local = split_dir / subdir / name
    if not local.is_file():
        raise TsekitError(f"{local}: file not found (listed as {listed} in {csv_path}:{lineno})")
    return local


def librimix_split_rows(
    root: str | os.PathLike,
    sample_rate: int,
    mode: str,
    split: str,
    mixture: str,
    transcripts: dict[str, str] | None = None,
    num_sources: int = 2,
) -> list[Row]:
    """Rows of one split of Libri<num_sources>Mix: one per (mixture listed in its CSV, target source)."""
    librimix_name(num_sources)
    if sample_rate not in (8000, 16000):
        raise TsekitError(f"sample rate must be 8000 or 16000, got {sample_rate}")
    if mode not in MODES:
        raise TsekitError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if split not in LIBRIMIX_SPLITS:
        raise TsekitError(f"unknown split {split!r}; choose from {', '.join(LIBRIMIX_SPLITS)}")
    mode_dir = require_dir(Path(root).absolute(), "corpus root")
    for part in (f"wav{sample_rate // 1000}k", mode):
        mode_dir = require_dir(mode_dir / part, "folder")
    split_dir = require_dir(mode_dir / split, "split folder")
    csv_path = mode_dir / "metadata" / f"mixture_{split}_{mixture}.csv"

    sources, noise = mixture_contents(mixture, num_sources)
    # CSV column -> folder of this split holding that file
    folders = {"mixture_path": mixture, **{f"source_{k}_path": f"s{k}" for k in sources}}
    if noise:
        folders["noise_path"] = "noise"
    for sub in folders.values():  # a whole folder missing (s3/ of a Libri2Mix copy): say so, not its first file
        require_dir(split_dir / sub, "folder")
    rows = []
    for lineno, entry in read_mixture_csv(csv_path, ["mixture_ID", *folders]):
        mixture_id = entry.get("mixture_ID", "")
        try:
            utts = parse_librimix_id(mixture_id, num_sources)
        except ValueError as err:
            raise TsekitError(f"{csv_path}:{lineno}: {err}") from None
        paths = {column: _local_path(split_dir, sub, entry.get(column, ""), csv_path, lineno)
                 for column, sub in folders.items()}
        for index in sources:
            source_utt = utts[index - 1]
            text, text_seconds = None, None
            if transcripts is not None:
                if source_utt not in transcripts:
                    raise TsekitError(
                        f"{csv_path}:{lineno}: no LibriSpeech transcript for {source_utt} (source {index})"
                    )
                text, text_seconds = transcripts[source_utt].text, spoken_seconds(transcripts[source_utt].audio)
            rows.append(
                Row(
                    mixture_id=mixture_id,
                    index=index,
                    speaker=librispeech_speaker(source_utt),
                    mixture=paths["mixture_path"],
                    target=paths[f"source_{index}_path"],
                    source_utt=source_utt,
                    noise=paths.get("noise_path"),
                    text=text,
                    text_seconds=text_seconds,
                )
            )
    return rows


def prepare_librimix(
    root: str | os.PathLike,
    out: str | os.PathLike,
    sample_rate: int = 16000,
    mode: str = "min",
    mixture: str = "mix_clean",
    splits: Sequence[str] = ("train-100", "dev", "test"),
    librispeech: str | os.PathLike | None = None,
    *,
    num_sources: int,
) -> str:
    """Write ``out/<split>/`` for each split of Libri<num_sources>Mix; returns the summary table.

    With ``librispeech`` (a LibriSpeech folder) the targets' transcripts fill
    ``text``, for the targets that hold their whole utterance only: ``min``
    mode cuts every source to the shortest, and a cut target's transcript
    would name words its audio does not have (``max`` mode keeps every
    target whole). All splits are checked before any is written.
    """
    name = librimix_name(num_sources).lower()
    transcripts = read_librispeech_transcripts(librispeech) if librispeech is not None else None
    tables: dict[str, Tables] = {}
    for split in splits:
        rows = librimix_split_rows(root, sample_rate, mode, split, mixture, transcripts, num_sources)
        tables[split] = rows_to_tables(rows, sample_rate, desc=f"{name} {split}")
    return write_splits(out, tables)


prepare_libri2mix = partial(prepare_librimix, num_sources=2)
prepare_libri3mix = partial(prepare_librimix, num_sources=3)
