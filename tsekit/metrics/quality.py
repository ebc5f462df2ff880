"""Perceptual quality and intelligibility of one estimate against its clean reference: PESQ, STOI, ESTOI.

Thin wrappers around the reference implementations (``pesq``: ITU-T P.862
as the ``pesq`` package builds it; ``pystoi``), so the numbers are the ones
other toolkits report. What they add: the PESQ mode follows the sample rate,
other rates are resampled, and a signal the measure cannot score gives NaN
instead of an exception, so one bad utterance does not stop a scoring run
(the scorer counts NaNs).
"""

from __future__ import annotations

import math
import warnings
from math import gcd

import numpy as np

# the sample rate at which PESQ runs when the audio has neither 8 nor 16 kHz
PESQ_RATE = 16000


def _check_pair(estimate: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    est = np.asarray(estimate)
    ref = np.asarray(reference)
    if est.ndim != 1 or ref.ndim != 1:
        raise ValueError(f"expected 1-D signals, got shapes {est.shape} and {ref.shape}")
    if est.shape != ref.shape:
        raise ValueError(f"estimate has {est.size} samples but reference has {ref.size}")
    return est, ref


def pesq_score(estimate: np.ndarray, reference: np.ndarray, rate: int) -> float:
    """PESQ (MOS-LQO, about 1.0 to 4.6) of ``estimate`` against the clean ``reference``.

    Wide-band PESQ (P.862.2, mode 'wb') at 16 kHz, narrow-band (P.862.1,
    mode 'nb') at 8 kHz: the convention of the separation/extraction
    literature (ESPnet, WeSep, Asteroid report these per rate). Other rates
    are resampled to 16 kHz with ``scipy.signal.resample_poly`` and scored
    wide-band, since PESQ is only defined at 8 and 16 kHz.

    At 8 and 16 kHz the arrays are passed unchanged, so the value is exactly
    ``pesq.pesq(rate, reference, estimate, mode)``. NaN when PESQ cannot
    score the pair: a silent (all-zero) estimate or reference, no utterance
    detected, a signal shorter than PESQ's minimum.
    """
    est, ref = _check_pair(estimate, reference)
    if not np.any(est) or not np.any(ref):
        # the pesq package divides by zero on silence and raises a bare ValueError
        return math.nan
    if rate == 16000:
        mode = "wb"
    elif rate == 8000:
        mode = "nb"
    else:
        from scipy.signal import resample_poly

        common = gcd(int(rate), PESQ_RATE)
        up, down = PESQ_RATE // common, int(rate) // common
        est = resample_poly(np.asarray(est, dtype=np.float64), up, down)
        ref = resample_poly(np.asarray(ref, dtype=np.float64), up, down)
        rate, mode = PESQ_RATE, "wb"

    import pesq

    try:
        return float(pesq.pesq(rate, ref, est, mode))
    except pesq.PesqError:  # NoUtterancesError, BufferTooShortError, ...
        return math.nan
    except ValueError:  # rate and mode are valid here, so this is PESQ failing on degenerate audio
        return math.nan


def stoi_score(estimate: np.ndarray, reference: np.ndarray, rate: int, extended: bool = False) -> float:
    """STOI (0 to 1), or with ``extended=True`` ESTOI, of ``estimate`` against the clean ``reference``.

    Exactly ``pystoi.stoi(reference, estimate, rate, extended)`` (pystoi
    resamples to its internal 10 kHz), with one exception: when the
    reference has too little speech for the measure (fewer than 30 frames
    after pystoi drops silent frames) pystoi warns and returns the
    placeholder 1e-5; that becomes NaN here, so it is counted as unscored,
    not averaged in as a near-zero score.
    """
    est, ref = _check_pair(estimate, reference)
    from pystoi import stoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        value = float(stoi(ref, est, rate, extended=extended))
    unscored = False
    for caught_warning in caught:
        if "Not enough STFT frames" in str(caught_warning.message):
            unscored = True
        else:  # pass any other warning on
            warnings.showwarning(caught_warning.message, caught_warning.category,
                                 caught_warning.filename, caught_warning.lineno)  # fmt: skip
    return math.nan if unscored else value
