"""The toolkit's own neural codec: ConvNeXt encoder -> residual vector quantiser -> Vocos decoder.

Why this design (offline, no pretrained codec exists, and the toolkit must train one on a CPU in minutes):

- **Encoder over frames, not samples.** EnCodec (Défossez et al., 2022) and DAC (Kumar et al., 2023) encode
  the waveform with strided convolutions (SEANet). Here the encoder reads a log-mel (``features: mel``) or a
  log-magnitude STFT (``features: stft``) and runs ConvNeXt blocks at the frame rate, as Vocos's own codec
  variant does with EnCodec tokens; a strided conv (``downsample``) then lowers the frame rate to the token
  rate. Frame-rate layers are far cheaper than sample-rate ones.
- **Quantiser: EnCodec's residual VQ**, reused from the installed ``encodec`` package
  (``encodec.quantization.ResidualVectorQuantizer``): ``num_codebooks`` stages of ``codebook_size``
  entries, codebooks initialised by k-means on the first training batch, updated by exponential moving
  averages (decay ``codebook_decay``) instead of gradients, dead codes replaced by batch vectors, and a
  commitment loss (||z - sg(q)||^2 per stage, weighted by the training config's ``loss.commitment``).
  ``kmeans_iters`` defaults to EnCodec's 50, but encodec's k-means holds a (vectors x codebook_size x dim)
  distance tensor: with 8 x 1024 codebooks that first batch took 57 s on a CPU, 10 iterations a fifth of it;
  0 starts from random codebooks instead.
  DAC's factorised, L2-normalised codebooks use fewer stages better, but need gradient-trained codebooks
  and longer training.
- **Quantiser dropout** (SoundStream, DAC): with probability ``quantizer_dropout`` a training batch uses only
  a random number of the first stages, so that decoding from fewer codebooks (a lower bandwidth) still
  works. Off by default: a short CPU training spends its steps on the full set.
- **Bandwidth choice at inference**: ``use_codebooks`` (``None`` = all ``num_codebooks``) sets how many
  stages ``encode`` emits and ``decode`` expects; ``num_codebooks`` (the ``Codec`` attribute) reports it.
  Tokens per second = ``use_codebooks * frame_rate``, bits per second that times log2(codebook_size).
- **Decoder: the Vocos generator** (``tsekit.codec.vocos``): transposed conv back to the mel frame rate
  when ``downsample`` > 1, then ConvNeXt blocks and the ISTFT head.

Lengths: ``encode`` pads T samples to whole token frames, F = ceil(T / (hop * downsample));
``decode`` returns F * hop * downsample samples; callers crop to T.
"""

from __future__ import annotations

import math

import torch

from tsekit import TsekitError
from tsekit.codec.vocos import ConvNeXtStack, VocosGenerator
from tsekit.pretrained.codec_base import Codec, register_codec
from tsekit.pretrained.mel import LogMel


