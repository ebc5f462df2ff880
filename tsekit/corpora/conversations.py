"""Test sets of recordings that are not short full overlaps: conversations, and mixtures without the target.

**Conversations** (:func:`make_conversations`): each recording is 2-4 speakers taking turns, built from
LibriSpeech-layout utterances (``<spk>/<chapter>/<utt>.flac`` with ``<spk>-<chapter>.trans.txt``; the mini
corpus's test-clean, or LibriSpeech's own). How a recording is made:

* Speakers: a seeded draw of ``speakers`` (a range) of the pool's speakers; each keeps one of its utterances
  aside as its enrollment clip, never played in the recording, and speaks its other utterances in a seeded
  order, each at most once per recording (a recording may reuse what another one played).
* Turns: the next speaker is drawn among the others (a speaker whose utterances ran out leaves the
  conversation). Each utterance is trimmed to its speech (first to last sample within 40 dB of its peak), so
  a turn in the RTTM is exactly where its speaker's track is not silent.
* Gaps: between turns that do not overlap, a gamma-distributed pause (shape 2, mean ``mean_gap``, 0.5 s by
  default): mostly a few hundred milliseconds, now and then seconds, and never zero, where an exponential
  pause (shape 1) would make back-to-back turns the most likely gap.
* Overlap: ``overlap`` is the share of speech time (time anyone speaks) in which two people speak. A turn
  overlaps the tail of the previous one with probability ``min(1, 0.3 + 1.5 * overlap)`` (0 when ``overlap``
  is 0), by as much as keeps the running ratio on target, at most 3/4 of the shorter of the two turns; never
  three speakers at once. The measured ratio (from the RTTM) ends within a few points of the target.
* Levels: each speaker has its own level, drawn in the mini corpus's speech range (gated RMS -33..-25 dB, see
  tsekit.corpora.mini_librimix) and every utterance of it is scaled to it; noise (optional, recordings from a
  folder joined with 50 ms crossfades, in a seeded order) is drawn in -38..-30 dB. When the mixture would peak
  above 0.9 everything is scaled down together.
* The mixture is the sum of the speakers' tracks and the noise *exactly*: every part is rounded to 16 bits
  first and the mixture is the integer sum.

A recording lasts about ``minutes`` (it ends with the turn that passes that length, plus 0.5 s, as it starts).

**Absent-target mixtures** (:func:`make_absent_set`): every mixture of a prepared test set once more, enrolled
with a speaker of that set who is not in it (utt2present 0, no spk1.scp).

The data-dir layout (rows, utt2reco, rttm, segments, the audio under ``OUT/audio/``) is in docs/data.md. Both
sets are deterministic for a seed (the same bytes) and written atomically: a killed run leaves no set, and
rerunning makes it whole (mixing a 10-minute recording takes about 10 s on 2 cores; the slow part, the mini
corpus's extra speech, resumes utterance by utterance).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from tsekit import TsekitError
from tsekit.corpora.librimix import librispeech_speaker, read_librispeech_transcripts
from tsekit.corpora.mini_librimix import MAX_AMP, NOISE_LOUDNESS, SPEECH_LOUDNESS, loudness_gain
from tsekit.data.audio import entry_path
from tsekit.data.datadir import atomic_dir, check_tables, read_data_dir, write_data_dir, write_tables
from tsekit.data.enroll import row_rng
from tsekit.data.rttm import Turn, format_rttm, format_segments
from tsekit.data.table import invert_utt2spk, sorted_keys
from tsekit.jobs import atomic_open

TRIM_DB = -40.0  # a turn runs from the first to the last sample within this of the utterance's peak
GAP_SHAPE = 2.0
MAX_OVERLAP_SHARE = 0.75  # of the shorter of two overlapping turns
MIN_OVERLAP_SECONDS = 0.1  # a shorter overlap is not made (a pause is)
EDGE_SECONDS = 0.5  # before the first turn and after the last
CROSSFADE_SECONDS = 0.05  # between noise recordings
FULL_SCALE = 32768


@dataclass(frozen=True)
class SpeechUtterance:
    """One utterance a conversation can play: its id, speaker, flac and words."""

    id: str
    speaker: str
    path: Path
    text: str


@dataclass(frozen=True)
class ConversationOptions:
    """What a conversation set is made of; see the module docstring for how each is used."""

    recordings: int = 3
    minutes: float = 1.0
    speakers: tuple[int, int] = (2, 4)  # fewest, most per recording
    overlap: float = 0.2  # share of speech time with two speakers
    mean_gap: float = 0.5  # seconds
    sample_rate: int = 16000

    def check(self) -> None:
        low, high = self.speakers
        if self.recordings < 1:
            raise TsekitError(f"the number of recordings must be positive, got {self.recordings}")
        if not self.minutes > 0:
            raise TsekitError(f"minutes must be positive, got {self.minutes}")
        if not 2 <= low <= high:
            raise TsekitError(f"speakers per recording must be a range from 2 up (e.g. 2-4), got {low}-{high}")
        if not 0 <= self.overlap <= 0.5:
            raise TsekitError(f"overlap must be a share of speech time in 0..0.5, got {self.overlap}")
        if not self.mean_gap > 0:
            raise TsekitError(f"the mean gap must be positive, got {self.mean_gap}")

    def speech_seconds_per_speaker(self) -> float:
        """How much speech one speaker may need in one recording (the fewest speakers, half as much again)."""
        return 1.5 * self.minutes * 60 * (1 + self.overlap) / self.speakers[0]


def read_speech(folders: Sequence[str | os.PathLike]) -> dict[str, list[SpeechUtterance]]:
    """Speaker -> utterances (C order) of LibriSpeech-layout folders (``*.trans.txt`` with the flacs beside)."""
    pool: dict[str, list[SpeechUtterance]] = {}
    seen: dict[str, Path] = {}
    for folder in folders:
        for utt, transcript in read_librispeech_transcripts(folder).items():
            if utt in seen:
                raise TsekitError(f"{transcript.audio}: utterance {utt} is also in {seen[utt]}")
            if not transcript.audio.is_file():
                raise TsekitError(f"{transcript.audio}: file not found (its transcript is in {folder})")
            seen[utt] = transcript.audio
            speaker = librispeech_speaker(utt)
            pool.setdefault(speaker, []).append(SpeechUtterance(utt, speaker, transcript.audio, transcript.text))
    return {spk: sorted(utts, key=lambda u: u.id.encode()) for spk, utts in sorted(pool.items())}


def _load(path: Path, rate: int) -> np.ndarray:
    from tsekit.corpora.tts import resample

    samples, file_rate = sf.read(path, dtype="float32", always_2d=True)
    return resample(samples[:, 0].copy(), file_rate, rate)


def _trim(samples: np.ndarray, path: Path) -> np.ndarray:
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    if peak == 0:
        raise TsekitError(f"{path}: silent utterance")
    loud = np.flatnonzero(np.abs(samples) >= peak * 10 ** (TRIM_DB / 20))
    return samples[loud[0] : loud[-1] + 1]


def _to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * FULL_SCALE), -FULL_SCALE, FULL_SCALE - 1).astype(np.int16)


def _write_int16(path: Path, samples: np.ndarray, rate: int) -> None:
    """Write int16 samples as they are (a float write would rescale them and break the exact sums)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        sf.write(f, samples, rate, subtype="PCM_16", format="WAV")


