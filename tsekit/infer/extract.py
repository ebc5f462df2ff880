"""Extracting one recording with a trained experiment, in overlapping chunks when it is long, in bounded memory.

Chunking: a model's memory grows with the input, so inputs longer than
``chunk_seconds`` are cut into chunks of that length that overlap by
``overlap_seconds`` (at most half a chunk); the last chunk is aligned to the
end of the input so every chunk has the full length. The chunk outputs are
blended with a linear cross-fade: each chunk's weight rises linearly from
near 0 to 1 across an overlap it shares with its left neighbour and falls
back across the one it shares with its right neighbour (1 elsewhere, and at
the ends of the input); the output is the weighted sum divided by the sum of
the weights, so any overlap, including the irregular last one, blends to a
convex combination and a model whose output does not depend on position
gives exactly its unchunked output.

Speaker consistency: every chunk is given the same whole enrollment, so a
system's speaker embedding, a deterministic function of the enrollment, is
the same for every chunk of a recording of any length (a system computes it
inside its forward, so it is recomputed per chunk rather than cached: caching
would need a hook in every system, for a speaker encoder that costs little
beside the separator on 4-16 s chunks).

Any length (``_blend``): chunks run ``CHUNK_BATCH`` at a time in time order,
and the output before the next batch's first chunk is final once a batch is
blended (no later chunk reaches back before it), so only one batch's span of
the mixture and of the blending sums is ever held. ``extract_to_file``
(``tsekit extract``, ``tsekit infer``) reads the mixture (and an estimate to
refine) forward in blocks of ``BLOCK_FRAMES`` samples
(``tsekit.data.audio.AudioBlocks``) and writes the final output pieces
unscaled, as float64, to a temporary file beside the output while it
accumulates the output level's statistics (``tsekit.infer.level.LevelStats``);
a second pass scales that file block by block into the 16-bit output
(``audio_writer``: a temporary renamed at the end). With a presence decision
(``--segments``), the decision reads that file and the mixture once more in
blocks before it (``tsekit.infer.presence``), and the second pass silences
where the target is absent as it writes. Memory is one batch of
chunks, whatever the recording's length; the chunks, their batches and the
blending are those of ``extract_waveform`` (arrays in memory, for
``tsekit.load_model``), so the samples are the same, and the file is the same
byte for byte when the output fits one batch (one piece: the level's gain is
then computed exactly as on the whole signal; with several, the summed dot
products may differ in the last bit). ``chunk_seconds`` 0 (never chunk)
holds the whole recording, as the model must see it whole.

Output level: the blended output of the whole utterance is rescaled once
(``tsekit.infer.level``; the experiment's ``infer.output_level`` unless the
caller says otherwise), so chunks never get gains of their own.

Transcripts: a system with ``TSEModel.transcribes`` (target-speaker ASR) also
returns the target speaker's words (``with_text``); chunk transcripts are joined
in time order, and ``tsekit extract`` writes them beside the wav (``transcript_path``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tsekit import TsekitError, warn
from tsekit.data.enroll import ENROLLMENT_FILES
from tsekit.infer.level import LevelStats, apply_gain, set_output_level
from tsekit.jobs import atomic_open, temporary_name, torch_device
from tsekit.train.config import default_chunk_seconds
from tsekit.train.experiment import find_checkpoint, load_experiment

if TYPE_CHECKING:
    from tsekit.data.audio import AudioBlocks
    from tsekit.infer.presence import BlockSource, Presence
    from tsekit.models.registry import TSEModel

CHUNK_BATCH = 8  # chunks run through the model together
BLOCK_FRAMES = 1 << 18  # samples read or written at a time by extract_to_file (16 s at 16 kHz)


def chunk_starts(length: int, chunk: int, overlap: int) -> list[int]:
    """Chunk start samples: a hop of ``chunk - overlap``, the last chunk ending at ``length``."""
    if length <= chunk:
        return [0]
    hop = chunk - overlap
    starts = list(range(0, length - chunk, hop))
    return starts + [length - chunk]


def _fade_weight(starts: list[int], i: int, chunk: int) -> np.ndarray:
    """Blending weight of chunk ``i``: linear ramps across its overlaps with its neighbours, 1 elsewhere."""
    left = starts[i - 1] + chunk - starts[i] if i > 0 else 0  # samples shared with the previous chunk
    right = starts[i] + chunk - starts[i + 1] if i + 1 < len(starts) else 0  # with the next one
    return _ramps(chunk, left, right)


@functools.lru_cache(maxsize=8)
def _ramps(chunk: int, left: int, right: int) -> np.ndarray:
    """The weight of a chunk sharing ``left`` and ``right`` samples with its neighbours (read-only). Cached: the
    chunks of a recording have a few shapes only (the first, the last two, all others alike), and a long recording
    has thousands of chunks."""
    weight = np.ones(chunk, dtype=np.float64)
    if left:
        weight[:left] = np.arange(1, left + 1) / (left + 1)
    if right:
        weight[chunk - right:] = np.minimum(weight[chunk - right:], np.arange(right, 0, -1) / (right + 1))
    weight.flags.writeable = False
    return weight


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


class _Window:
    """The samples [start, end) of a signal that arrives in blocks, asked for with starts that never decrease: it
    keeps only what is at or after the last start asked for, so it holds at most the span asked for plus a block."""

    def __init__(self, blocks: Iterable[np.ndarray], what: str):
        self.blocks, self.what = iter(blocks), what
        self.buffer = np.zeros(0, dtype=np.float32)
        self.offset = 0  # the sample index of buffer[0]

    def get(self, start: int, end: int) -> np.ndarray:
        self.buffer, self.offset = self.buffer[start - self.offset :], start
        pieces, have = [self.buffer], len(self.buffer)
        while have < end - start:
            block = next(self.blocks, None)
            if block is None:
                raise TsekitError(f"{self.what}: the audio ends after {start + have} samples, before its header's "
                                  "length (a file cut short?)")
            pieces.append(block)
            have += len(block)
        if len(pieces) > 1:
            self.buffer = np.concatenate(pieces)
        return self.buffer[: end - start]


def _chunking(length: int, rate: int, chunk_seconds: float | None, overlap_seconds: float) -> tuple[int, int]:
    """(chunk, overlap) in samples; a chunk of the whole input when ``chunk_seconds`` is None or 0 or the input is
    not longer than a chunk."""
    chunk = int(round(chunk_seconds * rate)) if chunk_seconds else 0
    if chunk <= 0 or length <= chunk:
        return length, 0
    return chunk, min(int(round(overlap_seconds * rate)), chunk // 2)


def _blend(model: TSEModel, mixture: _Window, length: int, enrollments: dict[str, torch.Tensor], chunk: int,
           overlap: int, device: torch.device, initial: _Window | None, passes: int, start: float,
           texts: list[str] | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The blended output (float64) in consecutive final pieces covering [0, ``length``), each with the mixture
    under it (float32): one piece per batch of ``CHUNK_BATCH`` chunks (module docstring).

    ``initial``: another system's estimate to refine, or None. ``texts``: a list that the chunks' transcripts are
    appended to in time order (a transcribing model), or None.
    """
    starts = chunk_starts(length, chunk, overlap)
    span = min(length, chunk + (CHUNK_BATCH - 1) * (chunk - overlap))  # the most one batch covers
    # the weighted sum and the sum of weights from sample ``done`` on, allocated once (no page faults per batch)
    total, weight_sum = np.zeros(span, dtype=np.float64), np.zeros(span, dtype=np.float64)
    done = 0  # the output before this sample was yielded
    for first in range(0, len(starts), CHUNK_BATCH):
        group = starts[first : first + CHUNK_BATCH]
        end = group[-1] + chunk
        mix = mixture.get(done, end)  # done is the group's first start

        def chunks(signal: np.ndarray, group: list[int] = group, done: int = done) -> torch.Tensor:
            return torch.stack([torch.from_numpy(signal[s - done : s - done + chunk]) for s in group]).to(device)

        outputs, chunk_texts = _run(model, chunks(mix), enrollments,
                                    None if initial is None else chunks(initial.get(done, end)), passes, start,
                                    texts is not None)
        if texts is not None:
            texts += chunk_texts
        for i, (output, s) in enumerate(zip(outputs, group, strict=True)):
            weight = _fade_weight(starts, first + i, chunk)
            total[s - done : s - done + chunk] += weight * output
            weight_sum[s - done : s - done + chunk] += weight
        final = starts[first + CHUNK_BATCH] if first + CHUNK_BATCH < len(starts) else length
        yield total[: final - done] / weight_sum[: final - done], mix[: final - done]
        kept = end - final  # what the next batch's first chunk overlaps moves to the front
        for sums in (total, weight_sum):
            sums[:kept] = sums[final - done : end - done]
            sums[kept:] = 0.0
        done = final


