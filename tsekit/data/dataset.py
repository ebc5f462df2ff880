"""The torch Dataset of a Kaldi data dir: one item per row (mixture x target).

An item is a dict: ``utt`` (str), ``mixture`` (T,), ``length`` (valid samples
of ``mixture``; the rest is zero padding), and what the model ``needs``:
``target`` (T,), ``enroll`` (Te,), ``speaker`` (int64 scalar), ``enroll_pos``,
``enroll_neg``, ``enroll_clean`` (clips), ``mixture_tokens``, ``target_tokens``,
``enroll_tokens`` (codec tokens, codebooks x frames), ``text`` (the target's transcript). Only the tables those need are
read (wav.scp always; spk1.scp for the target; enroll.scp, or spk2enroll +
spk1.scp + utt2spk [+ utt2uniq] for sampled enrollments, or only spk1.scp when
the target utterance itself enrolls (``enroll="target"``); utt2spk for the
speaker; noise1.scp for dynamic mixing with noise; enroll_pos.scp,
enroll_neg.scp, and enroll.scp for the clean enrollment behind the positive
clip), so a data dir needs no more files than the model uses.

Training (``train=True``) takes a random chunk of ``chunk_seconds`` (the same
span of mixture and target; shorter rows are zero-padded), optionally a random
``enroll_seconds`` crop of the enrollment (and of the positive and negative clips, the clean
enrollment sharing the positive's crop), and may build a fresh mixture
(dynamic mixing: the row's target source plus the target source of a row of
another speaker at a random SIR, plus optionally a random row's noise at a
random SNR to the speech). Validation (``train=False``) gives whole rows as
they are on disk and ignores chunking, cropping and dynamic mixing.

Absent and silent targets (``absent_fraction``, ``silent_fraction``, in training or, when the trainer passes
them, validation): a share of the items is drawn absent-target, enrolled by the ``spk1.scp`` audio of a row
whose speaker is not in the mixture, with an all-zero target and the mixture unchanged; another share is
drawn partly silent, the target kept in one random span of ``ACTIVE_SHARE`` of the item only and the mixture
rebuilt as the rest of it plus that kept target (``tsekit.data.mixing.silence_outside``). The speakers of a
mixture are those of the rows sharing its ``wav.scp`` entry (a data dir has a row per source; under dynamic
mixing, the target's and the interferer's). ``speaker`` is the enrolled speaker's index, whose voice the
enrollment carries. The rest stay present targets.

Codec tokens come from ``tokens_dir``, what ``tsekit tokenize`` wrote for this data dir
(``dump/<codec>/<set>``; ``tsekit.data.tokens`` has the layout). A chunk's tokens are the frames that
cover its samples: frames floor(start x frame_rate / rate) to ceil(end x frame_rate / rate), so the waveform
and its tokens stay aligned to within one frame; an enrollment's tokens follow its crop the same way.
Batches pad tokens with ``PAD_TOKEN`` and give their lengths (``mixture_tokens_lengths``, ...). Dynamic
mixing builds mixtures that were never tokenized, so it refuses mixture tokens.

``speaker`` is the index of the row's speaker in ``speakers`` (by default the
data dir's own sorted speakers; pass the training list for validation). A
speaker missing from that list gets -100, the ``ignore_index`` of
``torch.nn.CrossEntropyLoss``, so unseen validation speakers add nothing to a
speaker loss.

Every random choice of item ``i`` comes from a generator seeded by
(seed, epoch, i) only: the same epoch gives the same items whatever the
number of workers or the order they are asked in; ``set_epoch`` gives new ones.
:meth:`TSEDataset.example` returns those choices without reading audio
samples, which is what tests recompute mixtures from.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tsekit import TsekitError
from tsekit.data.audio import audio_info, check_audio, is_ark, is_pipe, load_audio
from tsekit.data.enroll import utt2uniq_of, valid_candidates
from tsekit.data.mixing import gain_for_ratio, loop_to_length, place, silence_outside
from tsekit.data.table import read_list_table, read_table, sorted_keys
from tsekit.data.tokens import enrollment_tokens, read_codec_info, read_tokens

# clips for systems enrolled by noisy positive/negative clips (tsekit enroll --posneg), cropped like ``enroll``;
# enroll_clean is the clean enrollment the positive clip was made from (same length, same crop), a distillation
# target
CLIP_NEEDS = {"enroll_pos": "enroll_pos.scp", "enroll_neg": "enroll_neg.scp", "enroll_clean": "enroll.scp"}
# codec tokens: need -> the signal of tsekit tokenize's output they are read from
TOKEN_NEEDS = {"mixture_tokens": "mixture", "target_tokens": "target", "enroll_tokens": "enroll"}
SUPPORTED_NEEDS = ("enroll", "speaker", "target", "text", *CLIP_NEEDS, *TOKEN_NEEDS)
PAD_TOKEN = -1  # batches pad token matrices with it: no codebook index is negative
ENROLL_MODES = ("fixed", "sampled", "target")
UNKNOWN_SPEAKER = -100  # torch.nn.CrossEntropyLoss ignores this target by default

# One uniform draw per slot, always all of them and in this order, so turning
# an option on or off never changes the other choices of an item. New slots go
# at the end: the first draws of a generator do not depend on how many follow.
(CHUNK, ENROLL_ROW, ENROLL_CROP, INTERFERER_ROW, INTERFERER_CROP, INTERFERER_PLACE, SIR,
 NOISE_ROW, NOISE_CROP, SNR, POS_CROP, NEG_CROP, PRESENCE, ABSENT_ROW, ACTIVE_LENGTH, ACTIVE_START) = range(16)
NUM_DRAWS = 16
# a partly silent target speaks in a span of this share of the item's samples: far from none (an absent
# target) and from all of it (a present one)
ACTIVE_SHARE = (0.2, 0.8)
ACTIVE_RAMP_SECONDS = 0.01  # the fade in and out of a partly silent target's span


@dataclass(frozen=True)
class Example:
    """Every choice behind one item, resolved to rows and sample offsets."""

    utt: str
    start: int  # first sample of the chunk (in wav.scp, or in spk1.scp under dynamic mixing)
    frames: int  # samples read: the valid length of the item
    size: int  # samples of the item after zero padding (the chunk length, or ``frames``)
    enroll_entry: str = ""
    enroll_row: str = ""  # sampled: the row whose spk1.scp audio enrolls; fixed: ""
    enroll_start: int = 0
    enroll_frames: int = 0
    interferer: str = ""  # dynamic mixing: the row whose spk1.scp audio interferes
    interferer_start: int = 0
    interferer_frames: int = 0
    interferer_offset: int = 0  # where the interferer begins inside the item
    sir_db: float = 0.0
    noise_row: str = ""  # dynamic mixing with noise: the row whose noise1.scp audio is added
    noise_start: int = 0
    snr_db: float = 0.0
    pos_start: int = 0  # the span of the positive clip (and of the clean enrollment inside it)
    pos_frames: int = 0
    neg_start: int = 0
    neg_frames: int = 0
    presence: str = "present"  # or "absent" (enroll_row: a speaker outside the mixture) or "partial"
    active_start: int = 0  # partial: the span where the target speaks
    active_frames: int = 0


def pick(u: float, count: int) -> int:
    """An integer in [0, count) from a uniform draw u in [0, 1)."""
    return min(int(u * count), count - 1)


def span(u: float, total: int, wanted: int | None) -> tuple[int, int]:
    """(start, frames) of a random ``wanted``-sample span of ``total``; all of it when shorter."""
    if wanted is None or total <= wanted:
        return 0, total
    return pick(u, total - wanted + 1), wanted


def _plain(entry: str) -> bool:
    return not (is_pipe(entry) or is_ark(entry))


class _Reader:
    """Reads spans of scp entries for one item and checks rate and channels.

    Plain files are read partially (only the chunk); ark and pipe entries are
    loaded whole once per item and sliced.
    """

    def __init__(self, rate: int):
        self.rate = rate
        self.whole: dict[str, np.ndarray] = {}
        self.lengths: dict[str, int] = {}

    def _check_rate(self, rate: int, entry: str, what: str) -> None:
        if rate != self.rate:
            raise TsekitError(f"{what}: {entry}: {rate} Hz audio, expected {self.rate} Hz "
                              "(prepare the data dir at the configured sample rate)")

    def _check(self, samples: np.ndarray, rate: int, entry: str, what: str) -> np.ndarray:
        self._check_rate(rate, entry, what)
        if samples.ndim != 1:
            raise TsekitError(f"{what}: {entry}: {samples.shape[1]} channels, expected mono audio")
        return samples

    def _load(self, entry: str, what: str) -> np.ndarray:
        if entry not in self.whole:
            samples, rate = load_audio(entry, what)
            self.whole[entry] = self._check(samples, rate, entry, what)
        return self.whole[entry]

    def length(self, entry: str, what: str) -> int:
        if entry not in self.lengths:
            if _plain(entry):
                rate, frames = audio_info(entry, what)
                self._check_rate(rate, entry, what)
                if frames == 0:
                    raise TsekitError(f"{what}: {entry}: empty audio")
                self.lengths[entry] = frames
            else:
                self.lengths[entry] = len(self._load(entry, what))
        return self.lengths[entry]

    def read(self, entry: str, what: str, start: int, frames: int) -> np.ndarray:
        if not _plain(entry):
            return self._load(entry, what)[start : start + frames]
        samples, rate = load_audio(entry, what, start, frames)  # reads only the span
        return self._check(samples, rate, entry, what)


def _tensor(samples: np.ndarray, size: int | None = None) -> torch.Tensor:
    if size is not None and len(samples) < size:
        samples = np.pad(samples, (0, size - len(samples)))
    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))


class TSEDataset(torch.utils.data.Dataset):
    """Rows of a data dir as training or validation items (see the module docstring)."""

    def __init__(
        self,
        data_dir: str | os.PathLike,
        needs: frozenset[str],
        sample_rate: int,
        train: bool,
        chunk_seconds: float | None = 4.0,
        enroll: str = "fixed",
        enroll_seconds: float | None = None,
        dynamic_mixing: bool = False,
        dm_sir_range: Sequence[float] = (-5.0, 5.0),
        dm_noise: bool = False,
        dm_snr_range: Sequence[float] = (0.0, 20.0),
        speakers: list[str] | None = None,
        seed: int = 0,
        tokens_dir: str | os.PathLike | None = None,
        absent_fraction: float = 0.0,
        silent_fraction: float = 0.0,
    ):
        self.data_dir = Path(data_dir)
        self.needs = frozenset(needs)
        unknown = sorted(self.needs - set(SUPPORTED_NEEDS))
        if unknown:
            raise TsekitError(f"{self.data_dir}: the dataset cannot provide {unknown[0]!r} "
                              f"(it provides {', '.join(SUPPORTED_NEEDS)})")
        if enroll not in ENROLL_MODES:
            raise TsekitError(f"unknown enrollment mode {enroll!r}; choose from {', '.join(ENROLL_MODES)}")
        for name, value in (("chunk_seconds", chunk_seconds), ("enroll_seconds", enroll_seconds)):
            if value is not None and value <= 0:
                raise TsekitError(f"{name} must be positive or None, got {value}")
        for name, pair in (("dm_sir_range", dm_sir_range), ("dm_snr_range", dm_snr_range)):
            if len(pair) != 2 or pair[0] > pair[1]:
                raise TsekitError(f"{name} must be [low, high] with low <= high, got {list(pair)}")
        self.absent_fraction, self.silent_fraction = float(absent_fraction), float(silent_fraction)
        self._check_presence_options()
        if "text" in self.needs and train and chunk_seconds:
            raise TsekitError("a model that reads transcripts (text) trains on whole utterances, whose transcripts "
                              f"they are: set data.chunk_seconds to null (it is {chunk_seconds})")
        self.rate, self.train, self.seed, self.epoch = sample_rate, train, seed, 0
        self.enroll_mode = enroll
        self.chunk = round(chunk_seconds * sample_rate) if train and chunk_seconds else None
        self.enroll_crop = round(enroll_seconds * sample_rate) if train and enroll_seconds else None
        self.dynamic_mixing = bool(dynamic_mixing and train)
        self.dm_noise = bool(dm_noise and self.dynamic_mixing)
        self.sir_range = (float(dm_sir_range[0]), float(dm_sir_range[1]))
        self.snr_range = (float(dm_snr_range[0]), float(dm_snr_range[1]))

        self.tables = {"wav.scp": read_table(self.data_dir / "wav.scp")}
        self.rows = sorted_keys(self.tables["wav.scp"])
        if not self.rows:
            raise TsekitError(f"{self.data_dir / 'wav.scp'}: no rows")
        self.skipped = 0  # rows left out: without a transcript, for a model that reads one
        if "text" in self.needs:  # a target cut short has no transcript (PARTIAL_FILES): its row is left out
            self.tables["text"] = read_table(self.data_dir / "text")
            kept = [utt for utt in self.rows if utt in self.tables["text"]]
            if not kept:
                raise TsekitError(f"{self.data_dir / 'text'}: no transcript for any row of wav.scp")
            self.skipped, self.rows = len(self.rows) - len(kept), kept
        # an enrollment is chosen for its waveform, its tokens, or both
        self.enrolls = bool(self.needs & {"enroll", "enroll_tokens"})
        sampled = self.enrolls and enroll == "sampled"
        for name in self._tables_needed(sampled):
            self.tables[name] = self._read_rows(name)
        if sampled:
            if (self.data_dir / "utt2uniq").is_file():
                self.tables["utt2uniq"] = self._read_rows("utt2uniq")
            self.uniq = utt2uniq_of(self.tables)
            self.spk2enroll = self._read_spk2enroll()
        self.speakers = list(speakers) if speakers is not None else None
        if "speaker" in self.needs:
            if self.speakers is None:
                self.speakers = sorted_keys(set(self.tables["utt2spk"].values()))
            self.speaker_index = {spk: i for i, spk in enumerate(self.speakers)}
        if self.dynamic_mixing or self.absent_fraction:
            self._group_by_speaker()
        if self.absent_fraction:
            self._find_mixture_speakers()
        self._read_token_tables(tokens_dir)

    def _check_presence_options(self) -> None:
        """Absent and silent targets replace the target (and the enrollment, and the mixture): only models that
        read nothing else about them can take such items."""
        for name, value in (("absent_fraction", self.absent_fraction), ("silent_fraction", self.silent_fraction)):
            if not 0 <= value <= 1:
                raise TsekitError(f"{name} must be in [0, 1], got {value}")
        if self.absent_fraction + self.silent_fraction > 1:
            raise TsekitError(f"absent_fraction {self.absent_fraction} and silent_fraction {self.silent_fraction} "
                              "add up to more than every item")
        if not (self.absent_fraction or self.silent_fraction):
            return
        stale = sorted(self.needs & {"text", *CLIP_NEEDS, *TOKEN_NEEDS})
        if stale or "target" not in self.needs:
            what = f"reads {stale[0]}, which they do not follow" if stale else "reads no target"
            raise TsekitError(f"absent and silent targets change the target a model learns, but this model {what}: "
                              "set data.absent_fraction and data.silent_fraction to 0 for it")
        if self.absent_fraction and "enroll" not in self.needs:
            raise TsekitError("absent targets are made by the enrollment of another speaker, but this model reads "
                              "no enrollment: set data.absent_fraction to 0 for it")

    def check_audio(self) -> None:
        """Check every audio file the items may read from its header (``tsekit.data.audio.check_audio``: found,
        readable, not empty, mono, at the dataset's rate), so that a bad file stops training before it writes
        anything rather than in the middle of an epoch. Every row of wav.scp is checked in every table read
        (a sampled enrollment or an interferer may be any row's target)."""
        rows = sorted_keys(self.tables["wav.scp"])
        check_audio({self.data_dir / name: {utt: table[utt] for utt in rows if utt in table}
                     for name, table in self.tables.items() if name.endswith(".scp")}, self.rate)

    def _read_token_tables(self, tokens_dir: str | os.PathLike | None) -> None:
        """The tokens.scp of every signal whose tokens are needed, checked to cover every row they serve."""
        signals = sorted({TOKEN_NEEDS[need] for need in self.needs & set(TOKEN_NEEDS)})
        if "enroll_tokens" in self.needs and self.enroll_mode != "fixed":
            signals = sorted({*signals, "target"} - {"enroll"})  # a sampled or own-target enrollment is a target
        self.token_tables: dict[str, dict[str, str]] = {}
        if not signals:
            return
        if tokens_dir is None:
            raise TsekitError(f"{self.data_dir}: the model reads codec tokens; set data.tokens to the folder of "
                              "tsekit tokenize's outputs (recipe stage 3 writes dump/<codec>/<set>)")
        if "mixture_tokens" in self.needs and self.dynamic_mixing:
            raise TsekitError("dynamic mixing builds new mixtures, which have no codec tokens: turn it off for a "
                              "model that reads mixture_tokens")
        self.tokens_dir = Path(tokens_dir)
        self.token_info = read_codec_info(self.tokens_dir)
        for signal in signals:  # every row spk2enroll may draw is a row of wav.scp (_read_spk2enroll)
            path = self.tokens_dir / signal / "tokens.scp"
            if not path.is_file():
                raise TsekitError(f"{path}: file not found (run tsekit tokenize on {self.data_dir} into "
                                  f"{self.tokens_dir}, and let every job finish)")
            table = read_table(path)
            missing = [row for row in self.rows if row not in table]
            if missing:
                raise TsekitError(f"{path}: no tokens for {len(missing)} rows of {self.data_dir} (e.g. "
                                  f"{missing[0]}); tokenize this data dir again")
            self.token_tables[signal] = table

    def _tokens(self, signal: str, key: str, start: int, frames: int) -> torch.Tensor:
        """The token frames (K, F) covering samples [start, start + frames) of ``signal``'s entry ``key``."""
        path = self.tokens_dir / signal / "tokens.scp"
        tokens = read_tokens(self.token_tables[signal][key], self.token_info, f"{path}: {key}")
        per_sample = float(self.token_info["frame_rate"]) / self.rate
        first = int(np.floor(start * per_sample))
        last = int(np.ceil((start + frames) * per_sample))
        return torch.from_numpy(np.ascontiguousarray(tokens[:, first:last])).long()

    def _tables_needed(self, sampled: bool) -> list[str]:
        names = set()
        if "target" in self.needs or self.dynamic_mixing or sampled or self._enrolled_by_target():
            names.add("spk1.scp")
        if "speaker" in self.needs or self.dynamic_mixing or sampled or self.absent_fraction:
            names.add("utt2spk")
        if self.enrolls and not sampled and not self._enrolled_by_target():
            names.add("enroll.scp")
        names.update(CLIP_NEEDS[need] for need in self.needs & set(CLIP_NEEDS))
        if self.dm_noise:
            names.add("noise1.scp")
        return sorted(names)

    def _enrolled_by_target(self) -> bool:
        return self.enrolls and self.enroll_mode == "target"

    def _read_rows(self, name: str) -> dict[str, str]:
        """A per-row table, checked to have a line for every row read."""
        table = read_table(self.data_dir / name)
        missing = [utt for utt in self.rows if utt not in table]
        if missing:
            raise TsekitError(f"{self.data_dir / name}: no line for {len(missing)} rows of wav.scp "
                              f"(e.g. {missing[0]})")
        return table

    def _read_spk2enroll(self) -> dict[str, list[str]]:
        path = self.data_dir / "spk2enroll"
        spk2enroll = read_list_table(path)
        for spk, rows in spk2enroll.items():
            strangers = [row for row in rows if row not in self.tables["wav.scp"]]
            if strangers:
                raise TsekitError(f"{path}: speaker {spk} lists row {strangers[0]} that wav.scp lacks "
                                  "(rerun tsekit enroll on this data dir)")
        absent = sorted_keys(set(self.tables["utt2spk"].values()) - set(spk2enroll))
        if absent:
            raise TsekitError(f"{path}: no line for speaker {absent[0]} (rerun tsekit enroll on this data dir)")
        return spk2enroll

    def _group_by_speaker(self) -> None:
        """Rows ordered by speaker, so "a row of another speaker" is one draw over the other groups."""
        utt2spk = self.tables["utt2spk"]
        self._by_speaker = sorted(self.rows, key=lambda utt: (utt2spk[utt].encode(), utt.encode()))
        self._group: dict[str, tuple[int, int]] = {}
        for position, utt in enumerate(self._by_speaker):
            first, count = self._group.get(utt2spk[utt], (position, 0))
            self._group[utt2spk[utt]] = (first, count + 1)
        if len(self._group) < 2:
            raise TsekitError(f"{self.data_dir / 'utt2spk'}: dynamic mixing and absent targets need rows of at "
                              "least two speakers")

    def _find_mixture_speakers(self) -> None:
        """The speakers of every mixture: those of the rows sharing its wav.scp entry; each must leave one out to
        enroll an absent target (under dynamic mixing a mixture holds two of them, the target's and one other)."""
        utt2spk, wav = self.tables["utt2spk"], self.tables["wav.scp"]
        self._mixture_speakers: dict[str, set[str]] = {}
        for utt in self.rows:
            self._mixture_speakers.setdefault(wav[utt], set()).add(utt2spk[utt])
        most = 2 if self.dynamic_mixing else max(len(speakers) for speakers in self._mixture_speakers.values())
        if most >= len(self._group):
            raise TsekitError(f"{self.data_dir / 'utt2spk'}: {len(self._group)} speakers, and a mixture holds {most}"
                              ": absent targets need a speaker outside every mixture")

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose random chunks, enrollments and mixtures the items take."""
        self.epoch = int(epoch)

    def _where(self, name: str, utt: str) -> str:
        return f"{self.data_dir / name}: {utt}"

    def _sample_enroll(self, utt: str, u: float) -> str:
        candidates = valid_candidates(self.tables, utt, self.spk2enroll, self.uniq)
        if not candidates:
            raise TsekitError(f"{self.data_dir / 'spk2enroll'}: speaker {self.tables['utt2spk'][utt]} has no "
                              f"enrollment for row {utt} (needs another source utterance outside its mixture)")
        return candidates[pick(u, len(candidates))]

    def _row_outside(self, speakers: set[str], u: float) -> str:
        """A row of a speaker not in ``speakers``: one draw over the rows of the other speakers' groups."""
        groups = sorted(self._group[spk] for spk in speakers)
        position = pick(u, len(self._by_speaker) - sum(count for _, count in groups))
        for first, count in groups:  # step over the left-out groups, in order
            if position >= first:
                position += count
        return self._by_speaker[position]

    def _presence(self, u: float) -> str:
        if u < self.absent_fraction:
            return "absent"
        return "partial" if u < self.absent_fraction + self.silent_fraction else "present"

    def example(self, index: int, reader: _Reader | None = None) -> Example:
        """The choices behind item ``index`` of the current epoch (reads audio headers only)."""
        reader = reader or _Reader(self.rate)
        u = np.random.default_rng([self.seed % 2**64, self.epoch, index]).random(NUM_DRAWS)
        utt = self.rows[index]
        source = "spk1.scp" if self.dynamic_mixing else "wav.scp"
        total = reader.length(self.tables[source][utt], self._where(source, utt))
        start, frames = span(u[CHUNK], total, self.chunk)
        presence = self._presence(u[PRESENCE])
        choices: dict = {"utt": utt, "start": start, "frames": frames, "size": self.chunk or frames,
                         "presence": presence}
        if self.dynamic_mixing:
            choices.update(self._mixing_choices(u, utt, frames, reader))
        if presence == "partial":
            low, high = ACTIVE_SHARE
            active = max(1, round(frames * (low + float(u[ACTIVE_LENGTH]) * (high - low))))
            choices.update(active_start=pick(u[ACTIVE_START], frames - active + 1), active_frames=active)
        if self.enrolls:
            if presence == "absent":  # another speaker's clean utterance enrolls
                speakers = ({self.tables["utt2spk"][utt], self.tables["utt2spk"][choices["interferer"]]}
                            if self.dynamic_mixing else self._mixture_speakers[self.tables["wav.scp"][utt]])
                row = self._row_outside(speakers, u[ABSENT_ROW])
                entry, where = self.tables["spk1.scp"][row], self._where("spk1.scp", row)
            elif self.enroll_mode == "fixed":
                row, entry, where = "", self.tables["enroll.scp"][utt], self._where("enroll.scp", utt)
            elif self.enroll_mode == "target":  # the target utterance itself (DDTSE's training)
                row, entry, where = utt, self.tables["spk1.scp"][utt], self._where("spk1.scp", utt)
            else:
                row = self._sample_enroll(utt, u[ENROLL_ROW])
                entry, where = self.tables["spk1.scp"][row], self._where("spk1.scp", row)
            enroll_start, enroll_frames = span(u[ENROLL_CROP], reader.length(entry, where), self.enroll_crop)
            choices.update(enroll_entry=entry, enroll_row=row, enroll_start=enroll_start,
                           enroll_frames=enroll_frames)
        for need, slot in (("enroll_pos", POS_CROP), ("enroll_neg", NEG_CROP)):
            if need in self.needs or (need == "enroll_pos" and "enroll_clean" in self.needs):
                name = CLIP_NEEDS[need]
                total_clip = reader.length(self.tables[name][utt], self._where(name, utt))
                prefix = need.removeprefix("enroll_")
                choices[f"{prefix}_start"], choices[f"{prefix}_frames"] = span(u[slot], total_clip, self.enroll_crop)
        return Example(**choices)

    def _mixing_choices(self, u: np.ndarray, utt: str, frames: int, reader: _Reader) -> dict:
        other = self._row_outside({self.tables["utt2spk"][utt]}, u[INTERFERER_ROW])
        other_total = reader.length(self.tables["spk1.scp"][other], self._where("spk1.scp", other))
        other_start, other_frames = span(u[INTERFERER_CROP], other_total, frames)
        low, high = self.sir_range
        choices = {"interferer": other, "interferer_start": other_start, "interferer_frames": other_frames,
                   "interferer_offset": pick(u[INTERFERER_PLACE], frames - other_frames + 1),
                   "sir_db": low + float(u[SIR]) * (high - low)}
        if self.dm_noise:
            noise_row = self.rows[pick(u[NOISE_ROW], len(self.rows))]
            noise_total = reader.length(self.tables["noise1.scp"][noise_row], self._where("noise1.scp", noise_row))
            low, high = self.snr_range
            choices.update(noise_row=noise_row, noise_start=span(u[NOISE_CROP], noise_total, frames)[0],
                           snr_db=low + float(u[SNR]) * (high - low))
        return choices

    def _read(self, reader: _Reader, name: str, utt: str, start: int, frames: int) -> np.ndarray:
        return reader.read(self.tables[name][utt], self._where(name, utt), start, frames)

    def _dynamic_mixture(self, example: Example, target: np.ndarray, reader: _Reader) -> np.ndarray:
        """target + interferer at the drawn SIR [+ noise at the drawn SNR to that speech]."""
        interferer = self._read(reader, "spk1.scp", example.interferer, example.interferer_start,
                                example.interferer_frames)
        interferer = place(interferer, example.frames, example.interferer_offset)
        mixture = target + gain_for_ratio(target, interferer, example.sir_db) * interferer
        if self.dm_noise:
            noise = self._read(reader, "noise1.scp", example.noise_row, example.noise_start, example.frames)
            noise = loop_to_length(noise, example.frames)
            mixture = mixture + gain_for_ratio(mixture, noise, example.snr_db) * noise
        return mixture.astype(np.float32, copy=False)

    def __getitem__(self, index: int) -> dict:
        reader = _Reader(self.rate)
        example = self.example(index, reader)
        utt, start, frames = example.utt, example.start, example.frames
        target = None
        if self.dynamic_mixing:
            target = self._read(reader, "spk1.scp", utt, start, frames)
            mixture = self._dynamic_mixture(example, target, reader)
        else:
            mixture = self._read(reader, "wav.scp", utt, start, frames)
            if "target" in self.needs:
                target_length = reader.length(self.tables["spk1.scp"][utt], self._where("spk1.scp", utt))
                mixture_length = reader.length(self.tables["wav.scp"][utt], self._where("wav.scp", utt))
                if target_length != mixture_length:
                    raise TsekitError(f"{self._where('spk1.scp', utt)}: {target_length} samples, "
                                      f"mixture has {mixture_length} (tsekit data validate finds all such rows)")
                if example.presence != "absent":  # an absent example's target is silence (below): not read
                    target = self._read(reader, "spk1.scp", utt, start, frames)
        if example.presence == "absent":
            target = np.zeros(mixture.shape, np.float32)
        elif example.presence == "partial":
            target, mixture = silence_outside(target, mixture, example.active_start, example.active_frames,
                                              round(ACTIVE_RAMP_SECONDS * self.rate))
        item: dict = {"utt": utt, "mixture": _tensor(mixture, example.size), "length": frames}
        if "target" in self.needs:
            item["target"] = _tensor(target, example.size)
        if "enroll" in self.needs:
            where = self._where("spk1.scp", example.enroll_row) if example.enroll_row else \
                self._where("enroll.scp", utt)
            item["enroll"] = _tensor(reader.read(example.enroll_entry, where, example.enroll_start,
                                                 example.enroll_frames))
        if "mixture_tokens" in self.needs:
            item["mixture_tokens"] = self._tokens("mixture", utt, start, frames)
        if "target_tokens" in self.needs:
            item["target_tokens"] = self._tokens("target", utt, start, frames)
        if "enroll_tokens" in self.needs:
            signal, key = enrollment_tokens(utt, example.enroll_row)
            item["enroll_tokens"] = self._tokens(signal, key, example.enroll_start, example.enroll_frames)
        if "text" in self.needs:
            item["text"] = self.tables["text"][utt]
        if "speaker" in self.needs:
            # the enrolled speaker: the row's own, but another one's for an absent target
            index_of = self.speaker_index.get(self.tables["utt2spk"][example.enroll_row or utt], UNKNOWN_SPEAKER)
            item["speaker"] = torch.tensor(index_of, dtype=torch.int64)
        for need in sorted(self.needs & set(CLIP_NEEDS)):
            start, frames = ((example.neg_start, example.neg_frames) if need == "enroll_neg" else
                             (example.pos_start, example.pos_frames))  # the clean enrollment: the positive's span
            item[need] = _tensor(self._read(reader, CLIP_NEEDS[need], utt, start, frames))
        if "enroll_clean" in item and "enroll_pos" in item and len(item["enroll_clean"]) != len(item["enroll_pos"]):
            raise TsekitError(f"{self._where('enroll_pos.scp', utt)}: {len(item['enroll_pos'])} samples, but the "
                              f"clean enrollment it was made from has {len(item['enroll_clean'])} "
                              "(rebuild it with tsekit enroll --posneg)")
        return item


def _pad_stack(signals: list[torch.Tensor]) -> torch.Tensor:
    out = signals[0].new_zeros((len(signals), max(len(s) for s in signals)))
    for row, signal in enumerate(signals):
        out[row, : len(signal)] = signal
    return out


def collate(items: list[dict]) -> dict:
    """Batch items: signals zero-padded to the longest, ``lengths``/``enroll_lengths``/``enroll_pos_lengths``/
    ``enroll_neg_lengths`` (int64), ``utts``; token matrices (B, K, F) padded with PAD_TOKEN, and their
    ``<need>_lengths``."""
    batch: dict = {
        "mixture": _pad_stack([item["mixture"] for item in items]),
        "lengths": torch.tensor([item.get("length", len(item["mixture"])) for item in items], dtype=torch.int64),
        "utts": [item["utt"] for item in items],
    }
    if "target" in items[0]:
        batch["target"] = _pad_stack([item["target"] for item in items])
    if "enroll" in items[0]:
        batch["enroll"] = _pad_stack([item["enroll"] for item in items])
        batch["enroll_lengths"] = torch.tensor([len(item["enroll"]) for item in items], dtype=torch.int64)
    if "text" in items[0]:
        batch["text"] = [item["text"] for item in items]
    if "speaker" in items[0]:
        batch["speaker"] = torch.stack([torch.as_tensor(item["speaker"], dtype=torch.int64) for item in items])
    for need in TOKEN_NEEDS:
        if need in items[0]:
            tokens = [item[need] for item in items]
            batch[need] = torch.full((len(items), tokens[0].shape[0], max(t.shape[1] for t in tokens)), PAD_TOKEN,
                                     dtype=torch.int64)
            for row, matrix in enumerate(tokens):
                batch[need][row, :, : matrix.shape[1]] = matrix
            batch[f"{need}_lengths"] = torch.tensor([t.shape[1] for t in tokens], dtype=torch.int64)
    for need in CLIP_NEEDS:
        if need in items[0]:
            batch[need] = _pad_stack([item[need] for item in items])
            if need != "enroll_clean":  # as long as enroll_pos: its lengths are enroll_pos_lengths
                batch[f"{need}_lengths"] = torch.tensor([len(item[need]) for item in items], dtype=torch.int64)
    return batch


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1, np.uint64)[0])