@dataclass
class _Placed:
    speaker: str
    utt: SpeechUtterance
    start: int  # sample
    samples: np.ndarray  # trimmed, at the speaker's level

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


def _overlap_probability(overlap: float) -> float:
    # enough overlapping turns that each needs about a third of its turn at the most ratio
    return 0.0 if overlap == 0 else min(1.0, 0.3 + 1.5 * overlap)


def plan_turns(
    rng: np.random.Generator,
    queues: dict[str, list[SpeechUtterance]],
    levels: Mapping[str, float],
    options: ConversationOptions,
    name: str,
) -> list[_Placed]:
    """Who says what when, in samples from the recording's start (see the module docstring)."""
    rate = options.sample_rate
    length = options.minutes * 60 * rate
    edge = int(EDGE_SECONDS * rate)
    placed: list[_Placed] = []
    horizon = edge  # where the latest turn ends
    speech = overlapped = 0  # samples with anyone speaking, with two speaking
    while horizon < length - edge:
        last = placed[-1] if placed else None
        others = [s for s in queues if queues[s] and (last is None or s != last.speaker)]
        if not others and not any(queues.values()):
            raise TsekitError(
                f"{name}: the speakers' speech ran out after {horizon / rate:.0f} s of {length / rate:.0f} s; "
                "give more speech or fewer minutes"
            )
        speaker = others[int(rng.integers(len(others)))] if others else last.speaker
        utt = queues[speaker].pop(0)
        audio = _trim(_load(utt.path, rate), utt.path)
        audio = audio * np.float32(loudness_gain(audio, rate, levels[speaker]))
        duration = len(audio)
        amount = 0
        if last is not None and speaker != last.speaker and rng.random() < _overlap_probability(options.overlap):
            wanted = (options.overlap * (speech + duration) - overlapped) / (1 + options.overlap)
            # only the last turn may still be talking where this one starts: never three at once
            others_end = max((p.end for p in placed[:-1]), default=0)
            room = min(MAX_OVERLAP_SHARE * min(duration, len(last.samples)), horizon - others_end)
            amount = int(min(wanted, room))
            if amount < MIN_OVERLAP_SECONDS * rate:
                amount = 0
        if amount:
            start = horizon - amount
        else:
            start = horizon + int(rng.gamma(GAP_SHAPE, options.mean_gap / GAP_SHAPE) * rate)
        placed.append(_Placed(speaker, utt, start, audio))
        speech += duration - amount
        overlapped += amount
        horizon = start + duration
    return placed


