"""Speaker-embedding front ends that condition a TSE model on the enrollment: waveform -> one vector per example.

Three kinds, chosen by name with :func:`build_speaker_embedder`:

* ``resemblyzer``: resemblyzer's GE2E d-vector (256-d, L2-normalised). Its
  weights ship inside the package, so it works offline; audio is prepared
  exactly as the speaker-similarity metric prepares it
  (:class:`tsekit.pretrained.speaker.SpeakerEncoder`), at any input rate.
* ``wespeaker_onnx``: a WeSpeaker speaker model exported to ONNX (the DDTSE
  paper uses ResNet34 trained on VoxCeleb), run with onnxruntime on CPU on
  WeSpeaker's own features (16 kHz, int16-scaled Kaldi fbank, mean-normalised).
* ``learned``: log-mel + the SpEx+ ResNet speaker encoder, trained jointly
  with the TSE model.

The two pretrained kinds are ``frozen``: no gradient, and their weights are
kept out of ``state_dict()`` (a plain attribute, loaded lazily), so a TSE
checkpoint stays small and loads whether or not the encoder has been loaded.
They run one example at a time on CPU, so each distinct enrollment is embedded
once per process and cached in memory, keyed by a hash of its valid samples:
training sees the same enrollment file every epoch, and the encoder then runs
once per file, not once per step. An entry costs about 1 KB (a 256-d float32
vector, its 16-byte key and dict overhead), so 100k distinct enrollments hold
about 0.1 GB; the cache stops growing at ``cache_limit`` entries (for
training that crops enrollments at random, where nothing ever repeats).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tsekit import TsekitError
from tsekit.models.layers.speaker import SpeakerEncoder as ResNetSpeakerEncoder

SPEAKER_ENCODERS = ("resemblyzer", "wespeaker_onnx", "learned")

RESEMBLYZER_DIM = 256
WESPEAKER_RATE = 16000
FBANK_BINS = 80
LEARNED_HIDDEN = 512  # SpEx+'s speaker_hidden
LOG_FLOOR = 1e-6  # power floor of the learned front end's log-mel
MIN_N_FFT = 512  # 80 mel bins at 8 kHz need a finer FFT than 25 ms gives (else empty filters)
WESPEAKER_ZOO = "https://github.com/wenet-e2e/wespeaker/blob/master/docs/pretrained.md"


def _floor2(seconds: float) -> str:
    """Seconds rounded down to 0.01, so a length just short of the minimum never prints as equal to it."""
    return f"{math.floor(seconds * 100 + 1e-9) / 100:.2f}"


class SpeakerEmbedder(nn.Module):
    """(B, T) enrollment waveforms + valid lengths (B,) -> (B, dim) float32 speaker embeddings.

    Subclasses set ``dim``, ``min_seconds`` and ``frozen`` and implement
    ``_embed``; this base class checks shapes and enrollment lengths.
    """

    kind = ""  # the name in SPEAKER_ENCODERS, used in messages
    dim: int  # embedding size
    min_seconds: float  # shortest enrollment it accepts
    frozen: bool  # pretrained: no gradient, not in state_dict, embeddings cached

    def __init__(self, sample_rate: int, dim: int, min_seconds: float) -> None:
        super().__init__()
        if sample_rate <= 0:
            raise TsekitError(f"speaker encoder {self.kind}: sample rate must be positive, got {sample_rate}")
        if not min_seconds > 0:
            raise TsekitError(f"speaker encoder {self.kind}: min_seconds must be positive, got {min_seconds}")
        self.sample_rate = sample_rate
        self.dim = dim
        self.min_seconds = float(min_seconds)
        self.frozen = False

    def check_length(self, num_samples: int, what: str) -> None:
        """Raise a one-line TsekitError naming ``what`` if an enrollment of ``num_samples`` is too short to embed.

        Called up front by inference for every enrollment file, so a short
        one is reported by name before any audio is processed.
        """
        seconds = num_samples / self.sample_rate
        if seconds < self.min_seconds:
            raise TsekitError(
                f"{what}: enrollment of {_floor2(seconds)} s is shorter than the {self.min_seconds:.2f} s "
                f"the {self.kind} speaker encoder needs"
            )

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Embeddings of zero-padded enrollments ``wav`` (B, T); ``lengths`` (B,) are the valid samples (all if None).

        Each example's embedding depends on its valid samples only.
        """
        if wav.dim() != 2:
            raise ValueError(f"speaker embedder needs (batch, samples) audio, got shape {tuple(wav.shape)}")
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long)
        counts = [int(n) for n in lengths.tolist()]
        if len(counts) != wav.shape[0] or any(n < 0 or n > wav.shape[1] for n in counts):
            raise ValueError(f"lengths {counts} do not fit audio of shape {tuple(wav.shape)}")
        if not counts:
            return torch.zeros(0, self.dim, device=wav.device)
        shortest = min(range(len(counts)), key=counts.__getitem__)
        self.check_length(counts[shortest], f"batch example {shortest}")
        return self._embed(wav, counts)

    def _embed(self, wav: Tensor, counts: list[int]) -> Tensor:
        raise NotImplementedError


