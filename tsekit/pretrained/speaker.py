"""The resemblyzer speaker encoder: d-vectors of speech at any rate, for scoring and for systems.

resemblyzer (a GE2E LSTM speaker encoder, Wan et al. 2018) ships its
pretrained weights inside the package, so the encoder runs offline. Audio is
prepared the way resemblyzer prepares it (``preprocess_wav``): resampled to
16 kHz, quiet audio raised to -30 dBFS, and silences longer than ~0.2 s cut
out with webrtcvad, so pauses do not dilute the voice.

Degenerate input, documented because a TSE estimate can be silent:

* empty or all-zero audio has no speaker: :meth:`SpeakerEncoder.embed`
  returns an all-NaN vector (its similarity to anything is NaN, which the
  scorer writes instead of crashing);
* non-silent audio in which the VAD finds no speech (an estimate that is
  only noise) is embedded untrimmed instead of being dropped, so such an
  estimate gets a real, typically low, similarity rather than vanishing
  from the averages as NaN.
"""

from __future__ import annotations

import warnings

import numpy as np

EMBED_RATE = 16000


class SpeakerEncoder:
    """resemblyzer's VoiceEncoder on CPU; create once per process, then ``embed`` each utterance.

    torch's thread count is left as the process has it; the scorer's workers
    should call ``torch.set_num_threads(1)`` when they run in parallel.
    """

    def __init__(self) -> None:
        with warnings.catch_warnings():
            # resemblyzer imports scipy.ndimage.morphology, deprecated in recent scipy
            warnings.simplefilter("ignore", DeprecationWarning)
            from resemblyzer import VoiceEncoder, audio, hparams

        self._audio = audio
        self._hparams = hparams
        # verbose=False: no "Loaded the voice encoder model" line on stdout
        self._encoder = VoiceEncoder(device="cpu", verbose=False)
        self._encoder.eval()

    def weights_sha256(self) -> str:
        """The hash of the encoder's weights (``tsekit.checkpoint.hash_weights``): which d-vector model this is."""
        from tsekit.checkpoint import hash_weights

        return hash_weights(self._encoder)

    @property
    def size(self) -> int:
        """Embedding dimension (256)."""
        return int(self._hparams.model_embedding_size)

    def embed(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """L2-normalised float32 speaker embedding of mono ``samples`` at ``rate`` Hz (any rate).

        Returns an all-NaN vector for empty or all-zero audio (see the module
        docstring); raises ValueError for non-mono or non-finite input.
        """
        audio = np.asarray(samples, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"speaker embedding needs mono audio, got an array of shape {audio.shape}")
        if not np.isfinite(audio).all():
            raise ValueError("speaker embedding input contains NaN or infinite samples")
        if not audio.any():
            return np.full(self.size, np.nan, dtype=np.float32)
        wav = self._prepare(audio, rate)
        embedding = self._encoder.embed_utterance(wav).astype(np.float32)
        if not np.isfinite(embedding).all():  # every partial embedding was zero after the ReLU
            return np.full(self.size, np.nan, dtype=np.float32)
        return embedding

    def _prepare(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """resemblyzer's ``preprocess_wav``, but keep the audio untrimmed when the VAD keeps nothing."""
        audio_tools = self._audio
        with np.errstate(all="ignore"):
            trimmed = audio_tools.preprocess_wav(audio, source_sr=rate)
        if len(trimmed) > 0:
            return trimmed
        if rate != EMBED_RATE:
            import librosa

            audio = librosa.resample(audio, orig_sr=rate, target_sr=EMBED_RATE)
        return audio_tools.normalize_volume(audio, self._hparams.audio_norm_target_dBFS, increase_only=True)
