"""Signal helpers for building mixtures on the fly (dynamic mixing, partly silent targets during training).

Pure numpy functions, no randomness: the caller draws offsets and ratios, so
the same draw always gives the same mixture and a test can recompute it.
"""

from __future__ import annotations

import numpy as np

SILENT = 1e-20  # energy below this counts as silence (float64 sum of squares)


def energy(signal: np.ndarray) -> float:
    """Sum of squares in float64 (float32 sums lose precision on long signals)."""
    return float(np.sum(np.square(signal, dtype=np.float64)))


def gain_for_ratio(reference: np.ndarray, other: np.ndarray, ratio_db: float) -> float:
    """The gain g making 10*log10(E(reference) / E(g * other)) equal ``ratio_db`` (an SIR or SNR).

    A silent ``other`` gets gain 0 (nothing to scale); a silent ``reference``
    gets gain 1, so a chunk where the target is quiet still carries the
    interferer at its own level instead of being muted or blown up.
    """
    reference_energy, other_energy = energy(reference), energy(other)
    if other_energy < SILENT:
        return 0.0
    if reference_energy < SILENT:
        return 1.0
    return float(np.sqrt(reference_energy / (other_energy * 10.0 ** (ratio_db / 10.0))))


def place(signal: np.ndarray, frames: int, offset: int) -> np.ndarray:
    """``signal`` inside zeros of length ``frames``, starting at ``offset`` (cut at the end)."""
    out = np.zeros(frames, dtype=np.float32)
    piece = signal[: max(0, frames - offset)]
    out[offset : offset + len(piece)] = piece
    return out


def loop_to_length(signal: np.ndarray, frames: int) -> np.ndarray:
    """``signal`` repeated end to end and cut to ``frames`` samples (noise shorter than the speech)."""
    repeats = -(-frames // len(signal))
    return np.tile(signal, repeats)[:frames].astype(np.float32, copy=False)


def silence_outside(target: np.ndarray, mixture: np.ndarray, start: int, length: int,
                    ramp: int) -> tuple[np.ndarray, np.ndarray]:
    """A target that speaks in samples [start, start + length) only, and the mixture rebuilt around it.

    The target is zeroed outside the span, faded in and out over ``ramp`` samples inside it (a raised cosine:
    a hard cut would put a click into both signals that no speaker's onset has). The mixture keeps everything
    else it held (interference and noise, ``mixture - target``) and gains the kept target, so it stays target
    plus the rest: where the target is silent only the others are heard.
    """
    window = np.zeros(len(target), dtype=np.float32)
    window[start : start + length] = 1.0
    ramp = min(ramp, length // 2)
    if ramp:
        rise = (0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)).astype(np.float32)
        window[start : start + ramp] = rise
        window[start + length - ramp : start + length] = rise[::-1]
    kept = (target * window).astype(np.float32, copy=False)
    return kept, ((mixture - target) + kept).astype(np.float32, copy=False)
