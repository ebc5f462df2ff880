"""Silero VAD v6 (Silero Team, MIT): where speech is, from its onnx model run with onnxruntime.

The model file ``silero_vad.onnx`` comes from the registry package ``silero-vad`` 6.2.3; ``tools/install.sh``
unpacks it into ``<sys.prefix>/share/tsekit/silero_vad/`` without installing the package (which declares torch).
The model reads 16 kHz audio in windows of 512 new samples, each preceded by the last 64 samples of the previous
window (its context), or 8 kHz audio in windows of 256 + 32; it carries an LSTM state from window to window and
gives each window a speech probability. Audio at another rate is resampled to 16 kHz first (``scipy``'s
``resample_poly``, in blocks, so that a long recording never has to be held whole).

Probabilities become speech segments (``speech_segments``) with the hysteresis of Silero's own
``get_speech_timestamps``, whose defaults are tsekit's (``VadSettings``): speech starts at the first window with
probability >= ``threshold`` (0.5); it ends where the probability first fell below ``neg_threshold`` (0.35) once
it has stayed below ``threshold`` for ``min_silence`` (100 ms) since then; segments no longer than ``min_speech``
(250 ms) are dropped; the rest are widened by ``pad`` (30 ms) on each side, and neighbours closer than twice the
pad meet in the middle of their gap. Boundaries are therefore quantised to the window (32 ms).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsekit import TsekitError

VAD_DIR = ("share", "tsekit", "silero_vad")
VAD_FILE = "silero_vad.onnx"
REQUIREMENT = "silero-vad==6.2.3"
WINDOW = {16000: 512, 8000: 256}  # new samples per window at the model's two rates
CONTEXT = {16000: 64, 8000: 32}  # samples of the previous window the model sees again
BLOCK_SECONDS = 10.0  # audio resampled and scored per step: bounds memory for any length
STATE_SHAPE = (2, 1, 128)


def vad_model_path() -> Path:
    """Where ``tools/install.sh`` puts ``silero_vad.onnx`` in the running environment."""
    return Path(sys.prefix).joinpath(*VAD_DIR, VAD_FILE)


@dataclass(frozen=True)
class VadSettings:
    """The hysteresis that turns window probabilities into segments (module docstring); seconds."""

    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_speech: float = 0.25
    min_silence: float = 0.1
    pad: float = 0.03


def vad_rate(rate: int) -> int:
    """The rate the model runs at for audio at ``rate``: 8 kHz audio natively, anything else resampled to 16 kHz."""
    return rate if rate in WINDOW else 16000


class BlockResampler:
    """``resample_poly`` of a stream given in blocks of any size, equal (to float rounding) to resampling it whole.

    The stream is cut into pieces of a whole number of resampling periods (``rate_in / gcd`` input samples give
    exactly ``rate_out / gcd`` output samples), each resampled with ``margin`` input samples of its neighbours on
    either side (zeros before the start and after the end, as ``resample_poly`` pads) and cut back to its own
    output, so no piece sees an edge the whole signal does not have.
    """

    def __init__(self, rate_in: int, rate_out: int, block_seconds: float = BLOCK_SECONDS) -> None:
        g = math.gcd(rate_in, rate_out)
        self.up, self.down = rate_out // g, rate_in // g
        period = self.down
        # resample_poly's filter reaches 10 * max(up, down) samples of the upsampled signal each side
        reach = math.ceil(10 * max(self.up, self.down) / self.up) + 1
        self.margin = period * math.ceil(reach / period)
        self.piece = period * max(1, round(block_seconds * rate_in / period))
        self._buffer = np.zeros(self.margin, dtype=np.float64)  # the zeros before the start
        self._seen = 0  # input samples given
        self._written = 0  # output samples returned

    def _resample(self, samples: np.ndarray) -> np.ndarray:
        from scipy.signal import resample_poly

        return resample_poly(samples, self.up, self.down)

    def feed(self, block: np.ndarray) -> np.ndarray:
        """The output that ``block`` (and what came before) completes."""
        self._buffer = np.concatenate([self._buffer, np.asarray(block, dtype=np.float64)])
        self._seen += len(block)
        pieces = []
        while len(self._buffer) >= self.piece + 2 * self.margin:
            out = self._resample(self._buffer[: self.piece + 2 * self.margin])
            skip = self.margin * self.up // self.down
            pieces.append(out[skip : skip + self.piece * self.up // self.down])
            self._buffer = self._buffer[self.piece :]
        return self._emit(pieces)

    def finish(self) -> np.ndarray:
        """The rest of the output: in all, ``ceil(samples * rate_out / rate_in)`` samples, as ``resample_poly``."""
        total = -(-self._seen * self.up // self.down)
        out = self._resample(np.concatenate([self._buffer, np.zeros(self.margin)]))
        skip = self.margin * self.up // self.down
        return self._emit([out[skip : skip + total - self._written]])

    def _emit(self, pieces: list[np.ndarray]) -> np.ndarray:
        out = np.concatenate(pieces) if pieces else np.zeros(0)
        self._written += len(out)
        return out.astype(np.float32)


class SileroVad:
    """The Silero VAD onnx model on the CPU, one intra-op thread (it is small; the extraction has the cores)."""

    def __init__(self, path: str | Path | None = None, threads: int = 1) -> None:
        path = Path(path) if path else vad_model_path()
        if not path.is_file():
            raise TsekitError(f"Silero VAD not found: {path} (run `make install`, or `pip download --no-deps "
                              f"{REQUIREMENT} -d DIR` and `unzip -j DIR/silero_vad-6.2.3-*.whl "
                              f"silero_vad/data/{VAD_FILE} -d {path.parent}`)")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types, with multi-line messages
            raise TsekitError(f"{path}: not an onnx model ({str(err).splitlines()[0]})") from None

    def probabilities(self, blocks: Iterable[np.ndarray], rate: int) -> Iterator[np.ndarray]:
        """Speech probabilities of mono audio given as consecutive blocks at ``rate``: one per model window
        (``WINDOW[vad_rate(rate)]`` samples at ``vad_rate(rate)``), yielded as the blocks complete them; the
        last window is completed with zeros."""
        model_rate = vad_rate(rate)
        window, context = WINDOW[model_rate], CONTEXT[model_rate]
        resampler = BlockResampler(rate, model_rate) if model_rate != rate else None
        state = np.zeros(STATE_SHAPE, dtype=np.float32)
        sr = np.array(model_rate, dtype=np.int64)
        # the previous window's last `context` samples, then the samples not yet scored
        pending = np.zeros(context, dtype=np.float32)

        def score(samples: np.ndarray) -> np.ndarray:
            nonlocal state, pending
            pending = np.concatenate([pending, samples.astype(np.float32)])
            count = (len(pending) - context) // window
            probs = np.empty(count, dtype=np.float32)
            for i in range(count):
                frame = pending[i * window : i * window + context + window][None]
                prob, state = self.session.run(None, {"input": frame, "state": state, "sr": sr})
                probs[i] = prob[0, 0]
            pending = pending[count * window :]
            return probs

        for block in blocks:
            block = np.asarray(block, dtype=np.float32)
            if block.ndim != 1:
                raise TsekitError(f"the VAD needs mono audio, got a block of shape {block.shape}")
            yield score(resampler.feed(block) if resampler else block)
        rest = resampler.finish() if resampler else np.zeros(0, dtype=np.float32)
        rest = np.concatenate([rest, np.zeros(-(len(pending) - context + len(rest)) % window, dtype=np.float32)])
        yield score(rest)

    def segments(self, blocks: Iterable[np.ndarray], rate: int,
                 settings: VadSettings = VadSettings()) -> list[tuple[int, int]]:
        """Speech segments ``(start, end)`` in samples at ``rate`` of mono audio given as blocks (an array is
        cut into blocks by ``blocks_of``)."""
        length = 0

        def counted() -> Iterator[np.ndarray]:
            nonlocal length
            for block in blocks:
                length += len(block)
                yield block

        probs = np.concatenate(list(self.probabilities(counted(), rate)))
        model_rate = vad_rate(rate)
        found = speech_segments(probs, WINDOW[model_rate], model_rate, math.ceil(length * model_rate / rate),
                                settings)
        # back to the input's samples
        return [(min(length, round(s * rate / model_rate)), min(length, round(e * rate / model_rate)))
                for s, e in found]


def blocks_of(samples: np.ndarray, rate: int, seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """An array as consecutive blocks of ``seconds``."""
    step = max(1, int(seconds * rate))
    for start in range(0, len(samples), step):
        yield samples[start : start + step]


def speech_segments(probs: np.ndarray, window: int, rate: int, length: int,
                    settings: VadSettings = VadSettings()) -> list[tuple[int, int]]:
    """Speech segments ``(start, end)`` in samples at ``rate`` from one speech probability per ``window`` samples
    of audio ``length`` samples long (the hysteresis of the module docstring)."""
    min_speech = settings.min_speech * rate
    min_silence = settings.min_silence * rate
    pad = round(settings.pad * rate)
    found = []
    start = silent_from = None  # start of the speech being followed; where the probability fell below neg
    for i, prob in enumerate(probs):
        here = i * window
        if start is None:
            if prob >= settings.threshold:
                start = here
            continue
        if prob >= settings.threshold:
            silent_from = None
        elif prob < settings.neg_threshold:
            # a probability between the two thresholds neither starts nor breaks the silence
            silent_from = here if silent_from is None else silent_from
            if here - silent_from >= min_silence:
                if silent_from - start > min_speech:
                    found.append((start, silent_from))
                start = silent_from = None
    if start is not None and length - start > min_speech:
        found.append((start, length))
    padded = [[max(0, s - pad), min(length, e + pad)] for s, e in found]
    for left, right, (_, end), (begin, _) in zip(padded, padded[1:], found, found[1:], strict=False):
        if begin - end < 2 * pad:  # the pads would overlap: meet in the middle of the gap
            left[1] = right[0] = end + (begin - end) // 2
    return [(s, e) for s, e in padded]
