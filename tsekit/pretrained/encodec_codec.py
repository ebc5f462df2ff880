"""EnCodec 24 kHz (Défossez et al., 2022) through the ``encodec`` package (0.1.1): the ``encodec_24khz`` codec.

Facts of the model (``EncodecModel.encodec_model_24khz``), which this wrapper relies on:

- mono audio at 24 kHz; a causal SEANet encoder with strides 2 x 4 x 5 x 8 = 320 samples per frame, so
  75 frames per second. ``T`` samples give ``ceil(T / 320)`` frames: the causal convolutions pad the end
  up to a whole frame. ``decode`` returns ``F * 320`` samples (trim to the input length yourself).
- a residual vector quantiser of 32 codebooks x 1024 entries, 0.75 kbps each (10 bits x 75 frames/s):
  bandwidth 1.5 / 3 / 6 / 12 / 24 kbps uses the first 2 / 4 / 8 / 16 / 32 codebooks.
- no loudness normalisation and no segmenting at 24 kHz (``audio_normalize=False``, ``segment=None``; only
  the 48 kHz model rescales each 1-s segment and sends the scale beside the tokens), so the tokens of a
  waveform are the encoder + quantiser output on the whole signal, and decoding needs nothing else.
- ``latents``: the encoder output (B, 128, F), what the quantiser sees.

Weights: the package downloads ``encodec_24khz-d7cc33bc.th`` from ``CHECKPOINT_URL`` into torch hub's
cache, ``torch.hub.get_dir()/checkpoints/`` (``$TORCH_HOME/hub/checkpoints``, by default
``~/.cache/torch/hub/checkpoints``). This wrapper reads that file, or the file given as ``weights``, and never
downloads anything: an absent file is a one-line error saying where to put it. The architecture is built
untrained (``pretrained=False``) and the state dict loaded with ``weights_only=True``, so a checkpoint
cannot run code.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from tsekit import TsekitError
from tsekit.pretrained.codec_base import Codec, load_pretrained, load_weights, register_codec

CHECKPOINT_NAME = "encodec_24khz-d7cc33bc.th"  # EncodecModel.encodec_model_24khz's checkpoint_name
CHECKPOINT_URL = f"https://dl.fbaipublicfiles.com/encodec/v0/{CHECKPOINT_NAME}"  # the package's ROOT_URL + name
# kbps -> codebooks: 0.75 kbps per codebook (10 bits at 75 frames/s)
BANDWIDTHS = {1.5: 2, 3.0: 4, 6.0: 8, 12.0: 16, 24.0: 32}
HOP = 320


def default_weights() -> Path:
    """Where the encodec package caches the 24 kHz checkpoint (torch hub's checkpoint folder)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / CHECKPOINT_NAME


def random_checkpoint(path: str | os.PathLike, seed: int) -> Path:
    """Save a 24 kHz EnCodec state dict with seeded random weights and random, initialised codebooks at ``path``.

    The real architecture without the published weights: what tests and benches use offline (its cost is the
    real one). The codebooks are drawn around what the random encoder outputs (its mean frame for the first,
    the residuals' scale for all), as k-means would place them: far-off random codebooks would give one token.
    """
    from encodec import EncodecModel

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = EncodecModel.encodec_model_24khz(pretrained=False)
    with torch.no_grad():
        frames = model.encoder(0.1 * torch.randn(1, 1, 8000))[0].T  # (F, 128)
        mean, spread = frames.mean(0), frames.std(0)
        for index, layer in enumerate(model.quantizer.vq.layers):
            layer._codebook.embed.copy_(spread * torch.randn_like(layer._codebook.embed) + (mean if index == 0 else 0))
            layer._codebook.inited.fill_(1)
    torch.save(model.state_dict(), path)
    return Path(path)


@register_codec("encodec_24khz")
class EnCodec24k(Codec):
    """Pretrained EnCodec 24 kHz at one bandwidth (1.5, 3, 6, 12 or 24 kbps)."""

    path_params = ("weights",)

    def __init__(self, bandwidth: float = 6.0, weights: str | None = None):
        super().__init__()
        if float(bandwidth) not in BANDWIDTHS:
            raise TsekitError(f"encodec_24khz: bandwidth {bandwidth} kbps is not one of "
                              f"{', '.join(f'{b:g}' for b in BANDWIDTHS)}")
        try:
            from encodec import EncodecModel
        except ImportError:
            raise TsekitError("encodec_24khz needs the `encodec` package: pip install 'tsekit[codec]'") from None
        self.bandwidth = float(bandwidth)
        self.sample_rate = 24000
        self.frame_rate = 75
        self.num_codebooks = BANDWIDTHS[self.bandwidth]
        self.codebook_size = 1024
        path = Path(os.path.expanduser(weights)) if weights else default_weights()
        state = load_pretrained(path, "encodec_24khz", CHECKPOINT_URL)
        with warnings.catch_warnings():  # the package builds with the deprecated weight_norm: not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            model = EncodecModel.encodec_model_24khz(pretrained=False)
        load_weights(model, state, path, "an EnCodec 24 kHz")
        # codebooks start at zero and are filled by k-means on the first training batch; a checkpoint whose
        # codebooks in use were never filled would map every frame to token 0
        layers = model.quantizer.vq.layers[: self.num_codebooks]
        if not all(bool(layer._codebook.inited.item()) for layer in layers):
            raise TsekitError(f"{path}: the checkpoint's codebooks were never initialised (an untrained model)")
        model.set_target_bandwidth(self.bandwidth)
        self.model = model.eval()
        self.weights = path

    def _mono(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 2:
            raise TsekitError(f"encodec_24khz: expected waveforms (B, T), got shape {tuple(wav.shape)}")
        return wav[:, None, :].to(next(self.model.parameters()).dtype)

    def latents(self, wav: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(self._mono(wav))

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        # the package's quantiser takes the frame rate as its "sample_rate" to turn kbps into codebooks
        codes = self.model.quantizer.encode(self.latents(wav), self.frame_rate, self.bandwidth)
        return codes.transpose(0, 1).long()  # (K, B, F) -> (B, K, F)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self.check_tokens(tokens, "encodec_24khz.decode")
        if tokens.dim() != 3:
            raise TsekitError(f"encodec_24khz.decode: expected tokens (B, K, F), got shape {tuple(tokens.shape)}")
        embedding = self.model.quantizer.decode(tokens.transpose(0, 1))
        return self.model.decoder(embedding)[:, 0, :]
