"""Where the target speaks: speech segments of the mixture (Silero VAD), a target-presence decision per segment
from the extracted output, silence written where the target is absent, and an RTTM of where it speaks.

Segments: the Silero VAD (``tsekit.pretrained.vad``, its default hysteresis) on the mixture; outside them nobody
speaks, so the target does not either and the output is silenced there too.

The decision, per segment (``PresenceSettings.method``):

* ``energy``: 10 log10 of the output's energy over the mixture's in the segment (dB); present above
  a threshold (default -6 dB). An extractor keeps about the mixture's energy where the target speaks
  alone (0 dB), about half or more where it overlaps another speaker (-3 dB and up), and suppresses an
  interferer speaking alone (the mini Z-SpEx by 8-13 dB, a strong system by more). It assumes the output is at the
  mixture's level, as ``mixture_fit`` (the default output level of SI-SDR-trained systems) leaves it; with ``peak`` or
  ``none`` the threshold moves with the output's gain. Where the target is not in the recording at all, the
  extractor's output is whoever it picked, at whatever level it picked them.
* ``speaker``: the cosine similarity of the output's segment to the enrollment, both embedded by resemblyzer
  (``tsekit.pretrained.speaker``, as scoring uses it); present above a threshold (default 0.6).
  It does not depend on the output's level, but a segment shorter than resemblyzer's 1.6 s partials is embedded
  from little speech.

The default is ``speaker``: on two synthetic conversation sets of the mini corpus's test speakers with the mini
Z-SpEx (docs/RESULTS.md, ``bench/presence_bench.py``) the two methods were close at their best thresholds
(frame accuracy 0.875 and 0.862 for ``speaker`` at 0.6, 0.830 and 0.879 for ``energy`` at -6 dB, both keeping
97-100% of the target's frames), and ``speaker`` silenced more of the speech of enrolled speakers who were not in
the recording (80-86% against 67-79%).
Both thresholds were chosen there to keep nearly all of the target's speech (silencing the target is worse than
leaving an interferer the extractor already attenuates); the similarity falls off a cliff above 0.62 on those
TTS voices. A segment is decided as a whole, so a segment in which the target and another speaker take turns
without a silence of 100 ms between them is kept or silenced whole.

Gating: the output is multiplied by a gain that is 1 inside the kept segments and 0 elsewhere, with linear ramps
of ``fade`` (10 ms) just outside each kept segment, so that silencing does not click and the kept speech is not
faded (the VAD already widened each segment by 30 ms). ``gate`` works on any block of the output given its
offset, so a caller that streams the output can gate it block by block.

RTTM: one line per kept segment, ``SPEAKER <recording> 1 <onset> <duration> <NA> <NA> target <NA> <NA>`` (seconds,
3 decimals); ``tsekit extract --segments OUT.rttm`` names the recording after the output file's stem, ``tsekit
infer --segments`` after the utterance (the stem of OUT/wav/<utt>.wav) and writes OUT/rttm.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsekit import TsekitError
from tsekit.pretrained.vad import SileroVad, VadSettings, blocks_of

METHODS = ("energy", "speaker")
# a segment holds the target when its score is above: dB of output over mixture; cosine of output to enrollment
DEFAULT_THRESHOLDS = {"energy": -6.0, "speaker": 0.6}
SPEAKER = "target"  # the RTTM's speaker name for the extracted target


@dataclass(frozen=True)
class PresenceSettings:
    """How presence is decided (module docstring); ``threshold`` None is the method's default."""

    method: str = "speaker"
    threshold: float | None = None
    fade: float = 0.01  # seconds of ramp at the edges of kept segments
    vad: VadSettings = field(default_factory=VadSettings)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise TsekitError(f"presence method {self.method!r}: expected one of {', '.join(METHODS)}")
        if self.threshold is None:
            object.__setattr__(self, "threshold", DEFAULT_THRESHOLDS[self.method])


@dataclass
class Presence:
    """What the decision found in one recording: segments in samples, one score and decision each."""

    segments: list[tuple[int, int]]
    scores: list[float]
    kept: list[tuple[int, int]]


def energy_ratio(output: np.ndarray, mixture: np.ndarray) -> float:
    """10 log10(output energy / mixture energy) in dB; -inf for a silent output, +inf for a silent mixture."""
    with np.errstate(divide="ignore"):
        return float(10 * np.log10(np.sum(np.square(output, dtype=np.float64))
                                   / np.sum(np.square(mixture, dtype=np.float64))))


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

    def segments(self, mixture: np.ndarray, rate: int) -> list[tuple[int, int]]:
        """Speech segments of ``mixture`` (samples at ``rate``)."""
        return self.vad.segments(blocks_of(mixture, rate), rate, self.settings.vad)

    def decide(self, output: np.ndarray, mixture: np.ndarray, enrollment: np.ndarray | None, rate: int,
               segments: list[tuple[int, int]] | None = None) -> Presence:
        """Which speech segments of ``mixture`` (found here unless given: the rows of one recording share them)
        hold the target in ``output`` (sliceable, the mixture's length)."""
        if segments is None:
            segments = self.segments(mixture, rate)
        if self.settings.method == "energy":
            scores = [energy_ratio(output[s:e], mixture[s:e]) for s, e in segments]
        else:
            if enrollment is None or not np.any(enrollment):
                raise TsekitError("presence by speaker similarity needs the target's enrollment; this system has "
                                  "none (use the energy method)")
            reference = self.encoder.embed(np.asarray(enrollment, dtype=np.float32), rate)
            # an all-zero output segment embeds as NaN: its similarity is NaN, and NaN is not above any threshold
            scores = [float(np.dot(self.encoder.embed(np.asarray(output[s:e], dtype=np.float32), rate), reference))
                      for s, e in segments]
        kept = [segment for segment, score in zip(segments, scores, strict=True) if score > self.settings.threshold]
        return Presence(segments, scores, kept)

    def __call__(self, output: np.ndarray, mixture: np.ndarray, enrollment: np.ndarray | None, rate: int,
                 rttm: str | os.PathLike, recording: str) -> np.ndarray:
        """``output`` silenced where the target is absent; where it is present written to ``rttm`` (atomically)."""
        presence = self.decide(output, mixture, enrollment, rate)
        write_rttm(rttm, recording, presence.kept, rate)
        return gate(output, presence.kept, rate, self.settings.fade)


def gate(block: np.ndarray, kept: list[tuple[int, int]], rate: int, fade: float = 0.01,
         offset: int = 0) -> np.ndarray:
    """``block`` (samples ``offset`` onwards of an output) times the gain of ``kept`` (module docstring)."""
    ramp = max(1, round(fade * rate))
    positions = np.arange(offset, offset + len(block), dtype=np.float64)
    gain = np.zeros(len(block))
    # only the segments whose ramps reach into the block (kept is sorted and disjoint)
    first = bisect.bisect_left([e for _, e in kept], offset - ramp)
    for start, end in kept[first:]:
        if start - ramp >= offset + len(block):
            break
        # 1 inside, falling linearly to 0 over `ramp` samples on either side
        rise = (positions - (start - ramp)) / ramp
        fall = ((end - 1 + ramp) - positions) / ramp
        gain = np.maximum(gain, np.clip(np.minimum(rise, fall), 0, 1))
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
