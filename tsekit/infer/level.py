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
blended, so a long input has no level jumps at chunk borders.
"""

from __future__ import annotations

import numpy as np

from tsekit import TsekitError
from tsekit.train.config import OUTPUT_LEVELS

TINY = 1e-12  # an all-zero estimate keeps gain 1 (and stays silent)


def mixture_fit_gain(estimate: np.ndarray, mixture: np.ndarray) -> float:
    """Least-squares gain of ``estimate`` to ``mixture`` (same length, mono), 1 for a silent estimate."""
    estimate = np.asarray(estimate, dtype=np.float64)
    mixture = np.asarray(mixture, dtype=np.float64)
    energy = float(np.dot(estimate, estimate))
    if energy < TINY:
        return 1.0
    return float(np.dot(estimate, mixture)) / energy


def set_output_level(estimate: np.ndarray, mixture: np.ndarray, output_level: str, peak: float = 0.9) -> np.ndarray:
    """``estimate`` rescaled as ``output_level`` says (module docstring); float32, same shape."""
    if output_level == "none":
        gain = 1.0
    elif output_level == "mixture_fit":
        gain = mixture_fit_gain(estimate, mixture)
    elif output_level == "peak":
        largest = float(np.max(np.abs(estimate), initial=0.0))
        gain = peak / largest if largest > 0 else 1.0
    else:
        raise TsekitError(f"unknown output level {output_level!r}; choose one of {', '.join(OUTPUT_LEVELS)}")
    return (np.asarray(estimate, dtype=np.float64) * gain).astype(np.float32)
