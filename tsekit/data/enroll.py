"""Enrollment lists of a data dir (recipe stage 2): enroll.scp, utt2enroll, spk2enroll.

An enrollment tells a TSE model whose voice to extract. For a row (mixture x
target) it must be another utterance of the same speaker: never the target's
own source utterance (same ``utt2uniq``), never a source of the same mixture
(same ``wav.scp`` value). Candidates are the ``spk1.scp`` audio of other rows.

Three ways to get ``enroll.scp``:

* :func:`choose_enrollments` draws one candidate per row. The draw of a row is
  seeded by (seed, row key) only and picks from the C-sorted candidate list,
  so adding rows of other speakers never changes it.
* :func:`import_but_map` reads BUT SpeakerBeam's published Libri2Mix list
  ``map_mixture2enrollment``: lines ``mixID targetUttID sN/otherMixID``, the
  enrollment being ``<split folder>/sN/<otherMixID>.wav``.
* :func:`import_spex_lists` reads SpEx/SpEx+ style ``aux.scp`` with the
  ``mix.scp`` / ``ref.scp`` beside it.

``spk2enroll`` lists, per speaker, one row per distinct source utterance: the
pool a training loader samples a fresh enrollment from.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsekit import TsekitError
from tsekit.data.audio import entry_path, is_ark, is_pipe
from tsekit.data.table import invert_utt2spk, read_lines, read_table, sorted_keys, write_table_if_changed

Tables = Mapping[str, Mapping[str, str]]

# an enrollment a system can take but that tells it little about the voice: shorter than this, or silent, its RMS
# level below this (dB relative to full scale, 1.0); commands that read one warn (``enrollment_doubt``)
SHORT_ENROLLMENT_SECONDS = 0.5
SILENT_ENROLLMENT_DBFS = -60.0


# the enrollment inputs a model may need, by batch key, and the data-dir files that hold them
ENROLLMENT_FILES = {"enroll": "enroll.scp", "enroll_pos": "enroll_pos.scp", "enroll_neg": "enroll_neg.scp"}


@dataclass
class EnrollLists:
    """What stage 2 writes: ``enroll`` (utt -> audio) and ``utt2enroll`` (utt -> what was picked)."""

    enroll: dict[str, str]
    utt2enroll: dict[str, str]
    notes: list[str]


def enrollment_doubt(samples: np.ndarray, rate: int) -> str | None:
    """Why an enrollment (mono samples at ``rate``) likely enrolls nobody, or None: shorter than
    ``SHORT_ENROLLMENT_SECONDS``, or silent (RMS below ``SILENT_ENROLLMENT_DBFS``). Measured on the samples, not the
    header: a header cannot tell silence. Whether a system can use the clip at all is its own check
    (``TSEModel.check_enrollment``), an error."""
    doubts = []
    seconds = len(samples) / rate
    if seconds < SHORT_ENROLLMENT_SECONDS:
        doubts.append(f"shorter than {SHORT_ENROLLMENT_SECONDS:g} s ({seconds:.2f} s)")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    level = 20 * np.log10(rms) if rms > 0 else -np.inf
    if level < SILENT_ENROLLMENT_DBFS:
        doubts.append(f"silent (RMS {level:.1f} dBFS, below {SILENT_ENROLLMENT_DBFS:g} dBFS)")
    return f"enrollment is {' and '.join(doubts)}: the system may extract the wrong speaker" if doubts else None


def row_rng(seed: int, purpose: str, utt: str) -> np.random.Generator:
    """A random generator owned by one row: it depends on (seed, purpose, row key) only."""
    digest = hashlib.sha256(f"{seed}\0{purpose}\0{utt}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def utt2uniq_of(tables: Tables) -> Mapping[str, str]:
    """Source-utterance id of every row; without utt2uniq each row is its own source (Kaldi's default)."""
    return tables.get("utt2uniq") or {utt: utt for utt in tables["wav.scp"]}


def speaker_candidates(tables: Tables) -> dict[str, list[str]]:
    """spk2enroll: speaker -> one row per distinct source utterance (the C-smallest row key), C-sorted."""
    uniq = utt2uniq_of(tables)
    chosen: dict[str, dict[str, str]] = {}
    for utt in sorted_keys(tables["utt2spk"]):
        chosen.setdefault(tables["utt2spk"][utt], {}).setdefault(uniq[utt], utt)
    return {spk: sorted_keys(rows.values()) for spk, rows in chosen.items()}


def valid_candidates(
    tables: Tables, utt: str, spk2utt: Mapping[str, list[str]], uniq: Mapping[str, str] | None = None
) -> list[str]:
    """Rows whose target may enroll ``utt``: same speaker, other source utterance, other mixture.

    One row per distinct source utterance, C-sorted. Among the rows of one
    source utterance the first one not in ``utt``'s mixture is taken, so a
    source that also occurs in the target's mixture is still usable elsewhere.
    ``spk2utt`` is :func:`invert_utt2spk` of the rows (C-sorted lists);
    ``uniq`` is :func:`utt2uniq_of` (pass both when calling for many rows).
    """
    uniq = uniq if uniq is not None else utt2uniq_of(tables)
    mixture = tables["wav.scp"][utt]
    by_source: dict[str, str] = {}
    for other in spk2utt[tables["utt2spk"][utt]]:
        if uniq[other] == uniq[utt] or tables["wav.scp"][other] == mixture:
            continue
        by_source.setdefault(uniq[other], other)
    return sorted_keys(by_source.values())


def choose_enrollments(tables: Tables, seed: int = 0, data_dir: str | os.PathLike = "") -> EnrollLists:
    """Draw one enrollment per row (seeded per row); ``utt2enroll`` names the chosen row.

    Raises TsekitError naming the speaker and ``data_dir`` when a row has no
    valid candidate (e.g. a speaker with a single source utterance).
    """
    spk2utt, uniq = invert_utt2spk(tables["utt2spk"]), utt2uniq_of(tables)
    enroll, utt2enroll = {}, {}
    for utt in sorted_keys(tables["wav.scp"]):
        candidates = valid_candidates(tables, utt, spk2utt, uniq)
        if not candidates:
            speaker = tables["utt2spk"][utt]
            raise TsekitError(
                f"{data_dir}: speaker {speaker} has no enrollment candidate for row {utt} "
                "(needs another source utterance of that speaker outside the row's mixture)"
            )
        chosen = candidates[int(row_rng(seed, "enroll", utt).integers(len(candidates)))]
        enroll[utt] = tables["spk1.scp"][chosen]
        utt2enroll[utt] = chosen
    return EnrollLists(enroll, utt2enroll, [])


def _plain_path(entry: str, what: str) -> Path:
    if is_pipe(entry) or is_ark(entry):
        raise TsekitError(f"{what}: {entry!r} is not a plain audio path, needed to locate list audio")
    return entry_path(entry)


BUT_ENROLL_ID = re.compile(r"^s(?P<index>\d+)/(?P<mixture>\S+)$")


def _read_but_map(map_file: Path) -> dict[tuple[str, str], str]:
    entries: dict[tuple[str, str], str] = {}
    for lineno, line in enumerate(read_lines(map_file), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or not BUT_ENROLL_ID.match(fields[2]):
            raise TsekitError(
                f"{map_file}:{lineno}: expected 'mixtureID targetUttID sN/otherMixtureID', "
                f"got {line.strip()!r}"
            )
        key = (fields[0], fields[1])
        if key in entries:
            raise TsekitError(f"{map_file}:{lineno}: second line for mixture {key[0]} target {key[1]}")
        entries[key] = fields[2]
    if not entries:
        raise TsekitError(f"{map_file}: empty map")
    return entries


def _but_target_id(tables: Tables, utt: str, mixture_id: str, target: Path) -> str | None:
    """LibriSpeech id of the row's target: its utt2uniq if part of the mixture id, else by its sN folder."""
    parts = mixture_id.split("_")
    uniq = tables.get("utt2uniq", {}).get(utt)
    if uniq in parts:
        return uniq
    match = re.fullmatch(r"s(\d+)", target.parent.name)
    if match and 1 <= int(match.group(1)) <= len(parts):
        return parts[int(match.group(1)) - 1]
    return None


def import_but_map(tables: Tables, map_file: str | os.PathLike) -> EnrollLists:
    """Enrollments from BUT SpeakerBeam's ``map_mixture2enrollment`` (Libri2Mix/Libri3Mix).

    A row's mixture id is the stem of its ``spk1.scp`` file
    (``<split>/sN/<mixID>.wav``); its enrollment ``sM/<otherMixID>`` resolves to
    ``<split>/sM/<otherMixID>.wav``, beside the row's own target folder, so the
    list fits every sample rate and mode of the corpus. Only the lines that
    rows use are resolved. The published lists pair a few targets with their
    own mixture or utterance; they are kept as published and counted in notes.
    """
    map_file = Path(map_file)
    entries = _read_but_map(map_file)
    uniq = utt2uniq_of(tables)
    enroll, utt2enroll = {}, {}
    own_mixture = own_utterance = 0
    for utt in sorted_keys(tables["wav.scp"]):
        target = _plain_path(tables["spk1.scp"][utt], f"spk1.scp: {utt}")
        mixture_id = target.stem
        target_id = _but_target_id(tables, utt, mixture_id, target)
        enroll_id = entries.get((mixture_id, target_id)) if target_id else None
        if enroll_id is None:
            raise TsekitError(f"{map_file}: no line for row {utt} (mixture {mixture_id}, target {target_id})")
        match = BUT_ENROLL_ID.match(enroll_id)
        path = target.parent.parent / f"s{match.group('index')}" / f"{match.group('mixture')}.wav"
        if not path.is_file():
            raise TsekitError(f"{map_file}: enrollment {enroll_id} of row {utt}: {path} not found")
        other_parts = match.group("mixture").split("_")
        index = int(match.group("index"))
        if match.group("mixture") == mixture_id:
            own_mixture += 1
        elif index <= len(other_parts) and other_parts[index - 1] == uniq[utt]:
            own_utterance += 1
        enroll[utt] = str(path)
        utt2enroll[utt] = enroll_id
    notes = []
    if own_mixture:
        notes.append(f"{own_mixture} rows get an enrollment from their own mixture (as published)")
    if own_utterance:
        notes.append(f"{own_utterance} rows get their own target utterance as enrollment (as published)")
    return EnrollLists(enroll, utt2enroll, notes)


def _resolve(value: str, base: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


def import_spex_lists(tables: Tables, aux_file: str | os.PathLike) -> EnrollLists:
    """Enrollments from SpEx/SpEx+ style lists: ``aux.scp`` with ``mix.scp`` and ``ref.scp`` beside it.

    A row matches a list key when the file names (basenames) of its mixture
    and target equal those of the key's mix.scp and ref.scp values. Where
    names alone are ambiguous (WSJ0-2mix names s1/ and s2/ files like their
    mixture), the target's folder name must match too. The enrollment is the
    key's aux.scp value; relative paths are taken from aux.scp's folder.
    """
    aux_file = Path(aux_file)
    base = aux_file.parent
    aux = read_table(aux_file)
    mix = read_table(base / "mix.scp")
    ref = read_table(base / "ref.scp")
    for other, name in ((mix, "mix.scp"), (ref, "ref.scp")):
        missing = sorted_keys(set(aux) - set(other))
        if missing:
            raise TsekitError(
                f"{base / name}: has no line for {len(missing)} keys of {aux_file} (e.g. {missing[0]})"
            )
    by_name: dict[tuple[str, ...], list[str]] = {}
    for key in sorted_keys(aux):
        mixture, target = Path(mix[key]), Path(ref[key])
        by_name.setdefault((mixture.name, target.name), []).append(key)
        by_name.setdefault((mixture.name, target.parent.name, target.name), []).append(key)
    row_names: dict[tuple[str, str], int] = {}
    row_targets = {}
    for utt in tables["wav.scp"]:
        mixture = _plain_path(tables["wav.scp"][utt], f"wav.scp: {utt}")
        target = _plain_path(tables["spk1.scp"][utt], f"spk1.scp: {utt}")
        row_targets[utt] = (mixture, target)
        short = (mixture.name, target.name)
        row_names[short] = row_names.get(short, 0) + 1
    enroll, utt2enroll = {}, {}
    for utt in sorted_keys(tables["wav.scp"]):
        mixture, target = row_targets[utt]
        short = (mixture.name, target.name)
        name = short if row_names[short] == 1 else (mixture.name, target.parent.name, target.name)
        keys = by_name.get(name, [])
        if not keys:
            raise TsekitError(f"{aux_file}: no key for row {utt} (mixture {mixture.name}, target {target})")
        if len(keys) > 1:
            raise TsekitError(f"{aux_file}: row {utt} matches several keys ({', '.join(keys[:3])})")
        path = _resolve(aux[keys[0]], base)
        if not path.is_file():
            raise TsekitError(f"{aux_file}: enrollment of {keys[0]}: {path} not found")
        enroll[utt] = str(path)
        utt2enroll[utt] = keys[0]
    return EnrollLists(enroll, utt2enroll, [])


MAP_FORMATS = {"but": import_but_map, "spex": import_spex_lists}


def make_enroll_lists(
    tables: Tables,
    data_dir: str | os.PathLike,
    seed: int = 0,
    from_map: str | os.PathLike | None = None,
    map_format: str = "but",
) -> EnrollLists:
    """Build (not write) the enrollment lists of a data dir, from a seeded draw or an imported list."""
    if from_map is None:
        return choose_enrollments(tables, seed, data_dir)
    if map_format not in MAP_FORMATS:
        raise TsekitError(f"unknown map format {map_format!r}; choose from {', '.join(MAP_FORMATS)}")
    return MAP_FORMATS[map_format](tables, from_map)


def write_enroll_lists(data_dir: str | os.PathLike, tables: Tables, lists: EnrollLists) -> None:
    """Write spk2enroll, utt2enroll and enroll.scp (each atomically, enroll.scp last; unchanged ones are kept)."""
    data_dir = Path(data_dir)
    write_table_if_changed(data_dir / "spk2enroll", speaker_candidates(tables))
    write_table_if_changed(data_dir / "utt2enroll", lists.utt2enroll)
    write_table_if_changed(data_dir / "enroll.scp", lists.enroll)


# sets whose enrollments come with them (made with the set): a conversation row's fellow rows are its speaker's
# tracks of other recordings (mostly silence), and an absent-target row has no target to enroll from
OWN_ENROLLMENTS = (("utt2reco", "a conversation set"), ("utt2present", "an absent-target set"))


def own_enrollments(data_dir: Path, tables: Tables) -> str | None:
    """Where a set that brings its own enroll.scp says so (``OWN_ENROLLMENTS``), as
    "DATA/utt2reco: a conversation set", or None for a set whose enrollments are drawn from its rows."""
    return next((f"{data_dir / name}: {what}" for name, what in OWN_ENROLLMENTS if name in tables), None)


def read_rows(data_dir: str | os.PathLike) -> dict[str, dict[str, str]]:
    """The tables of a data dir that enrollment needs, checked to cover the same rows."""
    from tsekit.data.datadir import read_data_dir

    tables = read_data_dir(data_dir)
    own = own_enrollments(Path(data_dir), tables)
    if own:
        raise TsekitError(f"{own} brings its own enroll.scp; it is not drawn again"
                          + (" (--solo cuts one from each speaker's solo turns)" if "utt2reco" in tables else ""))
    for name in ("spk1.scp", "utt2spk") + (("utt2uniq",) if "utt2uniq" in tables else ()):
        if name not in tables:
            raise TsekitError(f"{Path(data_dir) / name}: file not found")
        missing = sorted_keys(set(tables["wav.scp"]) - set(tables[name]))
        if missing:
            raise TsekitError(f"{Path(data_dir) / name}: no line for {len(missing)} rows (e.g. {missing[0]})")
    return tables


def enroll_data_dir(
    data_dir: str | os.PathLike,
    seed: int = 0,
    from_map: str | os.PathLike | None = None,
    map_format: str = "but",
    posneg: bool = False,
    sir_range: tuple[float, float] = (-5.0, 5.0),
    interferers: int = 1,
    posneg_noise: str | os.PathLike | None = None,
    snr_range: tuple[float, float] = (0.0, 10.0),
    posneg_sources: str | os.PathLike | None = None,
) -> str:
    """Stage 2 on one data dir: enroll.scp, utt2enroll, spk2enroll (+ pos/neg clips); returns a summary.

    With ``posneg``: ``interferers`` speakers talk in each positive clip, at
    SIRs from ``sir_range``; ``posneg_noise`` (``"scp"``: the data dir's
    noise1.scp, else a folder of noise wavs) adds noise to both clips at SNRs
    from ``snr_range`` (see :mod:`tsekit.data.posneg`); ``posneg_sources``: the
    data dir whose clean targets the interferers are cut from (default: this one).
    A set that brings its own enroll.scp (a conversation or absent-target set)
    keeps it and only gets the pos/neg clips, from ``posneg_sources``, which it
    needs. Everything is checked before the first file is written, so an error
    leaves the data dir as it was.
    """
    from tsekit.data import posneg as posneg_module
    from tsekit.data.datadir import read_data_dir

    data_dir = Path(data_dir)
    tables = read_data_dir(data_dir)
    own = own_enrollments(data_dir, tables)
    if own:
        if not posneg or from_map is not None:
            raise TsekitError(f"{own} brings its own enroll.scp; it is not drawn again")
        if posneg_sources is None:
            raise TsekitError(f"{own} has no clean targets to cut pos/neg interferers from; give the "
                              "data dir it was built from (--posneg-sources)")
        if "enroll.scp" not in tables:
            raise TsekitError(f"{data_dir / 'enroll.scp'}: file not found (the set brings its own: {own})")
        lists = EnrollLists(tables["enroll.scp"], {}, [])
    else:
        tables = read_rows(data_dir)
        lists = make_enroll_lists(tables, data_dir, seed, from_map, map_format)
    sources = read_rows(posneg_sources) if posneg_sources is not None else None
    noise = None
    if posneg:
        if posneg_noise is not None:
            noise = posneg_module.noise_files(data_dir, posneg_noise)
        posneg_module.plan_posneg(  # fails early
            tables, lists.enroll, seed, sir_range, data_dir, interferers, noise, snr_range, sources
        )
    speakers = len(set(tables["utt2spk"].values()))
    if own:
        lines = [f"{data_dir}: {len(lists.enroll)} rows, {speakers} speakers; its own enroll.scp"]
    else:
        write_enroll_lists(data_dir, tables, lists)
        source = f"{map_format} list {from_map}" if from_map else f"seed {seed}"
        lines = [f"{data_dir}: {len(lists.enroll)} rows, {speakers} speakers; enrollments from {source} "
                 "-> enroll.scp, utt2enroll, spk2enroll"]
    lines += [f"note: {note}" for note in lists.notes]
    if posneg:
        lines.append(posneg_module.make_posneg(data_dir, tables, lists.enroll, seed, sir_range,
                                               interferers, noise, snr_range, sources))
    elif (data_dir / "enroll_posneg.tsv").is_file():
        with open(data_dir / "enroll_posneg.tsv", encoding="utf-8") as f:
            used = {fields[0]: fields[1] for fields in (line.rstrip("\n").split("\t") for line in f)}
        if any(used.get(utt) != path for utt, path in lists.enroll.items()):
            lines.append("note: enroll_pos.scp/enroll_neg.scp were built from other enrollments; "
                         "rerun with --posneg to rebuild them")
    return "\n".join(lines)