def _noise_bed(rng: np.random.Generator, files: Sequence[Path], length: int, rate: int) -> np.ndarray:
    """Noise recordings in a seeded order (cycling), joined with raised-cosine crossfades, cut to ``length``."""
    fade = int(CROSSFADE_SECONDS * rate)
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))).astype(np.float32)
    out = np.zeros(0, dtype=np.float32)
    order: list[int] = []
    while len(out) < length:
        if not order:
            order = list(rng.permutation(len(files)))
        piece = _load(files[order.pop(0)], rate)
        if len(out) >= fade and len(piece) > 2 * fade:
            out[-fade:] = out[-fade:] * ramp[::-1] + piece[:fade] * ramp
            piece = piece[fade:]
        out = np.concatenate([out, piece])
    return out[:length]


def _noise_files(folder: Path) -> list[Path]:
    files = sorted(folder.rglob("*.wav"), key=lambda p: str(p).encode())
    if not files:
        raise TsekitError(f"{folder}: no *.wav noise recordings")
    return files


def _conversation(
    index: int,
    pool: Mapping[str, list[SpeechUtterance]],
    options: ConversationOptions,
    noise_files: Sequence[Path] | None,
    seed: int,
    audio_dir: Path,
    final_dir: Path,
) -> tuple[dict[str, dict[str, str]], list[Turn]]:
    """Make recording ``index``: its audio under ``audio_dir`` (named as under ``final_dir``), its rows, its turns."""
    rate = options.sample_rate
    rng = np.random.default_rng([seed, 30, index])
    name = f"conv{index + 1:04d}"
    usable = [s for s, utts in pool.items() if len(utts) >= 2]  # an enrollment and at least one turn
    low, high = options.speakers
    if len(usable) < low:
        raise TsekitError(f"{len(usable)} speakers have two utterances or more; a conversation needs {low}")
    count = int(rng.integers(low, min(high, len(usable)) + 1))
    speakers = sorted(rng.choice(usable, size=count, replace=False).tolist(), key=str.encode)
    queues, enrollments, levels = {}, {}, {}
    for speaker in speakers:
        order = [pool[speaker][k] for k in rng.permutation(len(pool[speaker]))]
        enrollments[speaker], queues[speaker] = order[0], order[1:]
        levels[speaker] = float(rng.uniform(*SPEECH_LOUDNESS))
    placed = plan_turns(rng, queues, levels, options, name)
    length = placed[-1].end + int(EDGE_SECONDS * rate)
    speaking = sorted({p.speaker for p in placed}, key=str.encode)  # a speaker who got no turn is not in it
    tracks = {s: np.zeros(length, dtype=np.float32) for s in speaking}
    for p in placed:
        tracks[p.speaker][p.start : p.end] = p.samples
    parts = [tracks[s] for s in speaking]
    noise = None
    if noise_files is not None:
        noise = _noise_bed(rng, noise_files, length, rate)
        noise *= np.float32(loudness_gain(noise, rate, rng.uniform(*NOISE_LOUDNESS)))
        parts.append(noise)
    peak = float(np.max(np.abs(np.sum(parts, axis=0))))
    scale = min(1.0, MAX_AMP / peak) if peak > 0 else 1.0
    quantized = [_to_int16(part * np.float32(scale)) for part in parts]
    mixture = np.sum(quantized, axis=0, dtype=np.int32)
    if np.max(np.abs(mixture)) >= FULL_SCALE:  # cannot happen below MAX_AMP; a sum must never wrap
        raise TsekitError(f"{name}: mixture clips")

    def audio(file: str) -> str:
        return str(final_dir / name / file)

    _write_int16(audio_dir / name / "mix.wav", mixture.astype(np.int16), rate)
    tables: dict[str, dict[str, str]] = {k: {} for k in ("wav.scp", "spk1.scp", "enroll.scp", "utt2spk",
                                                         "utt2reco", "utt2dur", "text")}  # fmt: skip
    if noise is not None:
        _write_int16(audio_dir / name / "noise.wav", quantized[-1], rate)
        tables["noise1.scp"] = {}
    for speaker, track in zip(speaking, quantized[: len(speaking)], strict=True):
        utt = f"{speaker}-{name}"  # speaker first: utt2spk sorted by utterance is sorted by speaker (Kaldi's rule)
        _write_int16(audio_dir / name / f"{speaker}.wav", track, rate)
        enrollment = _load(enrollments[speaker].path, rate)
        enrollment *= np.float32(scale * loudness_gain(enrollment, rate, levels[speaker]))
        _write_int16(audio_dir / name / f"enroll-{speaker}.wav", _to_int16(enrollment), rate)
        tables["wav.scp"][utt] = audio("mix.wav")
        tables["spk1.scp"][utt] = audio(f"{speaker}.wav")
        tables["enroll.scp"][utt] = audio(f"enroll-{speaker}.wav")
        tables["utt2spk"][utt] = speaker
        tables["utt2reco"][utt] = name
        tables["utt2dur"][utt] = f"{length / rate:.3f}"
        tables["text"][utt] = " ".join(p.utt.text for p in placed if p.speaker == speaker)
        if noise is not None:
            tables["noise1.scp"][utt] = audio("noise.wav")
    turns = [Turn(p.speaker, p.start / rate, p.end / rate) for p in placed]
    return tables, turns


