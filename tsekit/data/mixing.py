"""Signal helpers for building mixtures on the fly (dynamic mixing during training).

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
