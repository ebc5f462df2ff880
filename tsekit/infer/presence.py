"""Where the target speaks: speech segments of the mixture (Silero VAD), a target-presence decision on short
windows inside them from the extracted output, silence written where the target is absent, and an RTTM of where it
speaks.

Segments: the Silero VAD (``tsekit.pretrained.vad``, its default hysteresis) on the mixture; outside them nobody
speaks, so the target does not either and the output is silenced there too.

Frames and windows: the recording is cut into frames of ``hop`` seconds (0.2 s); every frame that touches a speech
segment gets a score computed over a window of ``window`` seconds centred on it, in whole frames: the frame and
as many on either side, the odd number of frames nearest ``window`` (``DEFAULT_WINDOWS``: 1 s, 5 frames, for
``energy``; 1.8 s, 9 frames, for ``speaker``), clipped at the ends of the recording. A VAD segment of a
conversation holds several speakers taking turns (its gaps of a few hundred ms do not split it), so the decision
is made per frame rather than per segment: on the mini recipe's conversation set a decision per segment could at
best keep 11% of the target's speech at 0.74 frame accuracy (docs/RESULTS.md).

Scores (``PresenceSettings.method``):

* ``energy`` (the default): 10 log10 of the output's energy over the mixture's in the window (dB). An extractor
  keeps about the mixture's energy where the target speaks alone (0 dB), about half or more where it overlaps
  another speaker (-3 dB and up), and suppresses an interferer speaking alone (the mini Z-SpEx by 8-13 dB). It
  assumes the output is at the mixture's level, as ``mixture_fit`` (the default output level of SI-SDR-trained
  systems) leaves it; with ``peak`` or ``none`` the threshold moves with the output's gain.
* ``speaker``: the cosine similarity of the output's window to the enrollment, both embedded by resemblyzer
  (``tsekit.pretrained.speaker``, as scoring uses it). It does not depend on the output's level; 1.8 s holds one
  of resemblyzer's 1.6 s partials.

The decision: a frame is present when it touches speech and its score is above ``threshold``; then absences
shorter than ``min_gap`` (0.4 s) between two present stretches are filled (a pause inside the target's turn, a
word the window scored low) and present stretches shorter than ``min_keep`` (0.4 s) are dropped (an interferer's
word the extractor let through); what remains, cut to the VAD's segments, is kept. A window that holds enough of
the target keeps its frame, so a kept stretch may reach up to half a window into the next turn.

Defaults, measured with ``bench/presence_bench.py`` and the mini Z-SpEx (docs/RESULTS.md): ``energy`` over 1 s
above -6 dB. On the mini recipe's conversation set it had frame accuracy 0.78 keeping 90% of the target's frames
(per VAD segment: 0.52 keeping 67%), against 0.75 keeping 81% for ``speaker`` over 1.8 s above 0.6; on the
bench's synthetic set 0.87 keeping 97% (per segment 0.83 keeping 99.7%), against 0.88 keeping 83%; ``speaker``
silenced a little more of absent targets' speech (0.84 against 0.81) at several times the cost (a Resemblyzer
embedding per speech frame). Shorter speaker windows (1 s) lost the target's frames on the synthetic set, longer
energy windows (1.8-2.6 s) reached further into the neighbours' turns; -5 dB was a little more accurate (0.81 and
0.89) but kept less of the target (84% and 96%): silencing the target is worse than leaving an interferer the
extractor already lowered. The gap filling and minimum length changed the accuracy by under 0.01.

Bounded memory: the decision reads the mixture once (VAD and the mixture's frame energies) and the output once
(its frame energies, or the speaker windows), each as a stream of blocks (``BlockSource``: a function that starts
a pass), and holds a few numbers per frame (0.2 s), so a recording of any length costs little beyond one block
and one window; ``tsekit.infer.extract.extract_to_file`` gives it its temporary output and the mixture file and
then gates its output block by block. The frames' sums are taken over whole frames only, whatever the blocks, so
the decision on a stream is the decision on the same signal in memory, to the bit.

Gating: the output is multiplied by a gain that is 1 inside the kept stretches and 0 elsewhere, with linear ramps
of ``fade`` (10 ms) just outside each, so that silencing does not click and the kept speech is not faded.
``gate`` works on any block of the output given its offset.

RTTM: one line per kept stretch, ``SPEAKER <recording> 1 <onset> <duration> <NA> <NA> target <NA> <NA>`` (seconds,
3 decimals); ``tsekit extract --segments OUT.rttm`` names the recording after the output file's stem, ``tsekit
infer --segments`` after the utterance (the stem of OUT/wav/<utt>.wav) and writes OUT/rttm.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsekit import TsekitError
from tsekit.pretrained.vad import SileroVad, VadSettings, blocks_of

METHODS = ("energy", "speaker")
# a frame holds the target when its window's score is above: dB of output over mixture; cosine to the enrollment
DEFAULT_THRESHOLDS = {"energy": -6.0, "speaker": 0.6}
DEFAULT_WINDOWS = {"energy": 1.0, "speaker": 1.8}  # seconds
SPEAKER = "target"  # the RTTM's speaker name for the extracted target

BlockSource = Callable[[], Iterable[np.ndarray]]  # starts a pass over a signal, as consecutive mono blocks


@dataclass(frozen=True)
class PresenceSettings:
    """How presence is decided (module docstring); seconds; ``threshold`` and ``window`` None are the method's
    defaults."""

    method: str = "energy"
    threshold: float | None = None
    window: float | None = None
    hop: float = 0.2
    min_gap: float = 0.4
    min_keep: float = 0.4
    fade: float = 0.01  # seconds of ramp at the edges of kept stretches
    vad: VadSettings = field(default_factory=VadSettings)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise TsekitError(f"presence method {self.method!r}: expected one of {', '.join(METHODS)}")
        if self.threshold is None:
            object.__setattr__(self, "threshold", DEFAULT_THRESHOLDS[self.method])
        if self.window is None:
            object.__setattr__(self, "window", DEFAULT_WINDOWS[self.method])
        if not 0 < self.hop <= self.window:
            raise TsekitError(f"presence window {self.window} s and hop {self.hop} s: expected 0 < hop <= window")

    def hop_samples(self, rate: int) -> int:
        return max(1, round(self.hop * rate))

    def reach(self) -> int:
        """Frames on either side of a frame in its window."""
        return max(0, round((self.window / self.hop - 1) / 2))


@dataclass
class Presence:
    """What the decision found in one recording: the VAD's segments and the kept stretches in samples at ``rate``,
    and one score per frame of ``hop`` samples (NaN for a frame outside speech)."""

    segments: list[tuple[int, int]]
    hop: int
    scores: np.ndarray
    kept: list[tuple[int, int]]
    rate: int
    fade: float

    def gate(self, block: np.ndarray, offset: int = 0) -> np.ndarray:
        """``block`` (samples ``offset`` onwards of the output) silenced where the target is absent."""
        return gate(block, self.kept, self.rate, self.fade, offset)


class _FrameEnergy:
    """Sums of squares (float64) per frame of ``hop`` samples of a stream fed in blocks of any size: each frame is
    summed from its own samples in one go, so the sums do not depend on where the blocks were cut; the last,
    partial frame is summed from what there is."""

    def __init__(self, hop: int) -> None:
        self.hop = hop
        self.rest = np.zeros(0, dtype=np.float64)
        self.sums: list[np.ndarray] = []
        self.length = 0

    def feed(self, block: np.ndarray) -> None:
        self.length += len(block)
        samples = np.concatenate([self.rest, np.asarray(block, dtype=np.float64)])
        whole = len(samples) // self.hop * self.hop
        self.sums.append(np.square(samples[:whole]).reshape(-1, self.hop).sum(axis=1))
        self.rest = samples[whole:]

    def result(self) -> np.ndarray:
        return np.concatenate([*self.sums, [np.square(self.rest).sum()] if len(self.rest) else []])


def _observed(blocks: Iterable[np.ndarray], energy: _FrameEnergy, what: str) -> Iterator[np.ndarray]:
    """``blocks``, each fed to ``energy`` on the way (mono checked)."""
    for block in blocks:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 1:
            raise TsekitError(f"{what}: presence needs mono audio, got a block of shape {block.shape}")
        energy.feed(block)
        yield block


def window_sums(values: np.ndarray, reach: int) -> np.ndarray:
    """The sum of ``values`` over each frame and ``reach`` frames on either side (clipped at the ends)."""
    padded = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    index = np.arange(len(values))
    return padded[np.minimum(index + reach + 1, len(values))] - padded[np.maximum(index - reach, 0)]


def speech_frames(segments: list[tuple[int, int]], hop: int, count: int) -> np.ndarray:
    """Which of ``count`` frames of ``hop`` samples touch a segment."""
    speech = np.zeros(count, dtype=bool)
    for start, end in segments:
        speech[start // hop : (end - 1) // hop + 1] = True
    return speech


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The stretches ``[a, b)`` where ``mask`` is true."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def decide_frames(scores: np.ndarray, speech: np.ndarray, threshold: float, min_gap: int,
                  min_keep: int) -> np.ndarray:
    """Present frames: in speech and scored above ``threshold`` (NaN is not), gaps shorter than ``min_gap`` frames
    between present stretches filled, then present stretches shorter than ``min_keep`` frames dropped."""
    with np.errstate(invalid="ignore"):
        present = speech & (scores > threshold)
    stretches = runs(present)
    for (_, end), (start, _) in zip(stretches, stretches[1:], strict=False):
        if start - end < min_gap:
            present[end:start] = True
    for start, end in runs(present):
        if end - start < min_keep:
            present[start:end] = False
    return present


def kept_stretches(present: np.ndarray, hop: int, segments: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The present frames in samples, cut to the segments (both sorted and disjoint)."""
    kept, ends = [], [e for _, e in segments]
    for a, b in runs(present):
        start, end = a * hop, b * hop
        first = bisect.bisect_right(ends, start)
        for s, e in segments[first:]:
            if s >= end:
                break
            kept.append((max(s, start), min(e, end)))
    return kept


