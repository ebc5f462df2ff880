"""Codec and Vocoder: what every neural audio codec and mel vocoder implements, published or trained by tsekit.

A `Codec` turns a waveform into a grid of discrete tokens (codebooks x frames) and back, and exposes the
continuous latents its quantiser sees; a `Vocoder` renders a log-mel spectrogram as a waveform. Both work
at their own sample rate. Each class joins the registry (``CODECS``) under a name with `register_codec`;
``tsekit.codec.registry`` looks names up and loads them. `load_pretrained` and `load_weights` read a published
checkpoint with one-line errors.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import ClassVar

import torch

from tsekit import TsekitError, register_class

CODECS: dict[str, type[Codec] | type[Vocoder]] = {}


def register_codec(name: str):
    """Class decorator adding a Codec or Vocoder subclass to the registry under ``name``."""
    return lambda cls: register_class(CODECS, name, cls, (Codec, Vocoder), "codec")


class Codec(torch.nn.Module, abc.ABC):
    """A neural audio codec. Subclasses set the four attributes below in their constructor."""

    registry_name: ClassVar[str] = ""
    random_init: ClassVar[bool] = False  # built by name, its weights are random (the toolkit's own codec)
    path_params: ClassVar[tuple[str, ...]] = ()  # constructor parameters that name files (weights)
    weights_sha256: str | None = None  # set by load_codec (hash_weights)
    sample_rate: int  # Hz of the waveforms encode takes and decode returns
    frame_rate: float  # token frames per second
    num_codebooks: int  # codebooks in use (a bandwidth choice may use fewer than the model has)
    codebook_size: int  # tokens per codebook: indices are in [0, codebook_size)

    @abc.abstractmethod
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveforms (B, T) at ``sample_rate`` -> tokens (B, num_codebooks, F), int64."""

    @abc.abstractmethod
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (B, num_codebooks, F) -> waveforms (B, T) at ``sample_rate``."""

    @abc.abstractmethod
    def latents(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveforms (B, T) -> the continuous frames the quantiser sees (B, D, F)."""

    def check_tokens(self, tokens: torch.Tensor, what: str) -> None:
        """Raise a one-line TsekitError naming ``what`` unless ``tokens`` (K, F) or (B, K, F) fit this codec."""
        if tokens.dtype.is_floating_point or tokens.dim() not in (2, 3):
            raise TsekitError(f"{what}: expected integer tokens (codebooks x frames), got {tokens.dtype} "
                              f"of shape {tuple(tokens.shape)}")
        if tokens.shape[-2] != self.num_codebooks:
            raise TsekitError(f"{what}: {tokens.shape[-2]} codebooks, but codec {self.registry_name} "
                              f"uses {self.num_codebooks}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.codebook_size):
            raise TsekitError(f"{what}: token indices in [{int(tokens.min())}, {int(tokens.max())}], outside "
                              f"[0, {self.codebook_size}) of codec {self.registry_name}")


class Vocoder(torch.nn.Module, abc.ABC):
    """A mel vocoder. Subclasses set the three attributes below and define the mel it inverts."""

    registry_name: ClassVar[str] = ""
    random_init: ClassVar[bool] = False  # built by name, its weights are random (the toolkit's own vocoder)
    path_params: ClassVar[tuple[str, ...]] = ()  # constructor parameters that name files (weights)
    weights_sha256: str | None = None  # set by load_codec (hash_weights)
    sample_rate: int
    n_mels: int
    hop_length: int  # waveform samples per mel frame

    @abc.abstractmethod
    def mel(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveforms (B, T) at ``sample_rate`` -> the log-mel spectrogram the vocoder inverts (B, n_mels, F)."""

    @abc.abstractmethod
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, n_mels, F) -> waveforms (B, F * hop_length) at ``sample_rate``."""

    def check_mel(self, mel: torch.Tensor) -> None:
        """Raise a one-line TsekitError unless ``mel`` is (B, n_mels, F)."""
        if mel.dim() != 3 or mel.shape[1] != self.n_mels:
            raise TsekitError(f"vocoder {self.registry_name}: expected a log-mel (batch, {self.n_mels}, frames), "
                              f"got shape {tuple(mel.shape)}")


def load_pretrained(path: Path, what: str, url: str) -> dict:
    """A pretrained codec's checkpoint (a dict), read with ``weights_only=True`` so it cannot run code.

    One-line errors: an absent file says where to get it (``url``) and that ``weights=PATH`` may name another.
    """
    if not path.is_file():
        raise TsekitError(f"{what} weights not found: {path} (download {url} there, "
                          "or give another file as weights=PATH in the config)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors alike: the file is not a usable checkpoint
        raise TsekitError(f"{path}: cannot load {what} weights ({str(err).splitlines()[0]})") from None
    if not isinstance(checkpoint, dict):
        raise TsekitError(f"{path}: not a {what} checkpoint ({type(checkpoint).__name__}, not a dict)")
    return checkpoint


def load_weights(model: torch.nn.Module, state: dict, path: Path, what: str) -> None:
    """``model.load_state_dict(state)``; its error as one line naming the file (``what``: "an EnCodec ...")."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # load_state_dict lists the missing/unexpected keys on the lines after the first
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[min(1, len(lines) - 1)]
        detail = detail if len(detail) <= 200 else detail[:200] + " ..."  # a list of every missing key
        raise TsekitError(f"{path}: not {what} checkpoint ({detail})") from None
