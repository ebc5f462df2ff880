"""``tsekit data validate``: Kaldi's validate_data_dir checks plus the TSE rules.

Kaldi's checks: required files present, every table sorted and free of
duplicate keys, utt2spk and spk2utt consistent, utt2spk sorted by speaker too
(speaker ids are prefixes of utterance ids), per-utterance files cover exactly
the utterances of wav.scp (``text`` may leave rows out: targets cut short have none), text/utt2dur well formed.
TSE rules: every row has a mixture, a target and (once stage 2 ran) an
enrollment; the enrollment is not the target recording itself; all audio of a
data dir shares one sample rate; target and noise are as long as the mixture;
utt2dur agrees with the mixture length.
Absent-target rows (utt2present 0) have no target: spk1.scp holds exactly the other rows.
Conversation sets: the rows of one recording (utt2reco) share its wav.scp audio; every rttm and segments line
names a recording of utt2reco and (audio checked) ends within it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tsekit import TsekitError
from tsekit.data.audio import audio_info
from tsekit.data.datadir import (
    PARTIAL_FILES,
    PER_UTT_FILES,
    RECORDING_FILES,
    REQUIRED_FILES,
    SCP_FILES,
    TARGET_FILES,
    present_rows,
    utt2spk_sorted_by_speaker,
)
from tsekit.data.rttm import check_turn_ends, read_turns
from tsekit.data.table import c_sort_key, invert_utt2spk, read_lines, read_list_table, read_table

DURATION_TOLERANCE = 0.01  # seconds; utt2dur is written with 3 decimals


def _check_sorted(path: Path, problems: list[str]) -> None:
    keys = [line.split(maxsplit=1)[0] for line in read_lines(path) if line.strip()]
    if any(c_sort_key(a) >= c_sort_key(b) for a, b in zip(keys, keys[1:], strict=False)):
        problems.append(f"{path}: not sorted (LC_ALL=C sort) or has duplicate keys")


def _examples(keys: set[str]) -> str:
    shown = sorted(keys)[:3]
    return ", ".join(shown) + (" ..." if len(keys) > 3 else "")


def validate_data_dir(path: str | os.PathLike, check_audio: bool = True, require_enroll: bool = False) -> list[str]:
    """Return the list of problems found in data dir ``path`` (empty when it is valid)."""
    path = Path(path)
    if not path.is_dir():
        return [f"{path}: data directory not found"]
    problems: list[str] = []
    required = REQUIRED_FILES + (("enroll.scp",) if require_enroll else ())
    for name in required:
        if not (path / name).is_file():
            problems.append(f"{path}/{name}: missing")
    tables: dict[str, dict[str, str]] = {}
    for name in PER_UTT_FILES + ("spk2utt", "spk2enroll"):
        if (path / name).is_file():
            try:
                tables[name] = read_table(path / name)
            except TsekitError as err:
                problems.append(str(err))
                continue
            _check_sorted(path / name, problems)
            if not tables[name]:
                problems.append(f"{path}/{name}: empty")
    if "wav.scp" not in tables:
        return problems
    utts, present = set(tables["wav.scp"]), present_rows(tables)
    if present and not (path / "spk1.scp").is_file():
        problems.append(f"{path}/spk1.scp: missing")
    bad_presence = sorted(u for u, v in tables.get("utt2present", {}).items() if v not in ("0", "1"))
    if bad_presence:
        value = tables["utt2present"][bad_presence[0]]
        problems.append(f"{path}/utt2present: {bad_presence[0]}: {value!r} is not 0 or 1")
    for name in PER_UTT_FILES:
        expected = present if name in TARGET_FILES else utts
        if name in tables and set(tables[name]) != expected:
            missing, extra = expected - set(tables[name]), set(tables[name]) - expected
            if missing and name not in PARTIAL_FILES:
                problems.append(f"{path}/{name}: {len(missing)} utterances of wav.scp missing ({_examples(missing)})")
            if extra and name in TARGET_FILES:
                problems.append(f"{path}/{name}: {len(extra)} rows whose target is absent (utt2present 0) or not "
                                f"in wav.scp ({_examples(extra)})")
            elif extra:
                problems.append(f"{path}/{name}: {len(extra)} utterances not in wav.scp ({_examples(extra)})")
    problems += _check_speakers(path, tables)
    problems += _check_recordings(path, tables, check_audio)
    problems += _check_values(path, tables)
    if check_audio:
        problems += _check_audio(path, tables)
    return problems


def _check_speakers(path: Path, tables: dict[str, dict[str, str]]) -> list[str]:
    problems = []
    utt2spk = tables.get("utt2spk")
    if utt2spk is None:
        return problems
    if "spk2utt" in tables:
        spk2utt = {spk: value.split() for spk, value in tables["spk2utt"].items()}
        if spk2utt != invert_utt2spk(utt2spk):
            problems.append(f"{path}/spk2utt: does not match utt2spk (regenerate it from utt2spk)")
    if not utt2spk_sorted_by_speaker(utt2spk):
        problems.append(f"{path}/utt2spk: not sorted by speaker too; make speaker ids prefixes of utterance ids")
    if "spk2enroll" in tables:
        for spk, rows in read_list_table(path / "spk2enroll").items():
            unknown = [r for r in rows if r not in utt2spk]
            if unknown:
                problems.append(f"{path}/spk2enroll: speaker {spk} lists rows not in wav.scp ({unknown[0]})")
            elif any(utt2spk[r] != spk for r in rows):
                problems.append(f"{path}/spk2enroll: speaker {spk} lists rows of another speaker")
    return problems


def _check_recordings(path: Path, tables: dict[str, dict[str, str]], check_audio: bool) -> list[str]:
    """utt2reco against wav.scp, and the rttm and segments files against the recordings: the first bad line of
    each (a recording not in utt2reco, a turn past its recording's end). A turn's speaker need not have a row:
    a set may extract only some of a recording's speakers, and the others' turns are its interferers'."""
    files = [name for name in RECORDING_FILES if (path / name).is_file()]
    utt2reco = tables.get("utt2reco")
    if utt2reco is None:
        return [f"{path}/{name}: needs utt2reco (which row belongs to which recording)" for name in files]
    problems = []
    audio: dict[str, str] = {}
    for utt, reco in sorted(utt2reco.items()):
        if audio.setdefault(reco, tables["wav.scp"].get(utt, "")) != tables["wav.scp"].get(utt, ""):
            problems.append(f"{path}/utt2reco: rows of recording {reco} name different audio in wav.scp ({utt})")
            return problems
    for name in files:
        source = str(path / name)
        try:
            turns = read_turns(source, set(audio), f"{path}/utt2reco", name)
            for reco, recording_turns in turns.items():
                if check_audio:  # where the recording ends: its header (unreadable audio is _check_audio's problem)
                    try:
                        rate, frames = audio_info(audio[reco])
                    except TsekitError:
                        continue
                    check_turn_ends(recording_turns, rate, frames, source, reco)
        except TsekitError as err:
            problems.append(str(err))
    return problems


def _check_values(path: Path, tables: dict[str, dict[str, str]]) -> list[str]:
    problems = []
    for utt, value in tables.get("utt2dur", {}).items():
        try:
            if float(value) <= 0:
                raise ValueError
        except ValueError:
            problems.append(f"{path}/utt2dur: {utt}: bad duration {value!r}")
            break
    enroll, target = tables.get("enroll.scp", {}), tables.get("spk1.scp", {})
    same = [u for u in enroll if target.get(u) == enroll[u]]
    if same:
        problems.append(f"{path}/enroll.scp: {len(same)} rows use the target itself as enrollment ({same[0]})")
    return problems


def _check_audio(path: Path, tables: dict[str, dict[str, str]]) -> list[str]:
    from tqdm import tqdm

    problems: list[str] = []
    rates: dict[int, str] = {}
    info: dict[str, tuple[int, int]] = {}
    scps = [name for name in SCP_FILES if name in tables]
    for utt in tqdm(sorted(tables["wav.scp"]), desc=f"checking audio of {path}", unit="row", disable=None, leave=False):
        lengths = {}
        for name in scps:
            entry = tables[name].get(utt)
            if entry is None:
                continue
            try:
                if entry not in info:
                    info[entry] = audio_info(entry, f"{path}/{name}: {utt}")
            except TsekitError as err:
                problems.append(str(err))
                continue
            rate, frames = info[entry]
            rates.setdefault(rate, f"{path}/{name}: {utt}")
            if frames == 0:
                problems.append(f"{path}/{name}: {utt}: empty audio {entry}")
            lengths[name] = frames
        for name in ("spk1.scp", "noise1.scp"):
            if name in lengths and "wav.scp" in lengths and lengths[name] != lengths["wav.scp"]:
                problems.append(
                    f"{path}/{name}: {utt}: {lengths[name]} samples, mixture has {lengths['wav.scp']}"
                )
        if "utt2dur" in tables and "wav.scp" in lengths:
            rate = info[tables["wav.scp"][utt]][0]
            try:
                duration = float(tables["utt2dur"][utt])
            except (KeyError, ValueError):
                continue
            if abs(duration - lengths["wav.scp"] / rate) > DURATION_TOLERANCE:
                problems.append(f"{path}/utt2dur: {utt}: {duration} s, mixture lasts {lengths['wav.scp'] / rate:.3f} s")
    if len(rates) > 1:
        where = "; ".join(f"{rate} Hz at {first}" for rate, first in sorted(rates.items()))
        problems.append(f"{path}: sample rates differ: {where}")
    return problems
