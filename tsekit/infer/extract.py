"""Extracting one waveform with a trained experiment, in overlapping chunks when it is long.

Chunking (``extract_waveform``): a model's memory grows with the input, so
inputs longer than ``chunk_seconds`` are cut into chunks of that length that
overlap by ``overlap_seconds`` (at most half a chunk); the last chunk is
aligned to the end of the input so every chunk has the full length. The
chunk outputs are blended with a linear cross-fade: each chunk's weight
rises linearly from near 0 to 1 across an overlap it shares with its left
neighbour and falls back across the one it shares with its right
neighbour (1 elsewhere, and at the ends of the input); the output is the
weighted sum divided by the sum of the weights, so any overlap, including
the irregular last one, blends to a convex combination and a model whose
output does not depend on position gives exactly its unchunked output. The
enrollment is given whole to every chunk.

Output level: the blended output of the whole utterance is then rescaled once
(``tsekit.infer.level``; the experiment's ``infer.output_level`` unless the
caller says otherwise), so chunks never get gains of their own.

Transcripts: a system with ``TSEModel.transcribes`` (target-speaker ASR) also
returns the target speaker's words (``with_text``); chunk transcripts are joined
in time order, and ``tsekit extract`` writes them beside the wav (``transcript_path``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tsekit import TsekitError, warn
from tsekit.data.enroll import ENROLLMENT_FILES
from tsekit.infer.level import set_output_level
from tsekit.jobs import torch_device
from tsekit.train.config import default_chunk_seconds
from tsekit.train.experiment import find_checkpoint, load_experiment

if TYPE_CHECKING:
    from tsekit.models.registry import TSEModel

CHUNK_BATCH = 8  # chunks run through the model together


def chunk_starts(length: int, chunk: int, overlap: int) -> list[int]:
    """Chunk start samples: a hop of ``chunk - overlap``, the last chunk ending at ``length``."""
    if length <= chunk:
        return [0]
    hop = chunk - overlap
    starts = list(range(0, length - chunk, hop))
    return starts + [length - chunk]


def _fade_weights(starts: list[int], chunk: int) -> list[np.ndarray]:
    """Per-chunk blending weights: linear ramps across the overlaps with neighbours, 1 elsewhere."""
    weights = []
    for i, start in enumerate(starts):
        weight = np.ones(chunk, dtype=np.float64)
        if i > 0:
            left = starts[i - 1] + chunk - start  # samples shared with the previous chunk
            weight[:left] = np.arange(1, left + 1) / (left + 1)
        if i + 1 < len(starts):
            right = start + chunk - starts[i + 1]  # shared with the next chunk
            weight[chunk - right:] = np.minimum(weight[chunk - right:], np.arange(right, 0, -1) / (right + 1))
        weights.append(weight)
    return weights


def _run(model: TSEModel, mixtures: torch.Tensor, enrollments: dict[str, torch.Tensor],
         initial: torch.Tensor | None, passes: int, start: float,
         with_text: bool = False) -> tuple[np.ndarray, list[str] | None]:
    """(model outputs (B, T) as float64 numpy, cut or zero-padded to the input length; transcripts or None).

    ``initial``: estimates of another system to refine (B, T), or None to extract.
    ``with_text``: extract with ``model.extract_with_text``, which also returns each row's transcript.
    """
    batch = mixtures.shape[0]
    enrollments = {k: v.expand(batch, -1) for k, v in enrollments.items()}
    texts = None
    if with_text:
        estimate, texts = model.extract_with_text(mixtures, enrollments)
    elif initial is None:
        estimate = model.extract_enrolled(mixtures, enrollments)
    else:
        estimate = model.refine(mixtures, enrollments, initial, passes, start)
    length = mixtures.shape[-1]
    if estimate.shape[-1] < length:
        estimate = torch.nn.functional.pad(estimate, (0, length - estimate.shape[-1]))
    return estimate[..., :length].double().cpu().numpy(), texts


def join_transcripts(texts: list[str]) -> str:
    """Chunk transcripts in time order as one line: single spaces, empty ones dropped."""
    return " ".join(" ".join(texts).split())


@torch.no_grad()
def extract_waveform(model: TSEModel, mixture: np.ndarray, enroll: np.ndarray | dict[str, np.ndarray],
                     sample_rate: int, chunk_seconds: float | None = None, overlap_seconds: float = 1.0,
                     device: str | torch.device | None = None, output_level: str = "none",
                     peak: float = 0.9, refine: np.ndarray | None = None, refine_passes: int = 1,
                     refine_start: float = 1.0, with_text: bool = False) -> np.ndarray | tuple[np.ndarray, str]:
    """The target speech (float32, the mixture's length) of a mono mixture given a mono enrollment.

    ``enroll`` is one enrollment, or the model's enrollment signals by batch key
    (``{"enroll_pos": ..., "enroll_neg": ...}`` for the pos/neg systems).
    ``chunk_seconds`` None or 0 runs the whole input at once; else inputs
    longer than it go through overlapping chunks (module docstring).
    ``device`` defaults to the model's. ``output_level`` and ``peak``: ``tsekit.infer.level.set_output_level``.
    ``refine``: another system's estimate (the mixture's length) that the model improves instead of
    extracting from scratch (``TSEModel.refine``, ``refine_passes`` times from diffusion time
    ``refine_start``); it is chunked with the mixture.
    ``with_text`` (models with ``transcribes``): returns ``(waveform, transcript)``, extracting with
    ``TSEModel.extract_with_text``; the transcript is the chunks' transcripts in time order joined with
    single spaces, so a word spoken inside an overlap of two chunks may appear twice. It cannot be
    combined with ``refine``.
    """
    if with_text and refine is not None:
        raise TsekitError("with_text and refine cannot be combined: refining another system's estimate "
                          "(--refine) gives no transcript")
    mixture = np.asarray(mixture, dtype=np.float32)
    enrollments = {k: np.asarray(v, dtype=np.float32)
                   for k, v in (enroll if isinstance(enroll, dict) else {"enroll": enroll}).items()}
    if mixture.ndim != 1 or any(v.ndim != 1 for v in enrollments.values()):
        shapes = ", ".join(f"{k} {v.shape}" for k, v in enrollments.items())
        raise TsekitError(f"expected mono audio, got mixture {mixture.shape} and {shapes}")
    if device is None:
        device = next(model.parameters()).device
    mix = torch.from_numpy(mixture).to(device)
    initial = None
    if refine is not None:
        refine = np.asarray(refine, dtype=np.float32)
        if refine.shape != mixture.shape:
            raise TsekitError(f"the estimate to refine has {refine.shape[-1]} samples, the mixture {len(mixture)}")
        initial = torch.from_numpy(refine).to(device)
    enroll_t = {k: torch.from_numpy(v).to(device).unsqueeze(0) for k, v in enrollments.items()}
    length = len(mixture)
    chunk = int(round(chunk_seconds * sample_rate)) if chunk_seconds else 0
    if chunk <= 0 or length <= chunk:
        outputs, texts = _run(model, mix.unsqueeze(0), enroll_t, None if initial is None else initial.unsqueeze(0),
                              refine_passes, refine_start, with_text)
        estimate = set_output_level(outputs[0], mixture, output_level, peak)
        return (estimate, join_transcripts(texts)) if with_text else estimate
    overlap = min(int(round(overlap_seconds * sample_rate)), chunk // 2)
    starts = chunk_starts(length, chunk, overlap)
    weights = _fade_weights(starts, chunk)
    total = np.zeros(length, dtype=np.float64)
    weight_sum = np.zeros(length, dtype=np.float64)
    chunk_texts: list[str] = []
    for first in range(0, len(starts), CHUNK_BATCH):
        group = starts[first : first + CHUNK_BATCH]
        initial_chunks = None if initial is None else torch.stack([initial[s : s + chunk] for s in group])
        outputs, texts = _run(model, torch.stack([mix[s : s + chunk] for s in group]), enroll_t, initial_chunks,
                              refine_passes, refine_start, with_text)
        chunk_texts += texts or []
        for output, start, weight in zip(outputs, group, weights[first : first + CHUNK_BATCH], strict=True):
            total[start : start + chunk] += weight * output
            weight_sum[start : start + chunk] += weight
    estimate = set_output_level(total / weight_sum, mixture, output_level, peak)
    return (estimate, join_transcripts(chunk_texts)) if with_text else estimate


def load_mono(entry: str, what: str, rate: int) -> np.ndarray:
    """Samples of one scp entry, checked to be mono at the model's sample rate."""
    from tsekit.data.audio import load_audio

    samples, file_rate = load_audio(entry, what)
    if file_rate != rate:
        raise TsekitError(f"{what}: {entry}: {file_rate} Hz audio, but the model was trained at {rate} Hz "
                          f"(resample it, or prepare the data at {rate} Hz)")
    if samples.ndim != 1:
        raise TsekitError(f"{what}: {entry}: {samples.shape[1]} channels, expected mono audio")
    return samples