@register_codec("tsekit_codec")
class ToolkitCodec(Codec):
    """Waveform <-> (codebooks x frames) tokens; every size is a parameter (defaults: CPU-sized, see module doc)."""

    random_init = True  # its weights come from tsekit codec train, loaded from the experiment dir

    def __init__(self, sample_rate: int = 16000, features: str = "mel", n_mels: int = 80, n_fft: int = 1024,
                 hop_length: int = 256, downsample: int = 1, encoder_width: int = 256, encoder_blocks: int = 4,
                 latent_dim: int = 128, num_codebooks: int = 8, codebook_size: int = 1024,
                 codebook_decay: float = 0.99, kmeans_iters: int = 50, dead_code_threshold: int = 2,
                 quantizer_dropout: float = 0.0, use_codebooks: int | None = None, decoder_width: int = 256,
                 decoder_blocks: int = 6):
        super().__init__()
        from encodec.quantization import ResidualVectorQuantizer

        if features not in ("mel", "stft"):
            raise TsekitError(f"codec tsekit_codec: features must be mel or stft, got {features!r}")
        if downsample < 1 or num_codebooks < 1 or codebook_size < 2:
            raise TsekitError("codec tsekit_codec: need downsample >= 1, num_codebooks >= 1, codebook_size >= 2")
        if not 0.0 <= quantizer_dropout <= 1.0:
            raise TsekitError(f"codec tsekit_codec: quantizer_dropout must be in [0, 1], got {quantizer_dropout}")
        self.sample_rate = sample_rate
        self.codebook_size = codebook_size
        self.samples_per_frame = hop_length * downsample
        self.frame_rate = sample_rate / self.samples_per_frame
        self.total_codebooks = num_codebooks
        self.quantizer_dropout = quantizer_dropout
        self.features = features
        self.front = LogMel(sample_rate, n_fft, hop_length, n_mels)
        channels = n_mels if features == "mel" else n_fft // 2 + 1
        self.encoder = ConvNeXtStack(channels, encoder_width, encoder_blocks)
        # a strided conv (kernel = stride) lowers the frame rate; its transpose raises it again in the decoder
        self.down = torch.nn.Conv1d(encoder_width, latent_dim, downsample, stride=downsample)
        self.quantizer = ResidualVectorQuantizer(dimension=latent_dim, n_q=num_codebooks, bins=codebook_size,
                                                 decay=codebook_decay, kmeans_init=kmeans_iters > 0,
                                                 kmeans_iters=max(kmeans_iters, 1),
                                                 threshold_ema_dead_code=dead_code_threshold)
        self.up = torch.nn.ConvTranspose1d(latent_dim, latent_dim, downsample, stride=downsample)
        self.decoder = VocosGenerator(latent_dim, decoder_width, decoder_blocks, n_fft, hop_length)
        self.use_codebooks(use_codebooks)

    def use_codebooks(self, count: int | None) -> None:
        """Choose how many of the trained codebooks encode/decode use (the bandwidth); None = all."""
        count = self.total_codebooks if count is None else count
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= self.total_codebooks:
            raise TsekitError(f"codec tsekit_codec: use_codebooks must be in 1..{self.total_codebooks}, got {count!r}")
        self.num_codebooks = count

    @property
    def bits_per_second(self) -> float:
        return self.num_codebooks * self.frame_rate * math.log2(self.codebook_size)

    def _features(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 2:
            raise TsekitError(f"codec tsekit_codec: expected waveforms (batch, samples), got {tuple(wav.shape)}")
        # pad to whole token frames, so the strided conv sees every mel frame
        frames = math.ceil(wav.shape[-1] / self.samples_per_frame)
        wav = torch.nn.functional.pad(wav, (0, frames * self.samples_per_frame - wav.shape[-1]))
        if self.features == "mel":
            return self.front(wav)
        return torch.log(self.front.magnitude(wav).clamp(min=1e-5))

    def latents(self, wav: torch.Tensor) -> torch.Tensor:
        return self.down(self.encoder(self._features(wav)))

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        codes = self.quantizer.vq.encode(self.latents(wav), n_q=self.num_codebooks)  # (K, B, F)
        return codes.transpose(0, 1).contiguous()

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self.check_tokens(tokens, "codec tsekit_codec decode")
        if tokens.dim() == 2:
            return self.decode(tokens[None])[0]
        quantized = self.quantizer.vq.decode(tokens.transpose(0, 1))  # (B, D, F)
        return self.decoder(self.up(quantized))

    def reconstruct(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: waveform (B, T) -> (resynthesis (B, T') with T' >= T, commitment loss).

        In training mode the quantiser updates its codebooks (k-means at the first call, then EMA) and passes
        gradients straight through; with ``quantizer_dropout`` a random number of stages is used.
        """
        count = self.num_codebooks
        # torch's generator, not Python's: its state is in the training checkpoint, so resuming redraws the same
        if self.training and self.quantizer_dropout and float(torch.rand(())) < self.quantizer_dropout:
            count = int(torch.randint(1, self.total_codebooks + 1, ()))
        quantized, _, losses = self.quantizer.vq(self.latents(wav), n_q=count)
        return self.decoder(self.up(quantized)), losses.mean()