def _source(signal: np.ndarray | BlockSource, rate: int) -> BlockSource:
    return (lambda: blocks_of(signal, rate)) if isinstance(signal, np.ndarray) else signal


class PresenceGate:
    """The VAD (and, for ``speaker``, the speaker encoder), loaded once for every recording of a run."""

    def __init__(self, settings: PresenceSettings | None = None) -> None:
        self.settings = settings or PresenceSettings()
        self.vad = SileroVad()
        self._encoder = None

    @property
    def encoder(self):
        if self._encoder is None:
            from tsekit.pretrained.speaker import SpeakerEncoder

            self._encoder = SpeakerEncoder()
        return self._encoder

    def decide(self, output: np.ndarray | BlockSource, mixture: np.ndarray | BlockSource,
               enrollment: np.ndarray | None, rate: int) -> Presence:
        """Where the target of ``enrollment`` speaks in ``output`` (an array, or a ``BlockSource``: one pass
        each over the mixture and the output), extracted from ``mixture`` (the same length)."""
        settings = self.settings
        if settings.method == "speaker" and (enrollment is None or not np.any(enrollment)):
            raise TsekitError("presence by speaker similarity needs the target's enrollment; this system has "
                              "none (use the energy method)")
        hop, reach = settings.hop_samples(rate), settings.reach()
        mixture_energy = _FrameEnergy(hop)
        segments = self.vad.segments(_observed(_source(mixture, rate)(), mixture_energy, "the mixture"), rate,
                                     settings.vad)
        mix = mixture_energy.result()
        speech = speech_frames(segments, hop, len(mix))
        output_blocks = _source(output, rate)()
        if settings.method == "energy":
            output_energy = _FrameEnergy(hop)
            for _ in _observed(output_blocks, output_energy, "the output"):
                pass
            if output_energy.length != mixture_energy.length:
                raise TsekitError(f"the output has {output_energy.length} samples, the mixture "
                                  f"{mixture_energy.length}")
            with np.errstate(divide="ignore", invalid="ignore"):
                scores = 10 * np.log10(window_sums(output_energy.result(), reach) / window_sums(mix, reach))
            scores[~speech] = np.nan
        else:
            scores = self._similarities(output_blocks, speech, hop, reach, mixture_energy.length, enrollment, rate)
        present = decide_frames(scores, speech, settings.threshold, round(settings.min_gap / settings.hop),
                                round(settings.min_keep / settings.hop))
        return Presence(segments, hop, scores, kept_stretches(present, hop, segments), rate, settings.fade)

    def _similarities(self, blocks: Iterable[np.ndarray], speech: np.ndarray, hop: int, reach: int, length: int,
                      enrollment: np.ndarray, rate: int) -> np.ndarray:
        """The speaker score of every speech frame: its window of the output (held alone, with one block)."""
        reference = self.encoder.embed(np.asarray(enrollment, dtype=np.float32), rate)
        scores = np.full(len(speech), np.nan)
        blocks = iter(blocks)
        buffer, offset = np.zeros(0, dtype=np.float32), 0  # the output from sample `offset` on
        for k in np.flatnonzero(speech):
            start, end = max(0, (k - reach) * hop), min(length, (k + reach + 1) * hop)
            pieces = [buffer[start - offset :]]
            have = len(pieces[0])
            while have < end - start and (block := next(blocks, None)) is not None:
                pieces.append(np.asarray(block, dtype=np.float32))
                have += len(block)
            buffer, offset = np.concatenate(pieces) if len(pieces) > 1 else pieces[0], start
            if len(buffer) < end - start:
                raise TsekitError(f"the output ends after {offset + len(buffer)} samples, the mixture has {length}")
            # an all-zero window embeds as NaN: its similarity is NaN, which is not above any threshold
            scores[k] = float(np.dot(self.encoder.embed(buffer[: end - start], rate), reference))
        return scores

    def __call__(self, output: np.ndarray | BlockSource, mixture: np.ndarray | BlockSource,
                 enrollment: np.ndarray | None, rate: int, rttm: str | os.PathLike, recording: str) -> Presence:
        """``decide``, and where the target is present written to ``rttm`` (atomically)."""
        presence = self.decide(output, mixture, enrollment, rate)
        write_rttm(rttm, recording, presence.kept, rate)
        return presence