class FrozenEmbedder(SpeakerEmbedder):
    """A pretrained encoder run per example on CPU, with the per-enrollment cache (see the module docstring).

    The encoder lives in ``_model``, a plain attribute (not a submodule),
    created by ``_load`` on first use and dropped when the module is pickled
    or deep-copied (an EMA copy, DDP spawn): an onnxruntime session cannot be
    pickled, and the copy reloads it lazily.
    """

    cache_limit = 500_000  # entries; about 0.5 GB

    def __init__(self, sample_rate: int, dim: int, min_seconds: float) -> None:
        super().__init__(sample_rate, dim, min_seconds)
        self.frozen = True
        self._model: Any = None
        self._cache: dict[bytes, np.ndarray] = {}
        self.cache_hits = 0
        self.cache_misses = 0

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_model"] = None
        return state

    def _load(self) -> Any:
        raise NotImplementedError

    def loaded(self) -> Any:
        """The pretrained encoder, loaded on first use."""
        if self._model is None:
            self._model = self._load()
        return self._model

    def identity(self) -> tuple[str, str]:
        """(what the config names it by, sha256 of its weights): how a packaged model records and checks it."""
        raise NotImplementedError

    def _embed_one(self, samples: np.ndarray) -> np.ndarray:
        """float32 embedding (dim,) of one enrollment's valid, non-silent samples."""
        raise NotImplementedError

    def _embed(self, wav: Tensor, counts: list[int]) -> Tensor:
        audio = wav.detach().to("cpu", torch.float32).numpy()
        rows = [self._cached(np.ascontiguousarray(audio[index, :count]), index) for index, count in enumerate(counts)]
        return torch.from_numpy(np.stack(rows)).to(wav.device)

    def _cached(self, samples: np.ndarray, index: int) -> np.ndarray:
        """Embedding of one enrollment from the cache, or computed and cached; ``index`` names it in errors."""
        key = hashlib.blake2b(samples.tobytes(), digest_size=16).digest()
        embedding = self._cache.get(key)
        if embedding is not None:
            self.cache_hits += 1
            return embedding
        self.cache_misses += 1
        self.loaded()
        embedding = self._embed_one(samples) if samples.any() else None
        if embedding is None or not np.isfinite(embedding).all():
            raise TsekitError(f"batch example {index}: enrollment is silent; the speaker encoder finds no voice")
        if len(self._cache) < self.cache_limit:
            self._cache[key] = embedding
        return embedding


class ResemblyzerEmbedder(FrozenEmbedder):
    """resemblyzer's GE2E d-vector through the speaker-similarity metric's encoder (same audio preparation)."""

    kind = "resemblyzer"

    def _load(self) -> Any:
        from tsekit.pretrained.speaker import SpeakerEncoder

        return SpeakerEncoder()

    def identity(self) -> tuple[str, str]:
        return self.kind, self.loaded().weights_sha256()

    def _embed_one(self, samples: np.ndarray) -> np.ndarray:
        # NaN when the encoder finds no voice; the caller turns that into the user error
        return self._model.embed(samples, self.sample_rate)