def measured_overlap(turns: Sequence[Turn]) -> float:
    """The share of speech time (anyone speaking) in which two or more speak, from turns of one recording."""
    edges = sorted([(t.onset, 1) for t in turns] + [(t.end, -1) for t in turns])
    speech = overlap = 0.0
    active, previous = 0, 0.0
    for time, step in edges:
        if active >= 1:
            speech += time - previous
        if active >= 2:
            overlap += time - previous
        active += step
        previous = time
    return overlap / speech if speech else 0.0


def make_conversations(
    pool: Mapping[str, list[SpeechUtterance]],
    out: str | os.PathLike,
    options: ConversationOptions = ConversationOptions(),
    noise: str | os.PathLike | None = None,
    seed: int = 0,
) -> str:
    """Write the conversation set ``out`` (tables, rttm, segments and its audio under ``out/audio/``).

    ``pool``: speaker -> utterances (:func:`read_speech`); ``noise``: a folder of noise wavs, or None for
    clean recordings. Returns a summary (recordings, speakers, minutes, measured overlap).
    """
    options.check()
    out = Path(out).absolute()
    noise_files = _noise_files(Path(noise)) if noise is not None else None
    tables: dict[str, dict[str, str]] = {}
    turns: dict[str, list[Turn]] = {}
    lines = [f"{'recording':<10} {'speakers':>8} {'minutes':>8} {'overlap':>8}"]
    with atomic_dir(out) as tmp:
        for index in range(options.recordings):
            rows, recording_turns = _conversation(index, pool, options, noise_files, seed, tmp / "audio",
                                                  out / "audio")  # fmt: skip
            for table_name, table in rows.items():
                tables.setdefault(table_name, {}).update(table)
            name = next(iter(rows["utt2reco"].values()))
            turns[name] = recording_turns
            minutes = float(next(iter(rows["utt2dur"].values()))) / 60
            ratio = measured_overlap(recording_turns)
            lines.append(f"{name:<10} {len(rows['wav.scp']):>8} {minutes:>8.2f} {ratio:>8.1%}")
        check_tables(out, tables)
        write_tables(tmp, tables)
        for file_name, text in (("rttm", format_rttm(turns)), ("segments", format_segments(turns))):
            with atomic_open(tmp / file_name) as f:
                f.write(text)
    lines.append(f"written to {out}")
    return "\n".join(lines)


