"""``tsekit data holdout``: split a data dir by source utterance into a training part and a held-out part.

A speaker classifier (the distillation teacher ``tfgridnet_speaker``) can only be validated on speakers it
was trained on: the speakers of a dev set are unknown to it and add nothing to its loss. So the training
data dir is split: for every speaker with enough distinct source utterances (``utt2uniq``; without it each
row is its own source, Kaldi's default), ``per_speaker`` of them, drawn from (seed, speaker) only, are held
out. Every row whose TARGET source is held out goes to the held-out dir, every other row to the training
dir, so no held-out utterance is ever a training target.

Rows are (mixture x target): a mixture whose s1 is held out may keep its s2 row in training, so the
training MIXTURES may contain held-out speech of another speaker (as interference). That is fine for a
speaker classifier, which only sees clean enrollments of its target speaker; do not use the split to
measure extraction on unseen utterances.

Enrollments never cross the split. ``enroll: sampled`` training draws from ``spk2enroll``, which lists rows
of the data dir itself and enrolls with their ``spk1.scp`` (see :mod:`tsekit.data.dataset`): rebuilt from
the training rows, it holds training utterances only. The fixed lists (``enroll.scp``, ``utt2enroll``) are
drawn anew within each part, as ``tsekit enroll PART --seed SEED`` would: a training row's old enrollment
may be a held-out utterance, and a held-out row's old one is a training utterance, which would make a
validation of the teacher (it classifies ``enroll.scp``) a validation on training speech. Hence, when the
input has ``enroll.scp``, each held-out speaker needs two held-out utterances (``per_speaker`` >= 2) and
each taking-part speaker keeps two for training (the same holds for ``spk2enroll`` alone: sampled
enrollments need another source utterance). The noisy pos/neg clips (``enroll_pos.scp``,
``enroll_neg.scp``, ``enroll_posneg.tsv``) were mixed from the old enrollments and are not carried; rerun
``tsekit enroll --posneg`` on a part to rebuild them.

Other per-row tables (every line keyed by a row of wav.scp, e.g. text, utt2dur, noise1.scp, tokens.scp;
text may leave rows out) are split; tables keyed by speaker (spk2gender) are cut to the part's speakers;
spk2utt is rebuilt; any other file is not carried and is named in the result.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tsekit import TsekitError
from tsekit.data.datadir import PARTIAL_FILES, PER_UTT_FILES, make_temporary_dir, replace_dir, subset_tables
from tsekit.data.table import read_table, sorted_keys, write_table

ENROLL_LISTS = ("enroll.scp", "utt2enroll", "spk2enroll")  # drawn anew within each part
POSNEG_FILES = ("enroll_pos.scp", "enroll_neg.scp", "enroll_posneg.tsv")  # mixed from the old enrollments
DERIVED = ("spk2utt",)  # rebuilt from utt2spk
DEFAULT_PER_SPEAKER = 2  # a held-out row is enrolled by another held-out utterance of its speaker


@dataclass
class HoldoutResult:
    """What :func:`holdout_data_dir` wrote."""

    data: Path
    train: Path
    heldout: Path
    train_rows: int
    train_speakers: int
    heldout_rows: int
    heldout_speakers: int
    heldout_sources: int
    per_speaker: int
    seed: int
    too_few: int  # speakers with too few source utterances to hold any out (all their rows train)
    not_carried: list[str] = field(default_factory=list)
    unchanged: bool = False  # both parts were already on disk as they would have been written

    def summary(self) -> str:
        line = (f"{self.data}: {self.train} {self.train_rows} rows, {self.train_speakers} speakers; "
                f"{self.heldout} {self.heldout_rows} rows, {self.heldout_speakers} speakers "
                f"({self.heldout_sources} source utterances held out, {self.per_speaker} per speaker, "
                f"seed {self.seed}")
        if self.too_few:
            line += f"; {self.too_few} speakers with too few utterances kept whole in training"
        line += ")"
        if self.not_carried:
            line += f"; not carried: {' '.join(self.not_carried)}"
        if self.unchanged:
            line += "; unchanged"
        return line


def _read_input(data: Path) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]], list[str]]:
    """(per-row tables, per-speaker tables, names of files not carried), all checked to fit the rows."""
    from tsekit.data.enroll import read_rows

    if not data.is_dir():
        raise TsekitError(f"{data}: data directory not found")
    for name in ("wav.scp", "spk1.scp", "utt2spk"):
        if not (data / name).is_file():
            raise TsekitError(f"{data / name}: file not found (a hold-out split needs wav.scp, spk1.scp, utt2spk)")
    rows = read_rows(data)  # the known per-row tables, with spk1.scp, utt2spk, utt2uniq covering every row
    for name in ENROLL_LISTS + POSNEG_FILES:
        rows.pop(name, None)  # drawn anew within each part, or not carried
    keys = set(rows["wav.scp"])
    if not keys:
        raise TsekitError(f"{data / 'wav.scp'}: no rows")
    for name, table in rows.items():
        # a partial table (text: LibriMix's min mode cuts some targets short of their transcript) may leave rows out
        if set(table) != keys and not (name in PARTIAL_FILES and set(table) <= keys):
            odd = sorted_keys(set(table) ^ keys)
            raise TsekitError(f"{data / name}: keys do not match wav.scp (e.g. {odd[0]})")
    speakers = set(rows["utt2spk"].values())
    speaker_tables: dict[str, dict[str, str]] = {}
    not_carried = [name for name in POSNEG_FILES if (data / name).is_file()]
    handled = set(PER_UTT_FILES) | set(ENROLL_LISTS) | set(POSNEG_FILES) | set(DERIVED)
    for path in sorted(data.iterdir()):
        if path.name in handled or path.name.startswith(".") or not path.is_file():
            continue  # folders: splitN/ is derived, enroll_posneg/ holds the clips not carried
        try:
            table = read_table(path)
        except (TsekitError, UnicodeDecodeError):
            table = {}
        if table and set(table) == keys:
            rows[path.name] = table
        elif table and set(table) <= speakers:
            speaker_tables[path.name] = table
        else:
            not_carried.append(path.name)
    return rows, speaker_tables, not_carried


def choose_heldout(
    utt2spk: Mapping[str, str], utt2uniq: Mapping[str, str], per_speaker: int, min_train: int, seed: int
) -> tuple[set[str], int]:
    """(held-out source utterances, number of speakers with too few to take part).

    A speaker takes part when it has at least ``per_speaker + min_train`` distinct source utterances; its
    ``per_speaker`` held-out ones are drawn from its C-sorted sources by a generator seeded by (seed,
    speaker) only, so adding or removing other speakers never changes them.
    """
    from tsekit.data.enroll import row_rng

    sources: dict[str, set[str]] = {}
    for utt, spk in utt2spk.items():
        sources.setdefault(spk, set()).add(utt2uniq[utt])
    heldout: set[str] = set()
    too_few = 0
    for spk in sorted_keys(sources):
        if len(sources[spk]) < per_speaker + min_train:
            too_few += 1
            continue
        ordered = sorted_keys(sources[spk])
        picked = row_rng(seed, "holdout", spk).choice(len(ordered), size=per_speaker, replace=False)
        heldout.update(ordered[int(i)] for i in picked)
    return heldout, too_few


def _same_files(new: Path, old: Path) -> bool:
    if not old.is_dir():
        return False
    names = sorted(p.name for p in new.iterdir())
    if names != sorted(p.name for p in old.iterdir()):
        return False
    return all((old / n).is_file() and filecmp.cmp(new / n, old / n, shallow=False) for n in names)


def _install(new: Path, out: Path) -> bool:
    """Put the finished folder ``new`` at ``out`` unless ``out`` already has the same files; True if replaced."""
    if _same_files(new, out):
        return False
    replace_dir(new, out)
    return True


def _write_part(folder: Path, rows: dict[str, dict[str, str]], speaker_tables: Mapping[str, Mapping[str, str]],
                enroll: bool, spk2enroll: bool, seed: int, name: Path) -> None:
    from tsekit.data.datadir import write_tables
    from tsekit.data.enroll import choose_enrollments, speaker_candidates, write_enroll_lists

    write_tables(folder, rows)  # spk2utt comes from utt2spk
    speakers = set(rows["utt2spk"].values())
    for table_name, table in speaker_tables.items():
        kept = {spk: value for spk, value in table.items() if spk in speakers}
        if kept:
            write_table(folder / table_name, kept)
    if enroll:
        write_enroll_lists(folder, rows, choose_enrollments(rows, seed, name))
    elif spk2enroll:
        write_table(folder / "spk2enroll", speaker_candidates(rows))


def holdout_data_dir(
    data: str | os.PathLike,
    train_out: str | os.PathLike,
    heldout_out: str | os.PathLike,
    per_speaker: int = DEFAULT_PER_SPEAKER,
    seed: int = 0,
) -> HoldoutResult:
    """Split ``data`` into ``train_out`` and ``heldout_out`` by held-out source utterance (module docstring).

    Both parts are built completely before either is put in place, so an error leaves both outputs as
    they were; a part that is already on disk with the same files is left untouched (a rerun rewrites
    nothing).
    """
    from tsekit.data.enroll import utt2uniq_of

    data, train_out, heldout_out = Path(data), Path(train_out), Path(heldout_out)
    if per_speaker < 1:
        raise TsekitError(f"per_speaker must be at least 1, got {per_speaker}")
    where = {p.resolve() for p in (data, train_out, heldout_out)}
    if len(where) < 3:
        raise TsekitError(f"{data}: the training part ({train_out}) and the held-out part ({heldout_out}) "
                          "must be two folders other than the input")
    rows, speaker_tables, not_carried = _read_input(data)
    enroll = (data / "enroll.scp").is_file()
    spk2enroll = enroll or (data / "spk2enroll").is_file()
    if enroll and per_speaker < 2:
        raise TsekitError(f"{data / 'enroll.scp'}: held-out rows are enrolled by another held-out utterance of "
                          f"their speaker, so hold out at least 2 per speaker (got {per_speaker})")
    min_train = 2 if spk2enroll else 1
    uniq = utt2uniq_of(rows)
    heldout, too_few = choose_heldout(rows["utt2spk"], uniq, per_speaker, min_train, seed)
    if not heldout:
        raise TsekitError(f"{data}: no speaker has the {per_speaker + min_train} distinct source utterances "
                          f"needed to hold out {per_speaker} and keep {min_train} for training")
    parts = {train_out: [u for u in rows["wav.scp"] if uniq[u] not in heldout],
             heldout_out: [u for u in rows["wav.scp"] if uniq[u] in heldout]}
    staged: list[tuple[Path, Path]] = []
    try:
        for out, utts in parts.items():
            folder = make_temporary_dir(out)
            staged.append((folder, out))
            _write_part(folder, subset_tables(rows, utts), speaker_tables, enroll, spk2enroll, seed, out)
        replaced = [_install(folder, out) for folder, out in staged]
    finally:
        for folder, _ in staged:
            shutil.rmtree(folder, ignore_errors=True)

    def count(utts: list[str]) -> tuple[int, int]:
        return len(utts), len({rows["utt2spk"][u] for u in utts})

    (train_rows, train_speakers), (held_rows, held_speakers) = count(parts[train_out]), count(parts[heldout_out])
    return HoldoutResult(data, train_out, heldout_out, train_rows, train_speakers, held_rows, held_speakers,
                         len(heldout), per_speaker, seed, too_few, not_carried, unchanged=not any(replaced))
