"""Whisper-based generative TSE with joint target-speaker ASR and flow matching (seed system A): ``whisper_cfm``.

The enrollment and the mixture, concatenated in time, go through Whisper's encoder, adapted with LoRA and told
whom to listen to by a speaker embedding of the enrollment. The same encoder frames feed two heads: Whisper's
frozen decoder, trained to transcribe the target speaker (target-speaker ASR, cross-entropy), and a conditional
flow-matching model that turns the frames of the mixture part into the target's mel spectrogram, which a mel
vocoder renders. Loss = L_CFM + ``asr_weight`` x L_CE; both gradients reach the LoRA weights, and the ASR loss is
what keeps the generated speech intelligible (the paper's ablation: ``asr_weight: 0``).

What the paper states (SEEDS.md, A) is followed; what it leaves open is chosen as follows, each a parameter:

- **Whisper** (``whisper``): any openai-whisper size by name, a ``.pt`` checkpoint or a CTranslate2 folder
  (``tsekit.pretrained.whisper.load_whisper``; offline, tiny.en and base come from registry packages). Its weights are
  frozen and kept out of the checkpoint: the checkpoint stores LoRA and the trainable parts, and inference loads
  Whisper again from ``whisper``.
- **Input**: Whisper's log-mel (80 or 128 bins, 25 ms / 10 ms at 16 kHz) of enrollment + mixture concatenated,
  normalised per example as Whisper normalises a clip (log10, floor at max - 8, (x + 4) / 4) over the valid
  frames; the STFT frames at the end of a clip see zeros after it, as in Whisper's zero-padded 30 s. The
  enrollment is cut to a whole number of encoder frames (320 samples at 16 kHz) so the mixture part starts on
  an encoder frame, and to its first ``max_enroll_seconds`` (10), less where Whisper's 30 s leave less beside
  the mixture (the speaker embedding still sees all of it). That cut is the same in training and at
  inference and is the only one: a recipe trains on whole enrollments (no ``data.enroll_seconds``), else the
  model would learn on shorter enrollments than inference gives it. ``input_padding: crop`` (default) runs the
  encoder on the input's own length, the positional embedding cropped to it; ``pad30`` pads every input to
  Whisper's 30 s as it was trained. Measured (bench/whisper_input.py, docs/RESULTS.md): untrained, cropping
  breaks Whisper (tiny.en on 2 s clean clips: it loops, WER 578% against 61% padded), but the encoder costs
  2.2 times less on the few seconds of a TSE input and a training step 2.7 times less; LoRA trained on cropped
  inputs learns them (the trained TS-ASR WER is 75%). Crop is the default because only it trains within a CPU
  budget (the mini recipe); the published config (egs/libri2mix) pads, as Whisper expects. Either way a
  mixture must leave room for some enrollment in 30 s (one-line error otherwise); inference cuts a longer
  recording into chunks that leave room for all of it (``longest_input_seconds``: 20 s beside 10 s).
- **Batch padding**: an example's outputs do not depend on the others in its batch. With ``pad30`` every
  example is its own 30 s, Whisper's padding included, and nothing is masked: Whisper attended to that
  padding in all its training, and hiding it would be a new input to it. With ``crop`` the batch is padded to
  its longest input; beyond an example's own length its log-mel reads as zeros (what the convolutions pad an
  example alone with), and neither the encoder's self-attention nor the decoder's cross-attention attends to
  those frames (a key mask; Whisper's own modules have none, so the forwards here apply it), nor does the
  frame encoder of the flow model.
- **Speaker embedding** (``speaker_encoder``, default the offline ``resemblyzer`` d-vector of
  ``tsekit.models.layers.speaker_embedding``; the paper uses CAM++), projected to the encoder width and, as the
  authors' TS-Whisper, written over the first encoder frame after conv2 (``speaker_injection: overwrite``) or
  prepended as one more frame (``prepend``).
- **LoRA** (``lora_rank`` 4 and ``lora_targets`` query/value, as TS-Whisper; ``lora_alpha`` defaults to the rank,
  a scale of 1): W x + (alpha / r) B A x on the chosen attention projections of every encoder block, A Kaiming
  uniform, B zero, so training starts from Whisper itself. ``peft`` installs against the pinned torch, but it
  pulls in transformers and accelerate and wraps Whisper's modules in place, which would put Whisper's frozen
  weights into the state dict; the encoder's forward here applies the adapters itself instead.
- **Target-speaker ASR**: the frozen decoder prompted with ``<|startoftranscript|><|en|><|transcribe|>
  <|notimestamps|>`` (English-only models have neither language nor task token), cross-attending to all encoder
  frames (the example's own, above); cross-entropy on the target transcript (``text``) plus end-of-text,
  averaged per example. Transcripts are written in ``text_case`` (``sentence``: LibriSpeech's upper case becomes
  "Oliver said ...", closer to what Whisper was trained to write; scoring normalises case anyway). Inference
  decodes greedily, special tokens other than end-of-text suppressed, at most ``max_text_tokens``.
- **Flow matching** (CosyVoice / Matcha-TTS): the encoder frames of the mixture part go through a frame encoder, are
  interpolated (linear) to the mel frame rate and projected to the mel width: ``mu``. The frame encoder stands where
  CosyVoice's flow encoder reads its 50 Hz speech tokens: a conformer of 6 blocks, 512 wide, 8 heads, feed-forward
  2048, behind a "linear" input layer (Linear + LayerNorm), without convolution module or macaron feed-forward (its
  released ``cosyvoice.yaml``), so pre-norm transformer blocks (4x GELU feed-forward, dropout 0.1). ``frame_width``
  sets the width: the frames are projected from Whisper's width by Linear + LayerNorm (CosyVoice's input layer) and
  ``frame_layers`` blocks of ``frame_heads`` heads follow; unset, the blocks run at Whisper's width with no
  projection (the mini configs). At large-v2's 1280, 6 blocks at Whisper's width and their projection to the mel are
  118.2 M parameters, six times CosyVoice's; ``frame_width: 512`` (egs/libri2mix) makes them 19.6 M (0.66 M input
  layer, 18.9 M blocks, 0.04 M to the mel). Departures: no relative positional encoding (Whisper's frames already
  carry its positions) and no final LayerNorm (a linear projection to the mel follows). The speaker embedding is
  projected to the mel width; the estimator is the 1-D U-Net with transformer blocks of
  ``tsekit.models.layers.flow_matching`` on [x_t, mu, spk]; OT-CFM with sigma_min 1e-6, conditions dropped with p
  0.2. Inference: ``flow_steps`` (10) Euler steps on the cosine time schedule, guidance 0.7. The mel is the
  vocoder's own (its rate, hop and bins; seed A: 22.05 kHz, hop 256, 80 bins), normalised by fixed ``mel_mean`` /
  ``mel_std`` (Matcha normalises by corpus statistics; fixed values measured on the mini corpus's targets serve any
  corpus of speech). ``mixture_mel: true`` (not in the paper, off by default) adds the mixture's own mel, through a
  convolution, to ``mu``: Whisper's 50 Hz frames carry the words and the speaker but little spectral detail, which
  the mixture's mel holds where the target dominates (the role of maskgit_tse's ``features: mel``); it is dropped
  with ``mu`` for guidance.
- **Vocoder** (``vocoder`` / ``vocoder_params``; the trainer fills them from the config's ``vocoder`` section,
  and ``vocoder_sha256``, the hash of its weights, which the vocoder loaded must match):
  the published universal HiFi-GAN V1 (``hifigan_universal``, the recipes' configs), the toolkit's trained one or a
  published Vocos / HiFi-GAN by path, loaded on first use, outside the checkpoint. Its output is resampled to
  ``sample_rate`` and cut or padded to the mixture's length. The outputs are not sample-aligned with the reference:
  judge this system on DNSMOS, WER, speaker similarity, not SI-SDR.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812  (torch's usual alias)

from tsekit import TsekitError
from tsekit.models.layers.flow_matching import FlowEstimator, cfm_loss, euler_sample
from tsekit.models.layers.speaker_embedding import build_speaker_embedder
from tsekit.models.layers.transformer import Block
from tsekit.models.registry import TSEModel, register

WHISPER_RATE = 16000
WHISPER_HOP = 160  # samples per mel frame
ENCODER_STRIDE = 2  # mel frames per encoder frame (conv2)
FRAME_SAMPLES = WHISPER_HOP * ENCODER_STRIDE
LORA_TARGETS = ("query", "key", "value", "out")
IGNORE = -100  # cross-entropy's ignore_index for padded transcript tokens


def decoder_prompt(tokenizer) -> list[int]:
    """The TS-ASR prompt: <|startoftranscript|>[<|en|><|transcribe|>]<|notimestamps|> of a whisper tokenizer."""
    return [*tokenizer.sot_sequence, tokenizer.no_timestamps]


def whisper_log_mel(audio: torch.Tensor, lengths: torch.Tensor, n_mels: int) -> torch.Tensor:
    """Whisper's log-mel (B, n_mels, T // 160) of 16 kHz audio (B, T), normalised per example over its valid
    frames (``lengths`` samples) as Whisper normalises a clip; padding frames get the example's floor.

    The frames at the end of a clip see zeros after it, as in Whisper's zero-padded 30 s, whatever follows in
    the batch (the STFT's own reflection would make an example's last frame depend on the batch's length)."""
    from whisper.audio import N_FFT, mel_filters

    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(F.pad(audio, (0, N_FFT // 2)), N_FFT, WHISPER_HOP, window=window, return_complex=True)
    power = stft[..., : audio.shape[-1] // WHISPER_HOP].abs() ** 2
    mel = (mel_filters(audio.device, n_mels) @ power).clamp(min=1e-10).log10()
    valid = torch.arange(mel.shape[-1], device=audio.device)[None] < (lengths // WHISPER_HOP)[:, None]
    floor = mel.masked_fill(~valid[:, None], -math.inf).amax((1, 2), keepdim=True) - 8.0
    return (torch.where(valid[:, None], torch.maximum(mel, floor), floor) + 4.0) / 4.0


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int,
           keys: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
    """Whisper's multi-head attention (scale 1 / sqrt(head width)) of projections query (B, L, d) over key and
    value (B, S, d), attending only to the keys marked True in ``keys`` (B, S) (None: all), or, ``causal``, each
    query to the keys up to its own position."""
    batch, length, width = query.shape
    query, key, value = (x.unflatten(-1, (heads, -1)).transpose(1, 2) for x in (query, key, value))
    mask = None if keys is None else keys[:, None, None]
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=causal).transpose(
        1, 2).reshape(batch, length, width)


class LoRA(torch.nn.Module):
    """The low-rank update (alpha / r) B A x of one frozen linear layer; B starts at zero."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, dropout: float):
        super().__init__()
        self.down = torch.nn.Parameter(torch.empty(rank, in_features))
        self.up = torch.nn.Parameter(torch.zeros(out_features, rank))
        torch.nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        self.scale = alpha / rank
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.linear(self.dropout(x), self.down), self.up)


class _Frozen:
    """Holds a module outside the model's tree: not in state_dict or parameters, shared by deep copies (EMA)."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def __deepcopy__(self, memo: dict) -> _Frozen:
        return self


@register("whisper_cfm")
class WhisperCFM(TSEModel):
    """Whisper encoder (LoRA) + target-speaker ASR + flow-matching mel; every choice is in the module docstring."""

    paper = ("Whisper with joint target-speaker ASR and conditional flow matching (Ma et al.), "
             "https://arxiv.org/abs/2501.14477")

    needs = frozenset({"target", "enroll", "text"})
    transcribes = True

    def __init__(self, whisper: str = "tiny.en", lora_rank: int = 4, lora_alpha: float | None = None,
                 lora_targets: tuple[str, ...] = ("query", "value"), lora_dropout: float = 0.0,
                 input_padding: Literal["crop", "pad30"] = "crop", max_enroll_seconds: float = 10.0,
                 speaker_encoder: str = "resemblyzer", speaker_dim: int = 256, speaker_onnx: str | None = None,
                 min_enroll_seconds: float = 1.0, speaker_injection: Literal["overwrite", "prepend"] = "overwrite",
                 asr_weight: float = 1.0, text_case: Literal["sentence", "lower", "keep"] = "sentence",
                 max_text_tokens: int = 128, frame_width: int | None = None, frame_layers: int = 2,
                 frame_heads: int = 4,
                 flow_channels: tuple[int, ...] = (256, 256), flow_blocks: int = 1, flow_mid_blocks: int = 2,
                 flow_heads: int = 4, flow_head_dim: int = 64, flow_dropout: float = 0.05, sigma_min: float = 1e-6,
                 condition_drop: float = 0.2, flow_steps: int = 10, guidance: float = 0.7,
                 time_schedule: Literal["cosine", "uniform"] = "cosine", temperature: float = 1.0,
                 mixture_mel: bool = False, mel_mean: float = -6.4, mel_std: float = 2.5, seed: int = 0,
                 sample_rate: int = 16000,
                 vocoder: str | None = None, vocoder_params: dict | None = None, vocoder_sha256: str | None = None):
        super().__init__()
        choices = {"input_padding": (input_padding, ("crop", "pad30")),
                   "speaker_injection": (speaker_injection, ("overwrite", "prepend")),
                   "text_case": (text_case, ("sentence", "lower", "keep")),
                   "time_schedule": (time_schedule, ("cosine", "uniform"))}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise TsekitError(f"whisper_cfm: {name} must be one of {', '.join(allowed)}, got {value!r}")
        unknown = sorted(set(lora_targets) - set(LORA_TARGETS))
        if unknown or not lora_targets or lora_rank < 1:
            raise TsekitError(f"whisper_cfm: lora_targets must be some of {', '.join(LORA_TARGETS)} and lora_rank "
                              f">= 1 (got {list(lora_targets)}, {lora_rank})")
        if flow_steps < 1 or guidance < 0 or asr_weight < 0 or not 0 <= condition_drop < 1:
            raise TsekitError("whisper_cfm: needs flow_steps >= 1, guidance >= 0, asr_weight >= 0 and "
                              "0 <= condition_drop < 1")
        from whisper.tokenizer import get_tokenizer

        from tsekit.pretrained.whisper import load_whisper

        model = load_whisper(whisper)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self._whisper = _Frozen(model)
        self.whisper_spec = whisper
        dims = model.dims
        self.n_mels, self.width, self.audio_ctx = dims.n_mels, dims.n_audio_state, dims.n_audio_ctx
        self.tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages, language="en",
                                       task="transcribe")
        self.prompt = decoder_prompt(self.tokenizer)
        self.input_padding, self.speaker_injection, self.text_case = input_padding, speaker_injection, text_case
        self.max_enroll_samples = int(max_enroll_seconds * WHISPER_RATE) // FRAME_SAMPLES * FRAME_SAMPLES
        # the longest mixture that leaves Whisper's input (30 s) room for all the enrollment it takes: inference
        # chunks a longer recording (a conversation of minutes) to it, where a whole one would be refused
        extra = 1 if speaker_injection == "prepend" else 0
        self.longest_input_seconds = ((self.audio_ctx - extra) * FRAME_SAMPLES - self.max_enroll_samples) / WHISPER_RATE
        self.asr_weight, self.max_text_tokens = asr_weight, max_text_tokens
        self.sigma_min, self.condition_drop, self.time_schedule = sigma_min, condition_drop, time_schedule
        self.flow_steps, self.guidance, self.temperature, self.seed = flow_steps, guidance, temperature, seed
        self.mel_mean, self.mel_std, self.sample_rate = mel_mean, mel_std, sample_rate
        alpha = float(lora_alpha if lora_alpha is not None else lora_rank)
        self.lora = torch.nn.ModuleDict({
            f"{index}_{name}": LoRA(self.width, self.width, lora_rank, alpha, lora_dropout)
            for index in range(dims.n_audio_layer) for name in lora_targets})
        self.speaker = build_speaker_embedder(speaker_encoder, sample_rate, speaker_dim, speaker_onnx,
                                              min_enroll_seconds)
        self.speaker_to_encoder = torch.nn.Linear(self.speaker.dim, self.width)
        self.vocoder_spec, self.vocoder_params = vocoder, dict(vocoder_params or {})
        self.vocoder_sha256 = vocoder_sha256
        self._vocoder: list = []  # loaded on first use, outside the module tree: not in the checkpoint
        n_feats = 80 if vocoder is None else self.vocoder().n_mels  # without a vocoder it cannot train; 80 mels
        blocks_width = self.width if frame_width is None else frame_width
        if blocks_width < 1 or frame_heads < 1 or blocks_width % frame_heads:
            raise TsekitError(f"whisper_cfm: the frame encoder's width {blocks_width} (frame_width, else Whisper's) "
                              f"must be a positive multiple of frame_heads ({frame_heads})")
        # CosyVoice's "linear" input layer, here from Whisper's width to the frame encoder's
        self.frame_input = None if frame_width is None else torch.nn.Sequential(
            torch.nn.Linear(self.width, frame_width), torch.nn.LayerNorm(frame_width))
        self.frame_blocks = torch.nn.ModuleList(Block(blocks_width, frame_heads, 4, 0.1, False, 0)
                                                for _ in range(frame_layers))
        self.frames_to_mel = torch.nn.Linear(blocks_width, n_feats)
        self.speaker_to_mel = torch.nn.Linear(self.speaker.dim, n_feats)
        self.mixture_to_mel = torch.nn.Conv1d(n_feats, n_feats, 3, padding=1) if mixture_mel else None
        self.estimator = FlowEstimator(n_feats, tuple(flow_channels), flow_blocks, flow_mid_blocks, flow_heads,
                                       flow_head_dim, flow_dropout)

    # --- hooks ----------------------------------------------------------------------------------------------

    def check_enrollment(self, num_samples: int, what: str) -> None:
        self.speaker.check_length(num_samples, what)

    def frozen_parts(self) -> dict[str, tuple[str, str]]:
        from tsekit.checkpoint import hash_weights

        return {**super().frozen_parts(), "whisper": (self.whisper_spec, hash_weights(self._whisper.module)),
                "vocoder": (self.vocoder_spec, self.vocoder().weights_sha256)}

    def whisper(self, device: torch.device):
        """The frozen Whisper model, on ``device``."""
        model = self._whisper.module
        if next(model.parameters()).device != device:
            model.to(device)
        return model

    def vocoder(self, device: torch.device | None = None):
        """The mel vocoder (``vocoder`` / ``vocoder_params``), loaded once."""
        if not self._vocoder:
            from tsekit.codec.registry import load_for_system
            from tsekit.pretrained.codec_base import Vocoder

            self._vocoder.append(load_for_system(self.vocoder_spec, self.vocoder_params, Vocoder, "whisper_cfm",
                                                 "vocoder", self.vocoder_sha256))
        return self._vocoder[0] if device is None else self._vocoder[0].to(device)

    # --- the encoder ----------------------------------------------------------------------------------------

    def encode(self, mixture: torch.Tensor, lengths: torch.Tensor, enroll: torch.Tensor, enroll_lengths: torch.Tensor,
               speaker: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Encoder frames of enrollment + mixture: (all frames (B, N, width), which of them are the example's own
        (B, N) (None with pad30: all), the mixture part's frames (B, Fm, width) zero-padded, their counts (B,))."""
        from tsekit.codec.registry import resample

        whisper = self.whisper(mixture.device)
        mixture, enroll = resample(mixture, self.sample_rate, WHISPER_RATE), resample(enroll, self.sample_rate,
                                                                                         WHISPER_RATE)
        scale = WHISPER_RATE / self.sample_rate
        mix_frames = (lengths.float() * scale).long().clamp(max=mixture.shape[-1]) // FRAME_SAMPLES
        extra = 1 if self.speaker_injection == "prepend" else 0
        room = (self.audio_ctx - extra - mix_frames) * FRAME_SAMPLES  # what Whisper's 30 s leave the enrollment
        if bool((room < FRAME_SAMPLES).any()):
            seconds = float(mix_frames.max()) * FRAME_SAMPLES / WHISPER_RATE
            raise TsekitError(f"whisper_cfm: a mixture of {seconds:.1f} s leaves no room for the enrollment in "
                              f"Whisper's {self.audio_ctx * FRAME_SAMPLES / WHISPER_RATE:.0f} s input (infer with "
                              "--chunk-seconds)")
        enroll_kept = torch.minimum((enroll_lengths.float() * scale).long().clamp(max=enroll.shape[-1]),
                                    room.clamp(max=self.max_enroll_samples)) // FRAME_SAMPLES * FRAME_SAMPLES
        enroll_frames = enroll_kept // FRAME_SAMPLES
        samples = int((enroll_kept + mix_frames * FRAME_SAMPLES).max())
        if self.input_padding == "pad30":
            samples = self.audio_ctx * FRAME_SAMPLES - extra * FRAME_SAMPLES
        audio = mixture.new_zeros(mixture.shape[0], samples)
        for row in range(mixture.shape[0]):  # enrollment then mixture, each example's own lengths
            first, count = int(enroll_kept[row]), int(mix_frames[row]) * FRAME_SAMPLES
            audio[row, :first] = enroll[row, :first]
            audio[row, first:first + count] = mixture[row, :count]
        valid = enroll_kept + mix_frames * FRAME_SAMPLES
        mel = whisper_log_mel(audio, valid, self.n_mels)
        frames, keys = self._encoder(whisper, mel, speaker, None if self.input_padding == "pad30" else
                                     valid // WHISPER_HOP)
        starts = enroll_frames + extra
        index = starts[:, None] + torch.arange(int(mix_frames.max()), device=frames.device)[None]
        index = index.clamp(max=frames.shape[1] - 1)
        mixture_part = frames.gather(1, index[..., None].expand(-1, -1, self.width))
        inside = torch.arange(index.shape[1], device=frames.device)[None] < mix_frames[:, None]
        return frames, keys, mixture_part * inside[..., None], mix_frames

    def _encoder(self, whisper, mel: torch.Tensor, speaker: torch.Tensor | None,
                 mel_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Whisper's encoder with the speaker embedding injected (none: Whisper's own input, for
        bench/whisper_input.py) and LoRA on its attention projections: (frames (B, N, width), which are the
        example's own (B, N)). ``mel_lengths`` (B,): each example's own mel frames, the rest batch padding that
        its frames do not see (None: every frame is the example's)."""
        encoder = whisper.encoder
        keys = None
        if mel_lengths is not None:  # batch padding reads as the zeros the convolutions pad an example alone with
            mel = mel * (torch.arange(mel.shape[-1], device=mel.device)[None] < mel_lengths[:, None])[:, None]
        x = F.gelu(encoder.conv2(F.gelu(encoder.conv1(mel)))).transpose(1, 2)
        prepended = speaker is not None and self.speaker_injection == "prepend"
        if speaker is not None:
            injected = self.speaker_to_encoder(speaker)[:, None]
            x = torch.cat([injected, x] if prepended else [injected, x[:, 1:]], 1)
        if mel_lengths is not None:
            own = mel_lengths // ENCODER_STRIDE + int(prepended)
            keys = torch.arange(x.shape[1], device=x.device)[None] < own[:, None]
        x = x + encoder.positional_embedding[: x.shape[1]].to(x.dtype)
        for index, block in enumerate(encoder.blocks):
            x = x + self._attention(index, block.attn, block.attn_ln(x), keys)
            x = x + block.mlp(block.mlp_ln(x))
        x = encoder.ln_post(x)
        return (x, None) if keys is None else (x * keys[..., None], keys)

    def _attention(self, index: int, attention, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        def projection(name: str, inputs: torch.Tensor) -> torch.Tensor:
            out = getattr(attention, name)(inputs)
            key = f"{index}_{name}"
            return out + self.lora[key](inputs) if key in self.lora else out

        mixed = attend(projection("query", x), projection("key", x), projection("value", x), attention.n_head, keys)
        return projection("out", mixed)

    # --- target-speaker ASR ---------------------------------------------------------------------------------

    def transcript_tokens(self, texts: list[str]) -> list[list[int]]:
        """Each transcript as Whisper tokens in ``text_case``, followed by end-of-text."""
        out = []
        for text in texts:
            text = " ".join(text.split())
            if self.text_case == "sentence":
                text = text[:1].upper() + text[1:].lower()
            elif self.text_case == "lower":
                text = text.lower()
            out.append([*self.tokenizer.encode(" " + text), self.tokenizer.eot])
        return out

    @staticmethod
    def _decode(decoder, tokens: torch.Tensor, memory: list[tuple[torch.Tensor, torch.Tensor]],
                keys: torch.Tensor | None, cache: list | None = None) -> torch.Tensor:
        """Logits (B, L, vocab) of Whisper's frozen decoder for ``tokens`` (B, L), its cross-attention limited to
        each example's own encoder frames ``keys`` (B, N) (None: all); ``memory``: each block's cross-attention
        keys and values (``_memory``). ``cache`` (greedy decoding): a list, empty at first, that keeps each
        block's self-attention keys and values, so that each later call passes only the next token. Whisper's
        own forward has no key mask (and its cache hooks serve only that forward)."""
        offset = cache[0][0].shape[1] if cache else 0
        x = decoder.token_embedding(tokens) + decoder.positional_embedding[offset : offset + tokens.shape[1]]
        for index, (block, (key, value)) in enumerate(zip(decoder.blocks, memory, strict=True)):
            attention, h = block.attn, block.attn_ln(x)
            past = (attention.key(h), attention.value(h))
            if cache is not None and index < len(cache):
                past = cache[index] = tuple(torch.cat(pair, 1) for pair in zip(cache[index], past, strict=True))
            elif cache is not None:
                cache.append(past)
            # causal over the tokens of this call; a later call's one token sees all before it
            x = x + attention.out(attend(attention.query(h), *past, attention.n_head, causal=offset == 0))
            cross = block.cross_attn
            x = x + cross.out(attend(cross.query(block.cross_attn_ln(x)), key, value, cross.n_head, keys))
            x = x + block.mlp(block.mlp_ln(x))
        return (decoder.ln(x) @ decoder.token_embedding.weight.T).float()

    @staticmethod
    def _memory(decoder, frames: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder block's cross-attention keys and values of the encoder frames, computed once."""
        return [(block.cross_attn.key(frames), block.cross_attn.value(frames)) for block in decoder.blocks]

    def asr_loss(self, frames: torch.Tensor, texts: list[str], keys: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example cross-entropy (B,) of the frozen decoder on the target transcripts, attending to the
        encoder frames marked in ``keys`` (B, N) (None: all)."""
        decoder = self.whisper(frames.device).decoder
        targets = self.transcript_tokens(texts)
        width = len(self.prompt) + max(len(t) for t in targets) - 1
        inputs = torch.full((len(targets), width), self.tokenizer.eot, dtype=torch.long)
        labels = torch.full((len(targets), width), IGNORE, dtype=torch.long)
        for row, tokens in enumerate(targets):
            sequence = self.prompt + tokens
            inputs[row, : len(sequence) - 1] = torch.tensor(sequence[:-1])
            labels[row, len(self.prompt) - 1 : len(sequence) - 1] = torch.tensor(tokens)
        if width > decoder.positional_embedding.shape[0]:
            raise TsekitError(f"whisper_cfm: a transcript of {width} tokens is longer than the decoder's "
                              f"{decoder.positional_embedding.shape[0]}")
        logits = self._decode(decoder, inputs.to(frames.device), self._memory(decoder, frames), keys)
        labels = labels.to(frames.device)
        ce = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
        return ce.sum(1) / (labels != IGNORE).sum(1)

    @torch.no_grad()
    def transcribe(self, frames: torch.Tensor, keys: torch.Tensor | None = None) -> list[str]:
        """Greedy transcripts of encoder frames (B, N, width) by the frozen decoder, attending to the frames
        marked in ``keys`` (B, N) (None: all)."""
        whisper = self.whisper(frames.device)
        size = frames.shape[0]
        tokens = torch.tensor([self.prompt] * size, device=frames.device)
        eot = self.tokenizer.eot
        suppressed = torch.zeros(whisper.dims.n_vocab, dtype=torch.bool, device=frames.device)
        suppressed[eot + 1:] = True  # every special token but end-of-text
        done = torch.zeros(size, dtype=torch.bool, device=frames.device)
        memory, cache, step_input = self._memory(whisper.decoder, frames), [], tokens
        for step in range(self.max_text_tokens):
            logits = self._decode(whisper.decoder, step_input, memory, keys, cache)[:, -1]
            logits = logits.masked_fill(suppressed, -math.inf)
            if step == 0:  # no empty transcript: Whisper's blank suppression
                logits[:, eot] = -math.inf
            chosen = torch.where(done, eot, logits.argmax(-1))
            tokens = torch.cat([tokens, chosen[:, None]], 1)
            done |= chosen == eot
            if bool(done.all()):
                break
            step_input = chosen[:, None]
        texts = []
        for row in tokens[:, len(self.prompt):].tolist():
            row = row[: row.index(eot)] if eot in row else row
            texts.append(self.tokenizer.decode(row).strip())
        return texts

    # --- flow matching --------------------------------------------------------------------------------------

    def vocoder_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """The vocoder's log-mel (B, n_mels, M) of waveforms (B, T) at ``sample_rate``, normalised."""
        from tsekit.codec.registry import resample

        vocoder = self.vocoder(wav.device)
        with torch.no_grad():
            mel = vocoder.mel(resample(wav, self.sample_rate, vocoder.sample_rate))
        return (mel - self.mel_mean) / self.mel_std

    def regulate(self, mixture_frames: torch.Tensor, counts: torch.Tensor, mel_frames: torch.Tensor,
                 speaker: torch.Tensor, mixture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mu (B, n_mels, M), mel mask (B, 1, M), speaker condition (B, n_mels)) from the mixture part's encoder
        frames (B, Fm, width) with ``counts`` valid, through the frame encoder (projected to ``frame_width``,
        ``frame_layers`` blocks), stretched to ``mel_frames`` (B,) by linear interpolation;
        with ``mixture_mel`` the mixture's (waveform (B, T)) own mel, through a convolution, is added to mu."""
        padding = torch.arange(mixture_frames.shape[1], device=counts.device)[None] >= counts[:, None]
        x = mixture_frames if self.frame_input is None else self.frame_input(mixture_frames)
        for block in self.frame_blocks:
            x = block(x, padding)
        x = x.transpose(1, 2)
        longest = int(mel_frames.max())
        mu = x.new_zeros(x.shape[0], x.shape[1], longest)
        for row in range(x.shape[0]):
            stretched = F.interpolate(x[row : row + 1, :, : max(int(counts[row]), 1)], size=int(mel_frames[row]),
                                      mode="linear", align_corners=False)
            mu[row, :, : int(mel_frames[row])] = stretched[0]
        mu = self.frames_to_mel(mu.transpose(1, 2)).transpose(1, 2)
        mask = (torch.arange(longest, device=counts.device)[None] < mel_frames[:, None]).float()[:, None]
        if self.mixture_to_mel is not None:
            mixture_mel = self.vocoder_mel(mixture)[..., :longest]
            mu = mu + self.mixture_to_mel(F.pad(mixture_mel, (0, longest - mixture_mel.shape[-1])) * mask)
        return mu * mask, mask, self.speaker_to_mel(speaker)

    def _mel_frames(self, samples: torch.Tensor) -> torch.Tensor:
        """Mel frames the vocoder gives for ``samples`` (B,) at ``sample_rate``."""
        vocoder = self.vocoder()
        at_vocoder = torch.ceil(samples.float() * vocoder.sample_rate / self.sample_rate)
        return torch.ceil(at_vocoder / vocoder.hop_length).long().clamp(min=1)

    # --- training -------------------------------------------------------------------------------------------

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """With ``target``: {"objective", "cfm", "asr_ce"} per example; without: {"estimate"}."""
        if "target" not in batch:
            return {"estimate": self.extract(batch["mixture"], batch["enroll"])}
        if "text" not in batch:
            raise TsekitError("whisper_cfm: the batch has no transcripts (text); the data dir needs a text file")
        mixture, lengths = batch["mixture"], batch["lengths"]
        speaker = self.speaker(batch["enroll"], batch["enroll_lengths"])
        frames, keys, mixture_part, counts = self.encode(mixture, lengths, batch["enroll"],
                                                         batch["enroll_lengths"], speaker)
        mel = self.vocoder_mel(batch["target"])
        mel_frames = self._mel_frames(lengths).clamp(max=mel.shape[-1])
        mu, mask, spk = self.regulate(mixture_part, counts, mel_frames, speaker, mixture)
        generator = None if self.training else torch.Generator(device=mu.device).manual_seed(self.seed)
        cfm = cfm_loss(self.estimator, mel[..., : mu.shape[-1]] * mask, mask, mu, spk, self.sigma_min,
                       self.condition_drop if self.training else 0.0, self.time_schedule, generator)
        if self.asr_weight > 0:
            ce = self.asr_loss(frames, batch["text"], keys)
            objective = cfm + self.asr_weight * ce
        else:  # the flow-only ablation: the transcripts are still scored, without a gradient
            with torch.no_grad():
                ce = self.asr_loss(frames, batch["text"], keys)
            objective = cfm
        return {"objective": objective, "cfm": cfm.detach(), "asr_ce": ce.detach()}

    # --- inference ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_mel(self, mixture_part: torch.Tensor, counts: torch.Tensor, lengths: torch.Tensor,
                     speaker: torch.Tensor, mixture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The target's normalised mel (B, n_mels, M) and its frame counts, by the guided Euler sampler."""
        mel_frames = self._mel_frames(lengths)
        mu, mask, spk = self.regulate(mixture_part, counts, mel_frames, speaker, mixture)
        generator = torch.Generator(device=mu.device).manual_seed(self.seed)
        mel = euler_sample(self.estimator, mu, mask, spk, self.flow_steps, self.guidance, self.time_schedule,
                           self.temperature, generator)
        return mel, mel_frames

    @torch.no_grad()
    def _infer(self, mixture: torch.Tensor, enroll: torch.Tensor, with_text: bool) -> tuple[torch.Tensor, list[str]]:
        from tsekit.codec.registry import resample

        size, length = mixture.shape
        lengths = torch.full((size,), length, dtype=torch.long, device=mixture.device)
        enroll_lengths = torch.full((size,), enroll.shape[-1], dtype=torch.long, device=mixture.device)
        speaker = self.speaker(enroll, enroll_lengths)
        frames, keys, mixture_part, counts = self.encode(mixture, lengths, enroll, enroll_lengths, speaker)
        mel, _ = self.generate_mel(mixture_part, counts, lengths, speaker, mixture)
        vocoder = self.vocoder(mixture.device)
        wav = resample(vocoder(mel * self.mel_std + self.mel_mean), vocoder.sample_rate, self.sample_rate)
        wav = F.pad(wav, (0, max(length - wav.shape[-1], 0)))[..., :length]
        return wav, self.transcribe(frames, keys) if with_text else []

    @torch.no_grad()
    def extract(self, mixture: torch.Tensor, enroll: torch.Tensor) -> torch.Tensor:
        """Target speech (B, T) from mixtures (B, T) and enrollments (B, Te)."""
        return self._infer(mixture, enroll, with_text=False)[0]

    def extract_with_text(self, mixture: torch.Tensor,
                          enrollments: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[str]]:
        return self._infer(mixture, enrollments["enroll"], with_text=True)
