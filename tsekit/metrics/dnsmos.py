"""DNSMOS P.835 (SIG, BAK, OVRL) and P.808 MOS, with the onnx models that the ``speechmos`` package ships.

DNSMOS (Reddy et al., ICASSP 2022) is a non-intrusive quality predictor: it
needs only the estimate, no reference. The procedure below is the one of
Microsoft's ``dnsmos_local.py`` as ``speechmos.dnsmos`` runs it, so the numbers
equal ``speechmos.dnsmos.run(samples, 16000)``:

* audio shorter than 9.01 s is repeated (doubled until long enough);
* 9.01 s segments hop by 1 s; each segment goes through the P.835 model
  (raw waveform) and the P.808 model (120-band log-mel of the segment minus
  its last 160 samples);
* the P.835 raw outputs are mapped by the published cubic/quadratic
  polynomials (non-personalised fit); segment scores are averaged.

We reimplement that small procedure instead of calling speechmos because
speechmos builds its onnxruntime sessions itself, with all cores per session;
the scorer runs one process per job, so each :class:`Dnsmos` owns two
single-threaded sessions (``tsekit.pretrained.dnsmos``) created once in ``__init__``.

DNSMOS is defined on 16 kHz audio. Higher rates (22.05, 44.1, 48 kHz) are
resampled down to 16 kHz, as the official script does (the models only see
0-8 kHz anyway). Lower rates (8 kHz) are rejected: upsampling band-limited
speech would be scored as bad speech, a property of the data, not of the
system under test; :func:`dnsmos_supported` tells the scorer to skip them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tsekit.pretrained.dnsmos import load_dnsmos

MODEL_RATE = 16000
SEGMENT_SECONDS = 9.01  # length the P.835 model was trained on (the official INPUT_LENGTH)
MEL_BANDS = 120
MEL_FRAME = 320
MEL_HOP = 160
KEYS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")

# Non-personalised polynomial fits of the raw P.835 outputs to MOS (highest power first).
SIG_FIT = (-0.08397278, 1.22083953, 0.0052439)
BAK_FIT = (-0.13166888, 1.60915514, -0.39604546)
OVRL_FIT = (-0.06766283, 1.11546468, 0.04602535)


def dnsmos_supported(rate: int) -> bool:
    """True when DNSMOS can score audio at ``rate``: 16 kHz, or a higher rate that is resampled down."""
    return rate >= MODEL_RATE


class Dnsmos:
    """DNSMOS scorer; create once per process and call once per utterance."""

    def __init__(self, threads: int = 1) -> None:
        import librosa

        self._librosa = librosa
        self._p835, self._p808 = load_dnsmos(threads)
        self._fits = [np.poly1d(fit) for fit in (SIG_FIT, BAK_FIT, OVRL_FIT)]

    def __call__(self, samples: np.ndarray, rate: int) -> dict[str, float]:
        """Scores of one mono utterance: keys ``dnsmos_sig``, ``dnsmos_bak``, ``dnsmos_ovrl``, ``dnsmos_p808``.

        Raises ValueError for rates below 16 kHz, multi-channel or non-finite
        audio. Empty audio has no quality: every score is NaN. All-zero audio
        is scored as DNSMOS scores it (finite, low OVRL), like speechmos.
        Samples are not required to lie in [-1, 1] (an estimate may overshoot
        slightly; speechmos would refuse it).
        """
        audio = np.asarray(samples)
        if audio.ndim != 1:
            raise ValueError(f"DNSMOS needs mono audio, got an array of shape {audio.shape}")
        if not dnsmos_supported(rate):
            raise ValueError(f"DNSMOS is defined at {MODEL_RATE} Hz; audio at {rate} Hz is not scored")
        if not np.issubdtype(audio.dtype, np.floating):
            raise ValueError(f"DNSMOS needs float samples, got {audio.dtype}")
        if not np.isfinite(audio).all():
            raise ValueError("DNSMOS input contains NaN or infinite samples")
        if audio.size == 0:
            return {key: math.nan for key in KEYS}
        if rate != MODEL_RATE:
            audio = self._librosa.resample(audio, orig_sr=rate, target_sr=MODEL_RATE)
        return self._score(audio)

    def _score(self, audio: np.ndarray) -> dict[str, float]:
        segment_length = int(SEGMENT_SECONDS * MODEL_RATE)
        while len(audio) < segment_length:
            audio = np.append(audio, audio)
        # The float expressions below are the official ones, kept as they are so segment
        # boundaries (and thus the scores) match speechmos sample for sample.
        n_segments = int(np.floor(len(audio) / MODEL_RATE) - SEGMENT_SECONDS) + 1
        per_segment: list[list[Any]] = [[], [], [], []]  # sig, bak, ovrl, p808
        for index in range(n_segments):
            start = int(index * MODEL_RATE)
            segment = audio[start : int((index + SEGMENT_SECONDS) * MODEL_RATE)]
            if len(segment) < segment_length:
                continue
            waveform = np.asarray(segment, dtype=np.float32)[np.newaxis, :]
            mel = np.asarray(self._log_mel(segment[:-MEL_HOP]), dtype=np.float32)[np.newaxis, :, :]
            raw = self._p835.run(None, {"input_1": waveform})[0][0]  # raw sig, bak, ovrl
            for values, fit, value in zip(per_segment[:3], self._fits, raw, strict=True):
                values.append(fit(value))
            per_segment[3].append(self._p808.run(None, {"input_1": mel})[0][0][0])
        return {key: float(np.mean(values)) for key, values in zip(KEYS, per_segment, strict=True)}

    def _log_mel(self, segment: np.ndarray) -> np.ndarray:
        """(frames, 120) log-mel the P.808 model expects: dB relative to the segment's peak, scaled."""
        librosa = self._librosa
        power = librosa.feature.melspectrogram(
            y=segment, sr=MODEL_RATE, n_fft=MEL_FRAME + 1, hop_length=MEL_HOP, n_mels=MEL_BANDS
        )
        return ((librosa.power_to_db(power, ref=np.max) + 40) / 40).T