def transcript_path(out: str | os.PathLike) -> Path:
    """Where ``tsekit extract`` writes the transcript of a transcribing model: ``out`` with suffix ``.txt``."""
    return Path(out).with_suffix(".txt")


def extract_file(exp_dir: str | os.PathLike, mixture: str, enroll: str | dict[str, str], out: str | os.PathLike,
                 device: str = "cpu", checkpoint: str | os.PathLike | None = None,
                 chunk_seconds: float | None = None, overlap_seconds: float = 1.0,
                 output_level: str | None = None, refine: str | None = None, refine_passes: int = 1,
                 refine_start: float = 1.0, model_params: dict | None = None,
                 segments: str | os.PathLike | None = None, presence: str = "speaker",
                 presence_threshold: float | None = None) -> tuple[Path, Path | None]:
    """``tsekit extract``: one mixture file + its enrollment file(s) -> ``out`` (16-bit PCM, atomic, in the format
    its suffix names: .wav, .flac, ...; any other suffix is refused before the model loads).

    ``refine``: another system's estimate of the target in this mixture, which the model improves
    (``refine_passes`` times) instead of extracting from scratch.

    ``enroll`` is one enrollment file, or files by batch key (``enroll_pos``, ``enroll_neg``); they must be
    the enrollments the model needs. ``chunk_seconds`` None takes the config's default; 0 never chunks (as
    ``tsekit infer``). ``output_level`` None takes the experiment's ``infer.output_level``.

    A model with ``transcribes`` also writes its transcript of the target speaker, one line, to
    ``transcript_path(out)`` (``OUT.txt``, atomically), except when refining (which gives no transcript).
    ``model_params``: as ``load_experiment``'s. Returns (the wav, the transcript file or None).

    ``segments``: an RTTM file to write where the target speaks, the output silenced elsewhere
    (``tsekit.infer.presence``, decided by ``presence``: energy or speaker, above ``presence_threshold``, None for the
    method's default); the recording id is ``out``'s stem.
    """
    from tsekit.data.audio import audio_format, write_audio
    from tsekit.data.enroll import enrollment_doubt
    from tsekit.jobs import atomic_open

    audio_format(out)  # a name it cannot write is refused before the work (which also refuses OUT.txt)
    gate = None
    if segments is not None:  # a missing VAD file is refused before the work too
        from tsekit.infer.presence import PresenceGate, PresenceSettings

        gate = PresenceGate(PresenceSettings(presence, presence_threshold))
    path = find_checkpoint(exp_dir, checkpoint)
    model, cfg = load_experiment(exp_dir, path, torch_device(device), model_params)
    enroll = enroll if isinstance(enroll, dict) else {"enroll": enroll}
    wanted = sorted(model.needs & set(ENROLLMENT_FILES))
    if sorted(enroll) != wanted:
        options = " and ".join("--" + k.replace("_", "-") for k in wanted)
        raise TsekitError(f"model {cfg.model.name} is enrolled with {options or 'no enrollment'}; "
                          f"given: {' '.join('--' + k.replace('_', '-') for k in sorted(enroll)) or 'none'}")
    rate = cfg.data.sample_rate
    mixture_samples = load_mono(mixture, "--mix", rate)
    enrollments = {k: load_mono(path, "--" + k.replace("_", "-"), rate) for k, path in enroll.items()}
    for key, samples in enrollments.items():
        what = f"--{key.replace('_', '-')} {enroll[key]}"
        model.check_enrollment(len(samples), what)
        if doubt := enrollment_doubt(samples, rate):
            warn(f"{what}: {doubt}")
    initial = None if refine is None else load_mono(refine, "--refine", rate)
    if initial is not None and len(initial) != len(mixture_samples):
        raise TsekitError(f"--refine {refine}: {len(initial)} samples, the mixture {len(mixture_samples)}: "
                          "not an estimate of this mixture")
    with_text = model.transcribes and initial is None
    if chunk_seconds is None:
        chunk_seconds = default_chunk_seconds(cfg)
    result = extract_waveform(model, mixture_samples, enrollments, rate, chunk_seconds, overlap_seconds,
                              output_level=output_level or cfg.infer.output_level, peak=cfg.infer.peak,
                              refine=initial, refine_passes=refine_passes, refine_start=refine_start,
                              with_text=with_text)
    estimate, transcript = result, None
    if with_text:
        (estimate, text), transcript = result, transcript_path(out)
        with atomic_open(transcript) as f:
            f.write(text + "\n")
    if gate is not None:
        from tsekit.infer.presence import target_enrollment

        estimate = gate(estimate, mixture_samples, target_enrollment(enrollments), rate, segments, Path(out).stem)
    write_audio(out, estimate, rate)
    return Path(out), transcript