class EpochShuffle(torch.utils.data.Sampler):
    """All indices in an order fixed by (seed, the dataset's current epoch), not by earlier epochs."""

    def __init__(self, dataset: TSEDataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __iter__(self):
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.dataset.epoch))
        return iter(torch.randperm(len(self.dataset), generator=generator).tolist())

    def __len__(self) -> int:
        return len(self.dataset)


def seed_worker(worker_id: int) -> None:
    """Seed numpy's and Python's global generators in a worker from torch's per-worker seed.

    The dataset draws nothing from them, but code called from a worker may.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: TSEDataset, batch_size: int, shuffle: bool, num_workers: int, seed: int, drop_last: bool = False
) -> torch.utils.data.DataLoader:
    """A DataLoader whose batches depend only on (seed, dataset.epoch), not on ``num_workers``.

    Call ``dataset.set_epoch(epoch)`` before iterating: workers are started
    anew for each iteration (no persistent workers), so they see the epoch.
    """
    sampler = EpochShuffle(dataset, seed) if shuffle else torch.utils.data.SequentialSampler(dataset)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate,
        worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(seed % 2**63),
        drop_last=drop_last, persistent_workers=False,
    )


def batches(loader: torch.utils.data.DataLoader) -> Iterator:
    """The batches of ``loader``, where a worker process's TsekitError comes out as its own one line.

    torch re-raises a worker's exception in the main process as the same type, its message replaced by
    "Caught TsekitError in DataLoader worker process N. Original Traceback ..." and the whole traceback, whose
    last line is ``tsekit.TsekitError: <the message>``; that message is what the user must read.
    """
    try:
        yield from loader
    except TsekitError as err:
        lines = str(err).splitlines()
        prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
        if len(lines) < 2 or not lines[0].startswith("Caught ") or not lines[-1].startswith(prefix):
            raise
        raise type(err)(lines[-1].removeprefix(prefix)) from None