def gate(block: np.ndarray, kept: list[tuple[int, int]], rate: int, fade: float = 0.01,
         offset: int = 0) -> np.ndarray:
    """``block`` (samples ``offset`` onwards of an output) times the gain of ``kept`` (module docstring)."""
    ramp = max(1, round(fade * rate))
    gain = np.zeros(len(block))
    # only the stretches whose ramps reach into the block (kept is sorted and disjoint), each on its own samples
    first = bisect.bisect_left(kept, offset - ramp, key=lambda stretch: stretch[1])
    for start, end in kept[first:]:
        if start - ramp >= offset + len(block):
            break
        low, high = max(start - ramp, offset), min(end - 1 + ramp, offset + len(block))
        positions = np.arange(low, high, dtype=np.float64)
        # 1 inside, falling linearly to 0 over `ramp` samples on either side
        rise = (positions - (start - ramp)) / ramp
        fall = ((end - 1 + ramp) - positions) / ramp
        part = gain[low - offset : high - offset]
        np.maximum(part, np.clip(np.minimum(rise, fall), 0, 1), out=part)
    return (block * gain).astype(block.dtype)


def write_rttm(path: str | os.PathLike, recording: str, kept: list[tuple[int, int]], rate: int) -> Path:
    """The RTTM of where the target speaks in ``recording`` (module docstring), written atomically."""
    from tsekit.data.rttm import Turn, format_rttm
    from tsekit.jobs import atomic_open

    if not recording or any(c.isspace() for c in recording):
        raise TsekitError(f"{path}: recording id {recording!r} cannot be written to an RTTM (empty or with spaces)")
    with atomic_open(path) as f:
        f.write(format_rttm({recording: [Turn(SPEAKER, start / rate, end / rate) for start, end in kept]}))
    return Path(path)


def target_enrollment(enrollments: dict[str, np.ndarray]) -> np.ndarray | None:
    """The enrollment of the target among a system's (``enroll``, or the pos/neg systems' ``enroll_pos``)."""
    return enrollments.get("enroll", enrollments.get("enroll_pos"))


def rttm_path(out: Path, utt: str) -> Path:
    """Where ``tsekit infer --segments`` writes the RTTM of one row (before its wav)."""
    return out / "presence" / f"{utt}.rttm"


def write_rttm_table(out: Path, utts: list[str]) -> bool:
    """Write OUT/rttm, the rows' RTTMs in ``utts``' order, when every row has one; returns whether it did."""
    from tsekit.jobs import atomic_open

    paths = [rttm_path(out, utt) for utt in utts]
    if not all(path.is_file() for path in paths):
        return False
    with atomic_open(out / "rttm") as f:
        for path in paths:
            f.write(path.read_text(encoding="utf-8"))
    return True
