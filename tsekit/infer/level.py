"""The level of an extracted waveform (config ``infer.output_level``, ``tsekit infer --output-level``).

A system trained with a scale-invariant loss (SI-SDR) may output the target at
any level: SpEx+-style models come out 10-20 dB too quiet or too loud, which
makes SNR meaningless, the output unpleasant beside the mixture, and a poor
start for a system that refines another's output. Three choices:

* ``mixture_fit``: multiply the estimate by the least-squares gain to the
  mixture, g = <e, y> / <e, e> (the g minimising |y - g e|^2). When the
  estimate is the target s and y = s + v with v uncorrelated with s, then
  <e, y> = <s, s> and g = 1: the target's own level. Errors in the estimate
  that resemble the interference pull g up a little; errors uncorrelated with
  the mixture pull it down.
* ``peak``: scale so that the largest absolute sample is the configured peak.
* ``none``: the model's output as it is (systems trained with SNR).

The gain is computed once per utterance, on the whole output after chunks are
blended, so a long input has no level jumps at chunk borders. ``LevelStats``
gathers what the gain needs (<e, y> and <e, e>, or the largest |e|) piece by
piece, so a recording of any length is leveled without holding its output:
``tsekit extract`` writes the unscaled output to a temporary file while it
accumulates them, then scales it (``apply_gain``) into the final file. Summed
over pieces, the dot products differ from the whole signal's only by rounding
(relative 1e-15); one piece gives exactly the whole signal's gain.
"""

from __future__ import annotations

import numpy as np

from tsekit import TsekitError
from tsekit.train.config import OUTPUT_LEVELS

TINY = 1e-12  # an all-zero estimate keeps gain 1 (and stays silent)


class LevelStats:
    """What ``output_level``'s gain needs of an estimate, accumulated over consecutive pieces (``add``); ``gain``."""

    def __init__(self, output_level: str, peak: float = 0.9):
        if output_level not in OUTPUT_LEVELS:
            raise TsekitError(f"unknown output level {output_level!r}; choose one of {', '.join(OUTPUT_LEVELS)}")
        self.output_level, self.peak = output_level, peak
        self.cross = 0.0  # <e, y>
        self.energy = 0.0  # <e, e>
        self.largest = 0.0  # max |e|

    def add(self, estimate: np.ndarray, mixture: np.ndarray) -> None:
        """One more piece of the estimate and the mixture under it (same length, mono)."""
        estimate = np.asarray(estimate, dtype=np.float64)
        if self.output_level == "mixture_fit":
            self.cross += float(np.dot(estimate, np.asarray(mixture, dtype=np.float64)))
            self.energy += float(np.dot(estimate, estimate))
        elif self.output_level == "peak":
            self.largest = max(self.largest, float(np.max(np.abs(estimate), initial=0.0)))

    def gain(self) -> float:
        """The one gain for the whole estimate (1 for ``none`` and for a silent estimate)."""
        if self.output_level == "mixture_fit" and self.energy >= TINY:
            return self.cross / self.energy
        if self.output_level == "peak" and self.largest > 0:
            return self.peak / self.largest
        return 1.0


def mixture_fit_gain(estimate: np.ndarray, mixture: np.ndarray) -> float:
    """Least-squares gain of ``estimate`` to ``mixture`` (same length, mono), 1 for a silent estimate."""
    stats = LevelStats("mixture_fit")
    stats.add(estimate, mixture)
    return stats.gain()


def apply_gain(estimate: np.ndarray, gain: float) -> np.ndarray:
    """``estimate`` x ``gain`` in float64, as float32."""
    return (np.asarray(estimate, dtype=np.float64) * gain).astype(np.float32)


def set_output_level(estimate: np.ndarray, mixture: np.ndarray, output_level: str, peak: float = 0.9) -> np.ndarray:
    """``estimate`` rescaled as ``output_level`` says (module docstring); float32, same shape."""
    stats = LevelStats(output_level, peak)
    stats.add(estimate, mixture)
    return apply_gain(estimate, stats.gain())
