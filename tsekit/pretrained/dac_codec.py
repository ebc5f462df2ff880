"""The Descript Audio Codec at 16 kHz (Kumar et al., 2023) through ``descript-audio-codec`` (1.0.0): ``dac_16khz``.

The package is imported only when the codec is built, so tsekit works without it. It is the ``dac`` extra, which
``tools/install.sh`` installs with ``--no-deps`` (descript-audiotools pins protobuf < 3.20, which the onnx models of
scoring cannot use) beside what the package imports.

Facts of the model (the 16 kHz 8 kbps release, tag 0.0.5), which this wrapper relies on:

- mono audio at 16 kHz; encoder strides 2 x 4 x 5 x 8 = 320 samples per frame, so 50 frames per second.
  Like the package's ``preprocess``, the input is padded at the end to a whole frame: ``T`` samples give
  ``ceil(T / 320)`` frames.
- 12 residual codebooks x 1024 entries (factorised 8-dimensional codes), all used: 12 x 10 bits x 50 Hz
  = 6 kbps.
- ``decode`` returns ``F * 320 - 8`` samples: the decoder's unpadded convolutions trim a few samples, as in
  the package itself.
- ``latents``: the encoder output (B, 1024, F), before the quantiser's projections.

Weights: ``dac.utils.download`` caches ``weights_16khz.pth`` from ``CHECKPOINT_URL`` as
``~/.cache/descript/dac/weights_16khz_8kbps_0.0.5.pth``; this wrapper reads that file, or the file given as
``weights``, and never downloads. The file is a dict ``{"state_dict", "metadata"}`` (a bare state dict is
accepted too); it is read with ``weights_only=True`` into the architecture built here.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch

from tsekit import TsekitError
from tsekit.pretrained.codec_base import Codec, load_pretrained, load_weights, register_codec

CHECKPOINT_URL = "https://github.com/descriptinc/descript-audio-codec/releases/download/0.0.5/weights_16khz.pth"
# the architecture of the 16 kHz release (dac.DAC's constructor arguments)
ARCHITECTURE = {"encoder_dim": 64, "encoder_rates": [2, 4, 5, 8], "decoder_dim": 1536, "decoder_rates": [8, 5, 4, 2],
                "n_codebooks": 12, "codebook_size": 1024, "codebook_dim": 8, "sample_rate": 16000}
HOP = 320


def default_weights() -> Path:
    """Where ``dac.utils.download`` caches the 16 kHz checkpoint."""
    return Path.home() / ".cache" / "descript" / "dac" / "weights_16khz_8kbps_0.0.5.pth"


@register_codec("dac_16khz")
class DAC16k(Codec):
    """Pretrained DAC 16 kHz: 12 codebooks at 50 Hz."""

    path_params = ("weights",)

    def __init__(self, weights: str | None = None):
        super().__init__()
        try:
            with warnings.catch_warnings():  # audiotools' imports warn about deprecations: not the user's concern
                warnings.simplefilter("ignore")
                import dac
        except ImportError as err:
            raise TsekitError(f"dac_16khz needs the `descript-audio-codec` package (the dac extra: make install "
                              f"EXTRAS=...,dac, or docs/codecs.md); import failed: {err}") from None
        self.sample_rate = 16000
        self.frame_rate = 50
        self.num_codebooks = 12
        self.codebook_size = 1024
        path = Path(os.path.expanduser(weights)) if weights else default_weights()
        checkpoint = load_pretrained(path, "dac_16khz", CHECKPOINT_URL)
        state = checkpoint.get("state_dict", checkpoint)  # the release's {"state_dict", "metadata"}, or bare
        with warnings.catch_warnings():  # the package builds with the deprecated weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            model = dac.DAC(**ARCHITECTURE)
        if not isinstance(state, dict):
            raise TsekitError(f"{path}: not a DAC 16 kHz checkpoint (no state dict)")
        load_weights(model, state, path, "a DAC 16 kHz")
        self.model = model.eval()
        self.weights = path

    def _padded(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 2:
            raise TsekitError(f"dac_16khz: expected waveforms (B, T), got shape {tuple(wav.shape)}")
        frames = math.ceil(wav.shape[-1] / HOP)
        return torch.nn.functional.pad(wav, (0, frames * HOP - wav.shape[-1]))[:, None, :]

    def latents(self, wav: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(self._padded(wav))

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        _, codes, *_ = self.model.quantizer(self.latents(wav))
        return codes.long()

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self.check_tokens(tokens, "dac_16khz.decode")
        if tokens.dim() != 3:
            raise TsekitError(f"dac_16khz.decode: expected tokens (B, K, F), got shape {tuple(tokens.shape)}")
        embedding = self.model.quantizer.from_codes(tokens)[0]
        return self.model.decode(embedding)[:, 0, :]
