"""Enrollments cut from the conversation itself: each speaker's own solo speech in the recording, found with its
RTTM (or tsekit's ``segments``), for recordings that come with a diarization and no other audio of the speakers.

How a speaker's enrollment is cut (:func:`plan_solo_cut`), in samples ``round(seconds * rate)``:

* **Solo stretches**: where the speaker has a turn and no other speaker of the recording has one within
  ``margin`` seconds (default 0.25 s, the collar diarization scoring forgives at turn boundaries: a diarizer's
  boundaries are that uncertain, and the first and last words of a turn often run into the neighbour's).
* **Pieces**: stretches shorter than SHORT_ENROLLMENT_SECONDS (0.5 s, the length below which an enrollment tells
  a system little about the voice: backchannels, turn fragments) are left out.
* **Choice**: the pieces longest first (the earlier of two equal ones first), each whole, until they hold
  ``seconds`` (default 5 s); the last one taken is cut to its first part, so the enrollment holds exactly
  ``seconds`` when the speaker has that much. One long monologue therefore gives one continuous clip, and a
  speaker who only speaks in short turns gets several of them. The pieces are joined in time order, end to end
  (no crossfade: a speaker encoder averages over frames, and a join spans one of them).
* **Too little**: a speaker whose pieces hold less than ``min_seconds`` (default 2 s) in all is refused with one
  line naming the RTTM file, the recording, the speaker, her longest solo stretch and her solo time in all.

Writing (:func:`enroll_from_solo` for a data dir, :func:`enroll_recording` for one wav and its RTTM) plans every
cut first and writes nothing when any speaker is refused; the clips go to a temporary folder renamed onto
``enroll_solo/`` when all are written, and ``enroll.scp`` (then ``utt2enroll``, what was cut) is written last.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsekit import TsekitError
from tsekit.data.audio import audio_info, is_ark, is_pipe, load_audio, write_audio
from tsekit.data.datadir import atomic_dir, read_data_dir, write_tables
from tsekit.data.enroll import SHORT_ENROLLMENT_SECONDS
from tsekit.data.rttm import Turn, check_turn_ends, format_rttm, read_turns
from tsekit.data.table import sorted_keys, write_table_if_changed

SOLO_MARGIN_SECONDS = 0.25
SOLO_SECONDS = 5.0
MIN_SOLO_SECONDS = 2.0
SOLO_FOLDER = "enroll_solo"


@dataclass(frozen=True)
class SoloOptions:
    """How much solo speech an enrollment takes and how far from other speakers (module docstring)."""

    seconds: float = SOLO_SECONDS
    min_seconds: float = MIN_SOLO_SECONDS
    margin: float = SOLO_MARGIN_SECONDS

    def check(self) -> None:
        if not self.seconds > 0:
            raise TsekitError(f"the enrollment length must be positive, got {self.seconds} s")
        if not 0 < self.min_seconds <= self.seconds:
            raise TsekitError(f"the least enrollment length must be in (0, {self.seconds:g}] s (the length asked "
                              f"for), got {self.min_seconds} s")
        if not self.margin >= 0:
            raise TsekitError(f"the margin from other speakers' turns must be >= 0, got {self.margin} s")


@dataclass(frozen=True)
class SoloCut:
    """Where one speaker's enrollment comes from: [start, end) sample spans of her recording, in time order."""

    recording: str
    speaker: str
    rate: int
    pieces: tuple[tuple[int, int], ...]

    def describe(self) -> str:
        """What was cut, for utt2enroll: ``<recording>:<start>-<end>[,<start>-<end>...]`` in seconds."""
        return f"{self.recording}:" + ",".join(f"{s / self.rate:.3f}-{e / self.rate:.3f}" for s, e in self.pieces)