def _enrollment_tensors(enroll: np.ndarray | dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """The enrollment signals by batch key, each (1, Te) on ``device``; checked to be mono."""
    enrollments = {k: np.asarray(v, dtype=np.float32)
                   for k, v in (enroll if isinstance(enroll, dict) else {"enroll": enroll}).items()}
    if any(v.ndim != 1 for v in enrollments.values()):
        shapes = ", ".join(f"{k} {v.shape}" for k, v in enrollments.items())
        raise TsekitError(f"expected mono enrollment audio, got {shapes}")
    return {k: torch.from_numpy(v).to(device).unsqueeze(0) for k, v in enrollments.items()}


@torch.no_grad()
def extract_waveform(model: TSEModel, mixture: np.ndarray, enroll: np.ndarray | dict[str, np.ndarray],
                     sample_rate: int, chunk_seconds: float | None = None, overlap_seconds: float = 1.0,
                     device: str | torch.device | None = None, output_level: str = "none",
                     peak: float = 0.9, refine: np.ndarray | None = None, refine_passes: int = 1,
                     refine_start: float = 1.0, with_text: bool = False) -> np.ndarray | tuple[np.ndarray, str]:
    """The target speech (float32, the mixture's length) of a mono mixture given a mono enrollment, all in memory
    (``extract_to_file`` streams a file through the same chunks).

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
    if mixture.ndim != 1:
        raise TsekitError(f"expected mono audio, got mixture {mixture.shape}")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    initial = None
    if refine is not None:
        refine = np.asarray(refine, dtype=np.float32)
        if refine.shape != mixture.shape:
            raise TsekitError(f"the estimate to refine has {refine.shape[-1]} samples, the mixture {len(mixture)}")
        initial = _Window([refine], "the estimate to refine")
    texts: list[str] | None = [] if with_text else None
    pieces = _blend(model, _Window([mixture], "the mixture"), len(mixture), _enrollment_tensors(enroll, device),
                    *_chunking(len(mixture), sample_rate, chunk_seconds, overlap_seconds), device, initial,
                    refine_passes, refine_start, texts)
    estimate = set_output_level(np.concatenate([piece for piece, _ in pieces]), mixture, output_level, peak)
    return (estimate, join_transcripts(texts)) if with_text else estimate


class AudioProgress:
    """A progress bar on stderr in seconds of audio extracted, with the real-time factor so far (wall seconds per
    second of audio: below 1 is faster than real time). tqdm's ``disable=None``: shown only when stderr is a
    terminal, so the logs of recipe jobs hold no bar updates. A context manager."""

    def __init__(self, total_seconds: float, desc: str, done_seconds: float = 0.0):
        from tqdm import tqdm

        self.bar = tqdm(total=total_seconds, initial=done_seconds, desc=desc, disable=None,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s of audio "
                                   "[{elapsed}<{remaining}{postfix}]")
        self.started, self.seconds = time.perf_counter(), 0.0

    def __enter__(self) -> AudioProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def advance(self, seconds: float) -> None:
        self.seconds += seconds
        self.bar.set_postfix_str(f"RTF {(time.perf_counter() - self.started) / self.seconds:.2f}", refresh=False)
        self.bar.update(seconds)


@torch.no_grad()
def extract_to_file(model: TSEModel, mixture: AudioBlocks, enroll: dict[str, np.ndarray], out: str | os.PathLike,
                    chunk_seconds: float | None = None, overlap_seconds: float = 1.0, output_level: str = "none",
                    peak: float = 0.9, refine: AudioBlocks | None = None, refine_passes: int = 1,
                    refine_start: float = 1.0, transcript: Path | None = None,
                    progress: AudioProgress | None = None,
                    presence: Callable[[BlockSource, BlockSource], Presence] | None = None) -> None:
    """Extract a recording of any length from ``mixture`` (an open ``AudioBlocks``, mono at the model's rate)
    into ``out`` (16-bit PCM in the format its suffix names, atomic), in bounded memory (module docstring).

    The options are ``extract_waveform``'s; ``refine`` is an open ``AudioBlocks`` of the estimate to refine (as
    long as the mixture). ``transcript`` (a transcribing model, no ``refine``): the file the joined chunk
    transcripts are written to (atomically), before ``out`` is, so an ``out`` that exists has its transcript.
    ``progress`` advances by the seconds of audio done. The model runs on its parameters' device.
    ``presence`` (``--segments``: ``tsekit.infer.presence.PresenceGate`` with its other arguments bound): the
    leveled output and the mixture, each as a ``BlockSource`` (a pass over the temporary file, a new read of the
    mixture) -> the decision whose ``gate`` silences the output block by block as it is written: with it, the
    temporary file is read twice and the mixture once more, and memory stays bounded.
    """
    from tsekit.data.audio import audio_writer

    if transcript is not None and refine is not None:
        raise TsekitError("a transcript and refine cannot be combined: refining another system's estimate "
                          "(--refine) gives no transcript")
    device = next(model.parameters()).device
    rate, length = mixture.rate, mixture.frames
    stats = LevelStats(output_level, peak)
    texts: list[str] | None = [] if transcript is not None else None
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    unscaled = temporary_name(Path(out))  # beside the output: the same disk, left as .*.tmp if killed
    try:
        with open(unscaled, "wb") as f:
            for estimate, mix in _blend(model, _Window(mixture, mixture.name), length,
                                        _enrollment_tensors(enroll, device),
                                        *_chunking(length, rate, chunk_seconds, overlap_seconds), device,
                                        None if refine is None else _Window(refine, refine.name), refine_passes,
                                        refine_start, texts):
                stats.add(estimate, mix)
                estimate.tofile(f)
                if progress is not None:
                    progress.advance(len(estimate) / rate)
        if transcript is not None:
            with atomic_open(transcript) as f:
                f.write(join_transcripts(texts) + "\n")
        gain = stats.gain()

        def leveled() -> Iterator[np.ndarray]:
            with open(unscaled, "rb") as f:
                while (block := np.fromfile(f, dtype=np.float64, count=BLOCK_FRAMES)).size:
                    yield apply_gain(block, gain)

        decision = None if presence is None else presence(leveled, mixture.again)
        with audio_writer(out, rate) as write:
            offset = 0
            for block in leveled():
                write(block if decision is None else decision.gate(block, offset))
                offset += len(block)
    finally:
        unscaled.unlink(missing_ok=True)


def _check_mono(entry: str, what: str, file_rate: int, channels: int, rate: int) -> None:
    if file_rate != rate:
        raise TsekitError(f"{what}: {entry}: {file_rate} Hz audio, but the model was trained at {rate} Hz "
                          f"(resample it, or prepare the data at {rate} Hz)")
    if channels != 1:
        raise TsekitError(f"{what}: {entry}: {channels} channels, expected mono audio")


def load_mono(entry: str, what: str, rate: int) -> np.ndarray:
    """Samples of one scp entry, checked to be mono at the model's sample rate (an enrollment: short)."""
    from tsekit.data.audio import load_audio

    samples, file_rate = load_audio(entry, what)
    _check_mono(entry, what, file_rate, 1 if samples.ndim == 1 else samples.shape[1], rate)
    return samples


def open_mono(entry: str, what: str, rate: int) -> AudioBlocks:
    """One scp entry to be read in blocks of ``BLOCK_FRAMES`` (a mixture of any length), checked from its header
    to be mono at the model's sample rate; a context manager that holds the file open."""
    from tsekit.data.audio import AudioBlocks

    blocks = AudioBlocks(entry, what, BLOCK_FRAMES)
    _check_mono(entry, what, blocks.rate, blocks.channels, rate)
    return blocks


def transcript_path(out: str | os.PathLike) -> Path:
    """Where ``tsekit extract`` writes the transcript of a transcribing model: ``out`` with suffix ``.txt``."""
    return Path(out).with_suffix(".txt")


def _option(key: str) -> str:
    """The command-line option of an enrollment's batch key: enroll_pos -> --enroll-pos."""
    return "--" + key.replace("_", "-")


def check_enrollment_keys(model: TSEModel, given: Iterable[str], spell: Callable[[str], str] = str) -> None:
    """The enrollments given (batch keys) are those ``model`` needs; ``spell`` names a key in the message (an option
    of ``tsekit extract``, or the key itself for ``tsekit.load_model``)."""
    wanted = sorted(model.needs & set(ENROLLMENT_FILES))
    if sorted(given) != wanted:
        raise TsekitError(f"model {model.registry_name} is enrolled with "
                          f"{' and '.join(map(spell, wanted)) or 'no enrollment'}; "
                          f"given: {' '.join(map(spell, sorted(given))) or 'none'}")


def check_enrollments(model: TSEModel, enrollments: dict[str, np.ndarray], rate: int, names: dict[str, str]) -> None:
    """Each enrollment is one ``model`` can use (``check_enrollment``: a one-line error naming it by ``names``), and a
    warning for one that is short or silent (``enrollment_doubt``)."""
    from tsekit.data.enroll import enrollment_doubt

    for key, samples in enrollments.items():
        model.check_enrollment(len(samples), names[key])
        if doubt := enrollment_doubt(samples, rate):
            warn(f"{names[key]}: {doubt}")


def extract_file(exp_dir: str | os.PathLike, mixture: str, enroll: str | dict[str, str], out: str | os.PathLike,
                 device: str = "cpu", checkpoint: str | os.PathLike | None = None,
                 chunk_seconds: float | None = None, overlap_seconds: float = 1.0,
                 output_level: str | None = None, refine: str | None = None, refine_passes: int = 1,
                 refine_start: float = 1.0, model_params: dict | None = None,
                 segments: str | os.PathLike | None = None, presence: str = "energy",
                 presence_threshold: float | None = None,
                 presence_window: float | None = None) -> tuple[Path, Path | None]:
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
    (``tsekit.infer.presence``, decided by ``presence``: energy or speaker, above ``presence_threshold`` over windows
    of ``presence_window`` seconds, None for the method's defaults); the recording id is ``out``'s stem.
    """
    from tsekit.data.audio import audio_format

    audio_format(out)  # a name it cannot write is refused before the work (which also refuses OUT.txt)
    gate = None
    if segments is not None:  # a missing VAD file is refused before the work too
        from tsekit.infer.presence import PresenceGate, PresenceSettings, target_enrollment

        gate = PresenceGate(PresenceSettings(presence, presence_threshold, presence_window))
    path = find_checkpoint(exp_dir, checkpoint)
    model, cfg = load_experiment(exp_dir, path, torch_device(device), model_params)
    enroll = enroll if isinstance(enroll, dict) else {"enroll": enroll}
    check_enrollment_keys(model, enroll, _option)
    rate = cfg.data.sample_rate
    if chunk_seconds is None:
        chunk_seconds = default_chunk_seconds(cfg, model)
    with contextlib.ExitStack() as stack:
        mix = stack.enter_context(open_mono(mixture, "--mix", rate))
        enrollments = {k: load_mono(path, _option(k), rate) for k, path in enroll.items()}
        check_enrollments(model, enrollments, rate, {k: f"{_option(k)} {path}" for k, path in enroll.items()})
        initial = None if refine is None else stack.enter_context(open_mono(refine, "--refine", rate))
        if initial is not None and initial.frames != mix.frames:
            raise TsekitError(f"--refine {refine}: {initial.frames} samples, the mixture {mix.frames}: "
                              "not an estimate of this mixture")
        transcript = transcript_path(out) if model.transcribes and initial is None else None
        progress = stack.enter_context(AudioProgress(mix.frames / rate, f"extracting {Path(mixture).name}"))
        extract_to_file(model, mix, enrollments, out, chunk_seconds, overlap_seconds,
                        output_level=output_level or cfg.infer.output_level, peak=cfg.infer.peak, refine=initial,
                        refine_passes=refine_passes, refine_start=refine_start, transcript=transcript,
                        progress=progress, presence=None if gate is None else functools.partial(
                            gate, enrollment=target_enrollment(enrollments), rate=rate, rttm=segments,
                            recording=Path(out).stem))
    return Path(out), transcript