def make_absent_set(data: str | os.PathLike, out: str | os.PathLike, seed: int = 0) -> str:
    """Every mixture of data dir ``data`` once, enrolled with a speaker of ``data`` who is not in it.

    The speakers of a mixture are those of its rows (rows sharing its wav.scp audio); the enrollment is the
    spk1.scp target of a row of the drawn speaker, drawn per mixture from (seed, mixture). Rows are
    ``<absent speaker>-<mixture file name>-absent`` with utt2present 0 and no spk1.scp.
    """
    tables = read_data_dir(data)
    for name in ("spk1.scp", "utt2spk"):
        if name not in tables:
            raise TsekitError(f"{data}/{name}: file not found (the absent set needs the targets and speakers)")
    if "utt2present" in tables:
        raise TsekitError(f"{data}/utt2present: already an absent-target set; give the set it was made from")
    mixtures: dict[str, list[str]] = {}
    for utt in sorted_keys(tables["wav.scp"]):
        mixtures.setdefault(tables["wav.scp"][utt], []).append(utt)
    rows_of = invert_utt2spk(tables["utt2spk"])
    absent: dict[str, dict[str, str]] = {k: {} for k in ("wav.scp", "enroll.scp", "utt2spk", "utt2present")}
    copied = [name for name in ("utt2dur", "noise1.scp") if name in tables]
    for name in copied:
        absent[name] = {}
    for entry, rows in mixtures.items():
        path = entry_path(entry)
        stem = path.stem if path is not None else rows[0]
        present = {tables["utt2spk"][u] for u in rows}
        candidates = [s for s in rows_of if s not in present]
        if not candidates:
            raise TsekitError(f"{data}: every speaker of the set is in mixture {entry}; no one can be absent")
        rng = row_rng(seed, "absent", stem)
        speaker = candidates[int(rng.integers(len(candidates)))]
        enroll_row = rows_of[speaker][int(rng.integers(len(rows_of[speaker])))]
        utt = f"{speaker}-{stem}-absent"
        if utt in absent["wav.scp"]:
            raise TsekitError(f"{data}/wav.scp: two mixtures are named {stem}; rows of the absent set would clash")
        absent["wav.scp"][utt] = entry
        absent["enroll.scp"][utt] = tables["spk1.scp"][enroll_row]
        absent["utt2spk"][utt] = speaker
        absent["utt2present"][utt] = "0"
        for name in copied:
            absent[name][utt] = tables[name][rows[0]]
    write_data_dir(out, absent)
    speakers = len(set(absent["utt2spk"].values()))
    return f"{out}: {len(mixtures)} mixtures, each enrolled with one of {speakers} speakers not in it"


def mini_conversation_pool(
    corpus: str | os.PathLike, options: ConversationOptions, jobs: int | None = None
) -> dict[str, list[SpeechUtterance]]:
    """The mini corpus's test speakers and utterances, topped up by synthesis to what ``options`` needs.

    The corpus's test-clean utterances come first; a speaker with less speech than one recording may take
    (:meth:`ConversationOptions.speech_seconds_per_speaker`) gets more sentences synthesized with its voice
    (tsekit.corpora.mini_librimix.extra_utterances), the same ones whatever was asked before.
    """
    from tsekit.corpora.mini_librimix import extra_utterances
    from tsekit.data.audio import audio_info

    corpus = Path(corpus).absolute()
    pool = read_speech([corpus / "LibriSpeech" / "test-clean"])
    seconds = {}
    for speaker, utts in pool.items():
        headers = [audio_info(str(u.path)) for u in utts]
        seconds[speaker] = sum(frames / rate for rate, frames in headers)
    extra = extra_utterances(corpus, "test", seconds, options.speech_seconds_per_speaker(), jobs)
    for speaker, utts in extra.items():
        pool[speaker] = pool[speaker] + [SpeechUtterance(utt, speaker, path, text) for utt, path, text in utts]
    return pool