def _union(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def solo_stretches(turns: Sequence[Turn], speaker: str, rate: int, length: int,
                   margin: float = SOLO_MARGIN_SECONDS) -> list[tuple[int, int]]:
    """[start, end) sample spans, in time order, where ``speaker`` has a turn and no other speaker has one within
    ``margin`` seconds, in a recording of ``length`` samples at ``rate``."""
    pad = round(margin * rate)
    own = _union([t.span(rate, length) for t in turns if t.speaker == speaker])
    others = _union([(max(0, s - pad), min(length, e + pad))
                     for s, e in (t.span(rate, length) for t in turns if t.speaker != speaker)])
    stretches = []
    k = 0  # others are sorted and disjoint: one sweep over both lists
    for start, end in own:
        while k < len(others) and others[k][1] <= start:
            k += 1
        j, cursor = k, start
        while j < len(others) and others[j][0] < end:
            if others[j][0] > cursor:
                stretches.append((cursor, others[j][0]))
            cursor = max(cursor, others[j][1])
            j += 1
        if cursor < end:
            stretches.append((cursor, end))
    return stretches


def plan_solo_cut(turns: Sequence[Turn], recording: str, speaker: str, rate: int, length: int, source: str,
                  options: SoloOptions = SoloOptions()) -> SoloCut:
    """The pieces of ``speaker``'s enrollment (module docstring); a TsekitError naming ``source`` (the RTTM or
    segments file), the recording and the speaker when her solo speech holds less than ``options.min_seconds``."""
    if not any(t.speaker == speaker for t in turns):
        raise TsekitError(f"{source}: speaker {speaker} has no turn in recording {recording}; cannot enroll her "
                          "from the recording")
    stretches = solo_stretches(turns, speaker, rate, length, options.margin)
    usable = [s for s in stretches if s[1] - s[0] >= round(SHORT_ENROLLMENT_SECONDS * rate)]
    held = sum(e - s for s, e in usable)
    if held < round(options.min_seconds * rate):
        longest = max((e - s for s, e in stretches), default=0) / rate
        alone = sum(e - s for s, e in stretches) / rate
        raise TsekitError(
            f"{source}: speaker {speaker} of recording {recording} never speaks alone long enough to enroll: "
            f"longest solo stretch {longest:.2f} s, {alone:.2f} s alone in all, {held / rate:.2f} s of it in "
            f"stretches of {SHORT_ENROLLMENT_SECONDS:g} s or more ({options.margin:g} s from other speakers' "
            f"turns); {options.min_seconds:g} s needed")
    want = round(options.seconds * rate)
    chosen: list[tuple[int, int]] = []
    for start, end in sorted(usable, key=lambda s: (s[0] - s[1], s[0])):  # longest first, then earliest
        if want <= 0:
            break
        chosen.append((start, min(end, start + want)))
        want -= chosen[-1][1] - start
    return SoloCut(recording, speaker, rate, tuple(sorted(chosen)))


def cut_audio(entry: str, cut: SoloCut, what: str) -> np.ndarray:
    """The samples of a cut, read span by span from the recording ``entry``: a plain file only there, an ark or
    pipe entry (which any read decodes whole) once for all the spans."""
    if is_pipe(entry) or is_ark(entry):
        whole = load_audio(entry, what)[0]
        return np.concatenate([whole[start:end] for start, end in cut.pieces])
    return np.concatenate([load_audio(entry, what, start, end - start)[0] for start, end in cut.pieces])


def plan_recordings(rows: Mapping[str, tuple[str, str]], audio: Mapping[str, str], turns_path: str,
                    turns: Mapping[str, list[Turn]], options: SoloOptions) -> dict[str, SoloCut]:
    """row -> its cut, for rows (row -> (recording, speaker)) of recordings ``audio`` (recording -> scp entry);
    every turn is checked to end within its recording first. Raises before anything is written."""
    options.check()
    headers = {}
    for reco in sorted_keys({reco for reco, _ in rows.values()}):
        headers[reco] = audio_info(audio[reco], f"recording {reco}")
        check_turn_ends(turns.get(reco, []), *headers[reco], turns_path, reco)
    return {utt: plan_solo_cut(turns.get(reco, []), reco, speaker, *headers[reco], turns_path, options)
            for utt, (reco, speaker) in sorted(rows.items(), key=lambda item: item[0].encode())}


def _write_clips(folder: Path, cuts: Mapping[str, SoloCut], audio: Mapping[str, str]) -> dict[str, str]:
    """Each row's clip as ``folder/<row>.wav``; row -> the path the clip will have under ``final`` names."""
    folder.mkdir(parents=True, exist_ok=True)
    for utt, cut in cuts.items():
        write_audio(folder / f"{utt}.wav", cut_audio(audio[cut.recording], cut, f"recording {cut.recording}"),
                    cut.rate)
    return {utt: f"{utt}.wav" for utt in cuts}


def enroll_from_solo(data_dir: str | os.PathLike, turns_file: str | os.PathLike | None = None,
                     speakers: Sequence[str] = (), options: SoloOptions = SoloOptions()) -> str:
    """Enroll the rows of a conversation data dir (``utt2reco``) from their speakers' solo speech in their own
    recording: clips ``DATA/enroll_solo/<row>.wav``, ``enroll.scp`` and ``utt2enroll`` (what was cut).

    ``turns_file``: the RTTM (or ``segments``) saying who speaks when; default ``DATA/rttm``, else
    ``DATA/segments``. ``speakers``: only the rows of these speakers (the others keep their enroll.scp line).
    Returns a summary; writes nothing when any speaker cannot be enrolled.
    """
    data_dir = Path(data_dir)
    tables = read_data_dir(data_dir)
    for name in ("utt2reco", "utt2spk"):
        if name not in tables:
            raise TsekitError(f"{data_dir / name}: file not found (enrolling from solo speech needs the rows' "
                              "recordings and speakers)")
    if turns_file is None:
        found = [data_dir / name for name in ("rttm", "segments") if (data_dir / name).is_file()]
        if not found:
            raise TsekitError(f"{data_dir}: no rttm or segments file; give the RTTM")
        turns_file = found[0]
    audio = {tables["utt2reco"][utt]: entry for utt, entry in tables["wav.scp"].items() if utt in tables["utt2reco"]}
    turns = read_turns(turns_file, set(audio), f"{data_dir}/utt2reco")
    known = set(tables["utt2spk"].values())
    for speaker in speakers:
        if speaker not in known:
            raise TsekitError(f"{data_dir}/utt2spk: no row of speaker {speaker!r}")
    rows = {utt: (tables["utt2reco"][utt], tables["utt2spk"][utt]) for utt in tables["wav.scp"]
            if not speakers or tables["utt2spk"][utt] in speakers}
    cuts = plan_recordings(rows, audio, str(turns_file), turns, options)
    clips = data_dir / SOLO_FOLDER
    with atomic_dir(clips) as tmp:
        names = _write_clips(tmp, cuts, audio)
        if clips.is_dir():  # rows not enrolled this time keep their clips
            for old in clips.glob("*.wav"):
                if old.stem not in cuts:
                    os.link(old, tmp / old.name)
    enroll = dict(tables.get("enroll.scp", {}))
    utt2enroll = dict(tables.get("utt2enroll", {}))
    for utt, cut in cuts.items():
        enroll[utt] = str((clips / names[utt]).absolute())
        utt2enroll[utt] = cut.describe()
    write_table_if_changed(data_dir / "enroll.scp", enroll)
    write_table_if_changed(data_dir / "utt2enroll", utt2enroll)
    return _summary(data_dir, turns_file, cuts)


def enroll_recording(wav: str | os.PathLike, turns_file: str | os.PathLike, out: str | os.PathLike,
                     recording: str | None = None, speakers: Sequence[str] = (),
                     options: SoloOptions = SoloOptions()) -> str:
    """A data dir ``out`` for one recording ``wav`` and its RTTM (or ``segments``): a row ``<spk>-<rec>`` per
    speaker of the recording (or of ``speakers``), each enrolled from her solo speech (``enroll_solo/``,
    ``enroll.scp``, ``utt2enroll``), with ``wav.scp``, ``utt2spk``, ``spk2utt``, ``utt2reco``, ``utt2dur`` and
    the recording's ``rttm``: ready for ``tsekit infer``. ``recording``: its id in the RTTM (default: the wav's
    file name without suffix). Written atomically: ``out`` appears whole or not at all."""
    wav, out = Path(wav).absolute(), Path(out).absolute()
    reco = recording or wav.stem
    turns = read_turns(turns_file, {reco}, f"recording {reco} ({wav})")
    if reco not in turns:
        raise TsekitError(f"{turns_file}: no turn of recording {reco} ({wav}); give --recording")
    present = sorted_keys({t.speaker for t in turns[reco]})
    for speaker in speakers:
        if speaker not in present:
            raise TsekitError(f"{turns_file}: speaker {speaker!r} has no turn in recording {reco} "
                              f"(speakers: {', '.join(present)})")
    rows = {f"{spk}-{reco}": (reco, spk) for spk in (speakers or present)}
    audio = {reco: str(wav)}
    cuts = plan_recordings(rows, audio, str(turns_file), turns, options)
    rate, frames = audio_info(str(wav))
    tables: dict[str, dict[str, str]] = {k: {} for k in ("wav.scp", "utt2spk", "utt2reco", "utt2dur", "enroll.scp",
                                                         "utt2enroll")}  # fmt: skip
    with atomic_dir(out) as tmp:
        names = _write_clips(tmp / SOLO_FOLDER, cuts, audio)
        for utt, cut in cuts.items():
            tables["wav.scp"][utt] = str(wav)
            tables["utt2spk"][utt] = cut.speaker
            tables["utt2reco"][utt] = reco
            tables["utt2dur"][utt] = f"{frames / rate:.3f}"
            tables["enroll.scp"][utt] = str(out / SOLO_FOLDER / names[utt])
            tables["utt2enroll"][utt] = cut.describe()
        write_tables(tmp, tables)
        (tmp / "rttm").write_text(format_rttm({reco: turns[reco]}), encoding="utf-8")
    return _summary(out, turns_file, cuts)


def _summary(data_dir: Path, turns_file: str | os.PathLike, cuts: Mapping[str, SoloCut]) -> str:
    lines = [f"{data_dir}: {len(cuts)} rows enrolled from their speakers' solo speech ({turns_file}) -> "
             f"{SOLO_FOLDER}/, enroll.scp, utt2enroll"]
    for utt, cut in cuts.items():
        seconds = sum(e - s for s, e in cut.pieces) / cut.rate
        lines.append(f"  {utt}: {seconds:.2f} s from {len(cut.pieces)} stretch{'es' if len(cut.pieces) > 1 else ''}")
    return "\n".join(lines)
