"""WSJ0-2mix on disk -> one Kaldi data dir per split (tr, cv, tt).

Layout (the user passes the ``2speakers`` folder as ROOT)::

    ROOT/wav{8k,16k}/{min,max}/{tr,cv,tt}/{mix,s1,s2}/<name>.wav

A mixture name such as ``01aa010b_0.97482_209a010p_-0.97482.wav`` holds the two
source utterance ids (fields 0 and 2 of the ``_``-split stem) and their gains
in dB; a WSJ0 speaker id is the first three characters of an utterance id.
WHAM! uses the same naming, so :func:`wsj_split_rows` serves both corpora.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tsekit import TsekitError
from tsekit.corpora.common import Row, Tables, require_dir, rows_to_tables, write_splits

WSJ_SPLITS = ("tr", "cv", "tt")
MODES = ("min", "max")


def parse_wsj_mixture_name(name: str) -> tuple[str, str]:
    """Source utterance ids (source 1, source 2) of a WSJ0-2mix / WHAM! mixture file name."""
    stem = name[:-4] if name.endswith(".wav") else name
    fields = stem.split("_")
    if len(fields) != 4 or not all(_is_number(gain) for gain in (fields[1], fields[3])):
        raise ValueError(f"{name!r} is not <utt1>_<gain1>_<utt2>_<gain2>.wav")
    if len(fields[0]) < 3 or len(fields[2]) < 3:
        raise ValueError(f"{name!r}: utterance ids are too short to hold a speaker id")
    return fields[0], fields[2]


def wsj_speaker(utt: str) -> str:
    """WSJ0 speaker id of an utterance id (its first three characters, e.g. ``01a``)."""
    return utt[:3]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def wsj_split_dir(root: str | os.PathLike, sample_rate: int, mode: str, split: str) -> Path:
    """``ROOT/wav8k/min/tr`` etc.; raises TsekitError naming the first folder that is missing."""
    if sample_rate not in (8000, 16000):
        raise TsekitError(f"sample rate must be 8000 or 16000, got {sample_rate}")
    if mode not in MODES:
        raise TsekitError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if split not in WSJ_SPLITS:
        raise TsekitError(f"unknown split {split!r}; choose from {', '.join(WSJ_SPLITS)}")
    path = require_dir(Path(root).absolute(), "corpus root")
    for part in (f"wav{sample_rate // 1000}k", mode, split):
        path = require_dir(path / part, "folder")
    return path


def _wav_names(folder: Path) -> set[str]:
    return {entry.name for entry in os.scandir(folder) if entry.name.endswith(".wav")}


def _check_same_names(mixtures: Path, names: set[str], other: Path) -> None:
    other_names = _wav_names(require_dir(other, "folder"))
    missing = sorted(names - other_names)
    if missing:
        raise TsekitError(f"{other / missing[0]}: not found, but {mixtures.name}/ has {missing[0]} "
                          f"({len(missing)} files of {mixtures} missing in {other})")
    extra = sorted(other_names - names)
    if extra:
        raise TsekitError(f"{other / extra[0]}: has no mixture in {mixtures} "
                          f"({len(extra)} files of {other} not in {mixtures})")


def wsj_split_rows(split_dir: Path, mixture: str, sources: Sequence[int], noise: bool) -> list[Row]:
    """Rows of one split folder: one per (mixture file in ``mixture``/, target source).

    ``sources`` names the sources present in the mixture (1 and 2, or only 1 for
    WHAM!'s mix_single); with ``noise`` the ``noise/`` file is added as noise1.
    The folders of those sources (and noise) must hold exactly the mixture names.
    """
    mixture_dir = require_dir(split_dir / mixture, "mixture folder")
    names = _wav_names(mixture_dir)
    if not names:
        raise TsekitError(f"{mixture_dir}: no .wav files")
    needed = [f"s{index}" for index in sources] + (["noise"] if noise else [])
    for sub in needed:
        _check_same_names(mixture_dir, names, split_dir / sub)
    rows = []
    for name in sorted(names):
        try:
            utts = parse_wsj_mixture_name(name)
        except ValueError as err:
            raise TsekitError(f"{mixture_dir / name}: unexpected file name: {err}") from None
        mixture_id = name[:-4]
        for index in sources:
            source_utt = utts[index - 1]
            rows.append(
                Row(
                    mixture_id=mixture_id,
                    index=index,
                    speaker=wsj_speaker(source_utt),
                    mixture=mixture_dir / name,
                    target=split_dir / f"s{index}" / name,
                    source_utt=source_utt,
                    noise=split_dir / "noise" / name if noise else None,
                )
            )
    return rows


def prepare_wsj0_2mix(
    root: str | os.PathLike,
    out: str | os.PathLike,
    sample_rate: int = 8000,
    mode: str = "min",
    splits: Sequence[str] = WSJ_SPLITS,
) -> str:
    """Write ``out/<split>/`` for each split of WSJ0-2mix; returns the summary table.

    Every split is read and checked before anything is written, so a bad file
    leaves no data dir behind.
    """
    tables: dict[str, Tables] = {}
    for split in splits:
        split_dir = wsj_split_dir(root, sample_rate, mode, split)
        rows = wsj_split_rows(split_dir, "mix", sources=(1, 2), noise=False)
        tables[split] = rows_to_tables(rows, sample_rate, desc=f"wsj0-2mix {split}")
    return write_splits(out, tables)
