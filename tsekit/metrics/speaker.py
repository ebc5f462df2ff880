"""Speaker similarity: cosine between speaker embeddings of an estimate and a reference/enrollment.

The embeddings are resemblyzer d-vectors (``tsekit.pretrained.speaker.SpeakerEncoder``); an estimate
without a voice has an all-NaN embedding, and its similarity is NaN.
"""

from __future__ import annotations

import math

import numpy as np


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two embeddings; NaN if either is NaN or has zero length."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in size: {a.size} vs {b.size}")
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if not math.isfinite(norms) or norms == 0.0:
        return math.nan
    return float(np.dot(a, b) / norms)