class WespeakerOnnxEmbedder(FrozenEmbedder):
    """A WeSpeaker ONNX speaker model on WeSpeaker's features; ``dim`` is read from the model's output.

    The session is single-threaded: enrollments are short, and data-loader or
    scorer processes run in parallel beside it.
    """

    kind = "wespeaker_onnx"

    def __init__(self, sample_rate: int, onnx_path: str, dim: int, min_seconds: float) -> None:
        super().__init__(sample_rate, dim, min_seconds)
        self.onnx_path = str(onnx_path)
        self._model = self._load()
        probe = np.random.default_rng(0).standard_normal(sample_rate).astype(np.float32) * 0.1
        found = self._embed_one(probe).size
        if found != dim:
            raise TsekitError(f"{self.onnx_path}: the WeSpeaker model gives {found}-d embeddings, but dim is {dim}")

    def identity(self) -> tuple[str, str]:
        from tsekit.checkpoint import file_sha256

        self.loaded()  # a missing file is its one-line error
        return self.onnx_path, file_sha256(self.onnx_path)

    def _load(self) -> Any:
        if not Path(self.onnx_path).is_file():
            raise TsekitError(
                f"{self.onnx_path}: WeSpeaker ONNX model not found (download voxceleb_resnet34.onnx from the "
                f"WeSpeaker model zoo, {WESPEAKER_ZOO}, and give its path as speaker_onnx)"
            )
        try:
            import onnxruntime
        except ImportError as error:
            message = "the wespeaker_onnx speaker encoder needs onnxruntime (pip install 'tsekit[metrics]')"
            raise TsekitError(message) from error
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        return onnxruntime.InferenceSession(self.onnx_path, options, providers=["CPUExecutionProvider"])

    def features(self, samples: np.ndarray) -> np.ndarray:
        """(frames, 80) float32 fbank of one enrollment, computed as WeSpeaker computes it (mean-normalised)."""
        import torchaudio

        wave = torch.from_numpy(np.asarray(samples, dtype=np.float32)).unsqueeze(0)
        if self.sample_rate != WESPEAKER_RATE:
            wave = torchaudio.functional.resample(wave, self.sample_rate, WESPEAKER_RATE)
        feats = torchaudio.compliance.kaldi.fbank(
            wave * (1 << 15), num_mel_bins=FBANK_BINS, frame_length=25, frame_shift=10, dither=0.0,
            sample_frequency=WESPEAKER_RATE, window_type="hamming",
        )  # fmt: skip
        return (feats - feats.mean(dim=0)).numpy().astype(np.float32)

    def _embed_one(self, samples: np.ndarray) -> np.ndarray:
        session = self._model
        feats = self.features(samples)[np.newaxis]
        output = session.run(None, {session.get_inputs()[0].name: feats})[0]
        return np.asarray(output, dtype=np.float32).reshape(-1)


class LearnedEmbedder(SpeakerEmbedder):
    """Log-mel + SpEx+'s ResNet speaker encoder, trained with the TSE model.

    Frames are cut without centring (``center=False``), so every valid frame
    lies inside the valid samples and a padded example embeds exactly as it
    does alone (in eval mode; see :mod:`tsekit.models.layers.speaker`).
    """

    kind = "learned"

    def __init__(self, sample_rate: int, dim: int, min_seconds: float) -> None:
        super().__init__(sample_rate, dim, min_seconds)
        import torchaudio

        self.win_length = round(0.025 * sample_rate)
        self.hop_length = round(0.010 * sample_rate)
        self.n_fft = max(MIN_N_FFT, 1 << (self.win_length - 1).bit_length())
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=self.n_fft, win_length=self.win_length, hop_length=self.hop_length,
            n_mels=FBANK_BINS, center=False,
        )  # fmt: skip
        self.encoder = ResNetSpeakerEncoder(in_channels=FBANK_BINS, hidden=LEARNED_HIDDEN, embed_dim=dim)
        needed = (self.n_fft + (self.encoder.min_frames - 1) * self.hop_length) / sample_rate
        if self.min_seconds < needed:
            raise TsekitError(
                f"speaker encoder learned: min_seconds {self.min_seconds:.2f} is below the {needed:.2f} s "
                "its pooling needs"
            )

    def _embed(self, wav: Tensor, counts: list[int]) -> Tensor:
        with torch.autocast(wav.device.type, enabled=False):
            features = torch.log(self.mel(wav.float()).clamp(min=LOG_FLOOR))  # (B, 80, frames)
            frames = torch.tensor([(n - self.n_fft) // self.hop_length + 1 for n in counts], device=wav.device)
            return self.encoder(features, frames).float()


def build_speaker_embedder(kind: str, sample_rate: int, dim: int = 256, onnx_path: str | None = None,
                           min_seconds: float = 1.0) -> SpeakerEmbedder:  # fmt: skip
    """The speaker embedder ``kind`` (one of SPEAKER_ENCODERS) for audio at ``sample_rate``.

    ``dim`` must match what a pretrained encoder gives (256 for resemblyzer,
    the ONNX model's output size for wespeaker_onnx), so a config that sizes
    the TSE model's conditioning layers from it fails here, not mid-training.
    """
    if kind == "resemblyzer":
        if dim != RESEMBLYZER_DIM:
            raise TsekitError(f"the resemblyzer speaker encoder gives {RESEMBLYZER_DIM}-d embeddings, but dim is {dim}")
        return ResemblyzerEmbedder(sample_rate, dim, min_seconds)
    if kind == "wespeaker_onnx":
        if not onnx_path:
            raise TsekitError(
                f"the wespeaker_onnx speaker encoder needs speaker_onnx, the path of a WeSpeaker ONNX model "
                f"(voxceleb_resnet34.onnx from {WESPEAKER_ZOO})"
            )
        return WespeakerOnnxEmbedder(sample_rate, onnx_path, dim, min_seconds)
    if kind == "learned":
        return LearnedEmbedder(sample_rate, dim, min_seconds)
    raise TsekitError(f"unknown speaker encoder {kind!r}; choose one of {', '.join(SPEAKER_ENCODERS)}")
