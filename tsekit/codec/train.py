"""One GAN training engine for the toolkit's codec (``tsekit_codec``) and vocoder (``tsekit_vocoder``).

``tsekit codec train`` writes ``EXP/``:

- ``config.yaml``: the resolved config (every key), which ``load_trained`` builds the generator from;
- ``checkpoints/last.pt``: generator (``model``), discriminator, both optimizers, step, torch RNG; written
  atomically every ``train.save_interval`` steps and at the end, so a killed run continues from it;
- ``codec.pt``: the generator's weights only, the file inference loads, written when training is done;
- ``log/scalars.tsv`` (and TensorBoard files when tensorboard is installed), as the TSE trainer.

A step: the generator resynthesises a batch of random crops of clean speech (the ``spk1.scp`` targets of a
Kaldi data dir); from step ``train.adversarial_start`` on, the discriminator takes one step on (real,
generated) and the generator adds the adversarial and feature-matching losses to its multi-scale mel loss
(and, for a codec, the quantiser's commitment loss). Starting the discriminator late (HiFi-GAN and Vocos
start at once; DAC and several vocoder recipes warm the generator up on the reconstruction losses first)
saves CPU time while the generator is still far from speech, where the discriminator only learns to spot
obvious artefacts; 0 starts it at once.

Examples are drawn by step: example ``k`` of the run (step ``k // batch_size``) takes its row and crop from
a generator seeded with (seed, k), so a resumed run sees the batches an uninterrupted one would have.
Validation (every ``valid_interval`` steps and at the end) resynthesises the first ``valid_utterances``
targets of the valid data dir whole and logs mel L1, SI-SDR and PESQ (SI-SDR is low for a vocoder, whose
phase is free; PESQ is the meaningful one).

Inputs are checked before anything is written: every training target from its header
(``tsekit.data.audio.check_audio``), and the validation targets are read then (the few seconds validated),
so a missing, empty or multi-channel file, or NaN in validation audio, stops the run before its first step.
NaN in a training target is found when its crop is read: one line naming the file and row, from a worker
process too (``tsekit.data.dataset.batches``).
"""

from __future__ import annotations

import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from tsekit import TsekitError
from tsekit.codec.registry import codec_class, resample
from tsekit.typed_config import (
    ConfigProblem,
    build_typed,
    checked_arguments,
    config_to_dict,
    format_config,
    load_typed,
    require,
)

CONFIG = "config.yaml"
WEIGHTS = "codec.pt"
EXPORTED_WEIGHTS = "model.safetensors"  # the same weights, as a packaged model carries a codec it speaks through
LAST = "last.pt"


@dataclass
class CodecSection:
    """The registered codec or vocoder to train and its constructor arguments."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class CodecDataConfig:
    sample_rate: int | None = None  # null = the codec's own rate; audio at another rate is resampled
    chunk_seconds: float = 1.0  # random training crops
    batch_size: int = 8
    num_workers: int = 0
    valid_utterances: int = 8  # the first N targets of the valid data dir are validated
    valid_max_seconds: float = 6.0  # longer validation targets are cut (CPU time)


@dataclass
class AdamWConfig:
    lr: float = 5e-4
    betas: tuple[float, float] = (0.8, 0.99)  # HiFi-GAN / Vocos / DAC
    weight_decay: float = 0.01
    grad_clip: float = 1000.0  # max gradient norm (DAC: 1e3 for the generator); 0 = off


@dataclass
class OptimSections:
    generator: AdamWConfig = field(default_factory=AdamWConfig)
    discriminator: AdamWConfig = field(default_factory=AdamWConfig)


@dataclass
class LossConfig:
    """Loss weights (HiFi-GAN / Vocos: mel 45, adversarial 1, feature matching 2; EnCodec: commitment 1)."""

    mel: float = 45.0
    adversarial: float = 1.0
    feature_matching: float = 2.0
    commitment: float = 1.0  # codecs only
    waveform: float = 0.0  # L1 on samples; off by default (it fights the free phase of a vocoder)
    adversarial_kind: Literal["hinge", "least_squares"] = "hinge"
    mel_scales: list[tuple[int, int, int]] = field(
        default_factory=lambda: [(512, 128, 40), (1024, 256, 80), (2048, 512, 128)])  # (n_fft, hop, n_mels)


@dataclass
class DiscriminatorConfig:
    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])  # [] = no period discriminator
    period_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    resolutions: list[tuple[int, int]] = field(default_factory=lambda: [(1024, 256), (2048, 512), (512, 128)])
    stft_channels: int = 32


@dataclass
class CodecTrainSection:
    steps: int = 3000
    adversarial_start: int = 0  # steps trained on reconstruction losses alone before the discriminator joins
    valid_interval: int = 500
    save_interval: int = 200
    log_interval: int = 50
    seed: int = 0


@dataclass
class CodecTrainConfig:
    codec: CodecSection
    data: CodecDataConfig = field(default_factory=CodecDataConfig)
    optim: OptimSections = field(default_factory=OptimSections)
    loss: LossConfig = field(default_factory=LossConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    train: CodecTrainSection = field(default_factory=CodecTrainSection)


# ---------------------------------------------------------------------------------------------------------
# config


def load_codec_config(path: str | os.PathLike, overrides: typing.Iterable[str] = ()) -> CodecTrainConfig:
    """Read a codec/vocoder training YAML and apply ``key.sub=value`` overrides; every key and value checked.

    Errors are one line naming the file, or the override that caused them; an unknown key lists the valid
    ones (``tsekit.typed_config``, the experiments' engine too).
    """
    return load_typed(path, CodecTrainConfig, _check, overrides)


def codec_config_from_dict(raw: dict, source: str = "config") -> CodecTrainConfig:
    return build_typed(raw, CodecTrainConfig, _check, source)


def _check(cfg: CodecTrainConfig) -> None:
    """Codec params against the registered constructor (names and types), then value ranges."""
    try:
        cls = codec_class(cfg.codec.name)
    except TsekitError as e:
        raise ConfigProblem("codec.name", f"codec.name: {e}") from None
    cfg.codec.params = checked_arguments(cls, cfg.codec.params, "codec.params", f"codec {cfg.codec.name}")
    data, train = cfg.data, cfg.train
    require(data.sample_rate is None or data.sample_rate > 0, "data.sample_rate", "> 0 or null", data.sample_rate)
    require(math.isfinite(data.chunk_seconds) and data.chunk_seconds > 0, "data.chunk_seconds", "> 0",
             data.chunk_seconds)
    require(data.batch_size >= 1, "data.batch_size", ">= 1", data.batch_size)
    require(data.num_workers >= 0, "data.num_workers", ">= 0", data.num_workers)
    require(data.valid_utterances >= 1, "data.valid_utterances", ">= 1", data.valid_utterances)
    require(data.valid_max_seconds > 0, "data.valid_max_seconds", "> 0", data.valid_max_seconds)
    for who in ("generator", "discriminator"):
        optim = getattr(cfg.optim, who)
        require(math.isfinite(optim.lr) and optim.lr > 0, f"optim.{who}.lr", "> 0", optim.lr)
        require(all(0 <= b < 1 for b in optim.betas), f"optim.{who}.betas", "two values in [0, 1)", list(optim.betas))
        require(optim.weight_decay >= 0, f"optim.{who}.weight_decay", ">= 0", optim.weight_decay)
        require(optim.grad_clip >= 0, f"optim.{who}.grad_clip", ">= 0 (0 = off)", optim.grad_clip)
    for name in ("mel", "adversarial", "feature_matching", "commitment", "waveform"):
        value = getattr(cfg.loss, name)
        require(math.isfinite(value) and value >= 0, f"loss.{name}", ">= 0", value)
    require(bool(cfg.loss.mel_scales), "loss.mel_scales", "at least one [n_fft, hop, n_mels]", cfg.loss.mel_scales)
    require(train.steps >= 1, "train.steps", ">= 1", train.steps)
    require(train.adversarial_start >= 0, "train.adversarial_start", ">= 0", train.adversarial_start)
    for name in ("valid_interval", "save_interval", "log_interval"):
        require(getattr(train, name) >= 1, f"train.{name}", ">= 1", getattr(train, name))


# ---------------------------------------------------------------------------------------------------------
# data


class CleanCrops(torch.utils.data.Dataset):
    """Example ``k`` = a random crop of ``samples`` samples of a random clean target, drawn with seed (seed, k).

    Targets shorter than the crop are zero-padded at the end. Audio at another rate than ``rate`` is read
    over the matching span and resampled.
    """

    def __init__(self, data_dir: Path, rate: int, samples: int, seed: int):
        from tsekit.data.audio import check_audio

        self.scp = data_dir / "spk1.scp"
        targets = _targets(data_dir)
        headers = check_audio({self.scp: targets})[self.scp]  # every file, before the first step; any rate
        self.entries = [(utt, entry, headers[utt][0]) for utt, entry in targets.items()]
        self.lengths = [headers[utt][1] for utt in targets]
        self.rate, self.samples, self.seed = rate, samples, seed

    def __len__(self) -> int:
        return 2**62  # indexed by example number; the sampler decides how many

    def __getitem__(self, k: int) -> torch.Tensor:
        from tsekit.data.audio import load_audio

        rng = np.random.default_rng([self.seed, k])
        row = int(rng.integers(len(self.entries)))
        utt, entry, file_rate = self.entries[row]
        want = math.ceil(self.samples * file_rate / self.rate)  # samples to read at the file's rate
        start = int(rng.integers(max(self.lengths[row] - want, 0) + 1))
        audio, _ = load_audio(entry, f"{self.scp}: {utt}", start, want)  # mono: checked in __init__
        wav = resample(torch.from_numpy(audio), file_rate, self.rate)[: self.samples]
        return torch.nn.functional.pad(wav, (0, self.samples - wav.shape[-1]))


class FromStep(torch.utils.data.Sampler):
    """Example numbers ``start * batch .. steps * batch``: the examples of the steps still to run."""

    def __init__(self, start: int, steps: int, batch_size: int):
        self.range = range(start * batch_size, steps * batch_size)

    def __iter__(self):
        return iter(self.range)

    def __len__(self) -> int:
        return len(self.range)


def _targets(data_dir: Path) -> dict[str, str]:
    from tsekit.data.table import read_table

    scp = data_dir / "spk1.scp"
    if not data_dir.is_dir():
        raise TsekitError(f"{data_dir}: data directory not found")
    if not scp.is_file():
        raise TsekitError(f"{scp}: file not found (a codec trains on the clean targets of a data dir)")
    table = read_table(scp)
    if not table:
        raise TsekitError(f"{scp}: no utterances")
    return table


# ---------------------------------------------------------------------------------------------------------
# the generator's training pass


def reconstruct(generator: torch.nn.Module, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(resynthesis cropped to the input's length, commitment loss: 0 for a vocoder)."""
    from tsekit.pretrained.codec_base import Vocoder

    if isinstance(generator, Vocoder):
        out, commitment = generator(generator.mel(wav)), wav.new_zeros(())
    elif hasattr(generator, "reconstruct"):
        out, commitment = generator.reconstruct(wav)
    else:
        raise TsekitError(f"codec {generator.registry_name} cannot be trained by the toolkit (no reconstruct)")
    return out[..., : wav.shape[-1]], commitment


# ---------------------------------------------------------------------------------------------------------
# training


def train_codec(cfg: CodecTrainConfig, train_data: str | os.PathLike, valid_data: str | os.PathLike,
                exp_dir: str | os.PathLike, device: str | None = None) -> Path:
    """Train (or resume, or find finished) a codec or vocoder into ``exp_dir``; returns ``exp_dir``.

    Raises ``tsekit.lock.LockedError`` when another live process trains the same experiment.
    """
    from tsekit.jobs import torch_device
    from tsekit.lock import writer_lock

    exp = Path(exp_dir)
    with writer_lock(exp):
        return _train(cfg, Path(train_data), Path(valid_data), exp,
                      torch_device(device or ("cuda" if torch.cuda.is_available() else "cpu")))


def _train(cfg: CodecTrainConfig, train_data: Path, valid_data: Path, exp: Path, device: torch.device) -> Path:
    from tqdm import tqdm

    from tsekit import checkpoint as ckpt
    from tsekit.codec.discriminators import (
        Discriminators,
        MultiScaleMelLoss,
        discriminator_loss,
        feature_matching_loss,
        generator_adversarial_loss,
    )
    from tsekit.codec.registry import build_codec
    from tsekit.data.dataset import batches
    from tsekit.jobs import ScalarLog, atomic_open

    last = exp / "checkpoints" / LAST
    config_plain = config_to_dict(cfg)
    saved_step = None
    if last.is_file():
        state = ckpt.load_checkpoint(last, map_location=device)
        saved_step = state["step"]
        if state.get("config", {}).get("codec") != config_plain["codec"]:
            raise TsekitError(f"{exp}: trained with another codec section ({state.get('config', {}).get('codec')}); "
                              "use a new --exp-dir")
        if saved_step >= cfg.train.steps and (exp / WEIGHTS).is_file():
            print(f"{exp}: already trained ({saved_step} steps); nothing to do", flush=True)
            return exp

    torch.manual_seed(cfg.train.seed)
    generator = build_codec(cfg.codec.name, cfg.codec.params).to(device)
    rate = int(generator.sample_rate)
    if cfg.data.sample_rate is not None and cfg.data.sample_rate != rate:
        raise TsekitError(f"data.sample_rate {cfg.data.sample_rate} differs from the sample rate of codec "
                          f"{cfg.codec.name} ({rate}); set codec.params.sample_rate or leave data.sample_rate null")
    d = cfg.discriminator
    discriminator = Discriminators(tuple(d.periods), tuple(d.period_channels), tuple(map(tuple, d.resolutions)),
                                   d.stft_channels).to(device)
    mel_loss = MultiScaleMelLoss(rate, tuple(map(tuple, cfg.loss.mel_scales))).to(device)

    def adamw(params, section: AdamWConfig) -> torch.optim.AdamW:
        return torch.optim.AdamW(params, lr=section.lr, betas=tuple(section.betas), weight_decay=section.weight_decay)

    optim_g = adamw(generator.parameters(), cfg.optim.generator)
    optim_d = adamw(discriminator.parameters(), cfg.optim.discriminator)
    samples = int(round(cfg.data.chunk_seconds * rate))
    train_set = CleanCrops(train_data, rate, samples, cfg.train.seed)
    valid_wavs = validation_audio(valid_data, cfg.data.valid_utterances, rate, cfg.data.valid_max_seconds)
    step = 0
    if saved_step is not None:
        ckpt.load_weights(generator, state["model"], last)
        ckpt.load_weights(discriminator, state["discriminator"], last)
        optim_g.load_state_dict(state["optim_generator"])
        optim_d.load_state_dict(state["optim_discriminator"])
        torch.set_rng_state(state["rng"])
        step = saved_step
        print(f"resumed from {last}: step {step}", flush=True)
    exp.mkdir(parents=True, exist_ok=True)
    with atomic_open(exp / CONFIG) as f:  # the resolved config of this run (train.steps may have grown)
        f.write(format_config(cfg))
    log = ScalarLog(exp / "log", True)
    kind = cfg.loss.adversarial_kind

    def snapshot() -> dict:
        return {"model": generator.state_dict(), "discriminator": discriminator.state_dict(),
                "optim_generator": optim_g.state_dict(), "optim_discriminator": optim_d.state_dict(),
                "step": step, "rng": torch.get_rng_state(), "config": config_plain}

    def clip(module: torch.nn.Module, limit: float) -> None:
        if limit:
            torch.nn.utils.clip_grad_norm_(module.parameters(), limit)

    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.data.batch_size,
                                         sampler=FromStep(step, cfg.train.steps, cfg.data.batch_size),
                                         num_workers=cfg.data.num_workers, drop_last=True)
    generator.train()
    discriminator.train()
    bar = tqdm(total=cfg.train.steps, initial=step, desc=f"training {cfg.codec.name}", disable=None, leave=False)
    skipped = 0
    try:
        for wav in batches(loader):  # a worker's error as its one line
            wav = wav.to(device)
            fake, commitment = reconstruct(generator, wav)
            adversarial = step >= cfg.train.adversarial_start and (cfg.loss.adversarial or cfg.loss.feature_matching)
            parts: dict[str, torch.Tensor] = {}
            if adversarial:
                d_loss = discriminator_loss(discriminator(wav), discriminator(fake.detach()), kind)
                optim_d.zero_grad(set_to_none=True)
                if torch.isfinite(d_loss):
                    d_loss.backward()
                    clip(discriminator, cfg.optim.discriminator.grad_clip)
                    optim_d.step()
                parts["discriminator"] = d_loss.detach()
            parts["mel"] = mel_loss(fake, wav)
            g_loss = cfg.loss.mel * parts["mel"]
            if cfg.loss.commitment and commitment.requires_grad:
                parts["commitment"] = commitment
                g_loss = g_loss + cfg.loss.commitment * commitment
            if cfg.loss.waveform:
                parts["waveform"] = (fake - wav).abs().mean()
                g_loss = g_loss + cfg.loss.waveform * parts["waveform"]
            if adversarial:
                discriminator.requires_grad_(False)  # the generator's step leaves the discriminator alone
                judged_fake = discriminator(fake)
                with torch.no_grad():
                    judged_real = discriminator(wav)
                discriminator.requires_grad_(True)
                parts["adversarial"] = generator_adversarial_loss(judged_fake, kind)
                parts["feature_matching"] = feature_matching_loss(judged_real, judged_fake)
                g_loss = g_loss + cfg.loss.adversarial * parts["adversarial"]
                g_loss = g_loss + cfg.loss.feature_matching * parts["feature_matching"]
            optim_g.zero_grad(set_to_none=True)
            if torch.isfinite(g_loss):
                g_loss.backward()
                clip(generator, cfg.optim.generator.grad_clip)
                optim_g.step()
            else:
                skipped += 1  # a non-finite loss skips the update; the step still counts, so resuming stays aligned
            step += 1
            bar.update(1)
            if step % cfg.train.log_interval == 0:
                log.add("train/generator", g_loss.item(), step)
                for name, value in parts.items():
                    log.add(f"train/{name}", value.item(), step)
                bar.set_postfix(mel=f"{parts['mel'].item():.3f}")
            if step % cfg.train.valid_interval == 0 or step == cfg.train.steps:
                scores = validate(generator, valid_wavs, rate, mel_loss, device)
                for name, value in scores.items():
                    log.add(f"valid/{name}", value, step)
                print(f"step {step}/{cfg.train.steps}: valid " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()),
                      flush=True)
                generator.train()
            if step % cfg.train.save_interval == 0 or step == cfg.train.steps:
                ckpt.save_checkpoint(last, snapshot())
    finally:
        bar.close()
        log.close()
    if skipped:
        print(f"{skipped} steps skipped for a non-finite loss", flush=True)
    ckpt.save_checkpoint(last, snapshot())
    ckpt.save_checkpoint(exp / WEIGHTS, {"model": generator.state_dict(), "step": step, "config": config_plain})
    print(f"trained {cfg.codec.name} for {step} steps: {exp / WEIGHTS}", flush=True)
    return exp


def validation_audio(valid_data: Path, count: int, rate: int, max_seconds: float) -> list[torch.Tensor]:
    """The first ``count`` targets of ``valid_data``, their first ``max_seconds`` at ``rate``: checked and read
    before the first training step, so a bad file (NaN included) stops the run before it writes anything."""
    from tsekit.data.audio import check_audio, load_audio
    from tsekit.data.table import sorted_keys

    scp = valid_data / "spk1.scp"
    table = _targets(valid_data)
    rows = {utt: table[utt] for utt in sorted_keys(table)[:count]}
    wavs = []
    for utt, (file_rate, _) in check_audio({scp: rows})[scp].items():
        audio, _ = load_audio(rows[utt], f"{scp}: {utt}", 0, math.ceil(max_seconds * file_rate))
        wavs.append(resample(torch.from_numpy(audio), file_rate, rate)[: int(max_seconds * rate)])
    return wavs


@torch.no_grad()
def validate(generator: torch.nn.Module, wavs: list[torch.Tensor], rate: int, mel_loss: torch.nn.Module,
             device: torch.device) -> dict[str, float]:
    """Mean multi-scale mel L1, SI-SDR and PESQ (at 16 kHz or 8 kHz) of whole-utterance resyntheses of ``wavs``
    (at ``rate``)."""
    from tsekit.metrics.quality import pesq_score
    from tsekit.metrics.sdr import si_sdr

    generator.eval()
    sums = {"mel_l1": 0.0, "si_sdr": 0.0, "pesq": 0.0}
    pesq_count = 0
    for wav in wavs:
        fake, _ = reconstruct(generator, wav[None].to(device))
        fake = fake[0].cpu()
        sums["mel_l1"] += float(mel_loss(fake[None].to(device), wav[None].to(device)))
        sums["si_sdr"] += si_sdr(fake.numpy(), wav.numpy())
        pesq_rate = 8000 if rate < 16000 else 16000
        quality = pesq_score(resample(fake, rate, pesq_rate).numpy(), resample(wav, rate, pesq_rate).numpy(),
                             pesq_rate)
        if math.isfinite(quality):
            sums["pesq"] += quality
            pesq_count += 1
    scores = {"mel_l1": sums["mel_l1"] / len(wavs), "si_sdr": sums["si_sdr"] / len(wavs)}
    scores["pesq"] = sums["pesq"] / pesq_count if pesq_count else float("nan")
    return scores


# ---------------------------------------------------------------------------------------------------------
# loading


def load_trained(exp_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """The codec or vocoder trained in ``exp_dir``, built from its config.yaml, in evaluation mode.

    ``exp_dir`` may also be the copy ``tsekit export`` puts beside a packaged model: the config and the weights
    as ``model.safetensors`` (``export_trained``).
    """
    from tsekit import checkpoint as ckpt
    from tsekit.codec.registry import build_codec

    exp = Path(exp_dir)
    weights = exp / WEIGHTS
    if not weights.is_file() and not (exp / EXPORTED_WEIGHTS).is_file():
        raise TsekitError(f"{exp}: not trained yet ({WEIGHTS} missing): run tsekit codec train --config C "
                          f"--train-data D --valid-data V --exp-dir {exp}")
    if not (exp / CONFIG).is_file():
        raise TsekitError(f"{exp / CONFIG}: file not found (the config the codec was trained with)")
    cfg = load_codec_config(exp / CONFIG)
    model = build_codec(cfg.codec.name, cfg.codec.params)
    if weights.is_file():
        ckpt.load_weights(model, ckpt.load_checkpoint(weights)["model"], weights)  # weights_only=True
    else:
        ckpt.load_weights(model, ckpt.load_safetensors(exp / EXPORTED_WEIGHTS), exp / EXPORTED_WEIGHTS)
    return model.to(device).eval()


def export_trained(exp_dir: str | os.PathLike, out: Path) -> None:
    """Write the codec or vocoder trained in ``exp_dir`` into the folder ``out`` as ``load_trained`` reads an
    exported one: its config.yaml and its weights as safetensors."""
    import shutil

    from tsekit import checkpoint as ckpt

    module = load_trained(exp_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(exp_dir) / CONFIG, out / CONFIG)
    ckpt.save_safetensors(out / EXPORTED_WEIGHTS, module.state_dict())


# ---------------------------------------------------------------------------------------------------------
# resynthesis


def resynthesize(codec, wav: torch.Tensor) -> torch.Tensor:
    """One waveform (T,) at the codec's rate through encode -> decode (codec) or mel -> vocoder, cropped to T."""
    from tsekit.pretrained.codec_base import Vocoder

    with torch.no_grad():
        if isinstance(codec, Vocoder):
            out = codec(codec.mel(wav[None]))
        else:
            out = codec.decode(codec.encode(wav[None]))
    return out[0, : wav.shape[-1]]


def resynth_data_dir(codec_spec: str | os.PathLike, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                     job: int | None = None, nj: int | None = None, device: str = "cpu",
                     params: dict | None = None) -> str:
    """The clean targets (``spk1.scp``) of ``data_dir`` through a codec or vocoder: ``OUT/wav/<utt>.wav`` at the
    data's rate and length, then ``OUT/wav.scp`` once every row is done; the resynthesis ceiling of a token or
    mel system, scored like any estimate (``tsekit score --est OUT/wav.scp``).

    Checked and resumable and shardable as ``tsekit infer`` (``tsekit.infer.batch``): every target of the
    shard is checked from its header before the first wav is written; wavs are written atomically and a rerun
    skips those that are complete (``is_written``: the target's rate and length); ``job``/``nj`` pick a shard;
    one writer per shard. ``params``: constructor
    parameters of a registered codec (bandwidth, weights). Returns the summary line.
    """
    import time

    from tqdm import tqdm

    from tsekit.codec.registry import load_codec
    from tsekit.data.audio import check_audio, is_written, load_audio, write_audio
    from tsekit.data.table import sorted_keys
    from tsekit.jobs import check_job, shard, wav_path, write_scp_if_complete
    from tsekit.lock import writer_lock

    data_dir, out = Path(data_dir), Path(out_dir)
    check_job(job, nj)
    targets = _targets(data_dir)
    for utt in targets:
        if "/" in utt:
            raise TsekitError(f"{data_dir / 'spk1.scp'}: utterance id {utt!r} contains '/'; cannot be a file name")
    codec = load_codec(codec_spec, **(params or {})).to(device)
    rate = int(codec.sample_rate)
    utts = sorted_keys(targets)
    mine = shard(utts, job, nj) if job is not None else utts
    scp = data_dir / "spk1.scp"
    with writer_lock(out, f"job{job}" if job is not None else ""):
        headers = check_audio({scp: {u: targets[u] for u in mine}})[scp]  # any rate: resampled
        # done: a wav as tsekit writes it, at the target's rate and length (a truncated one is redone)
        todo = [u for u in mine if not is_written(wav_path(out, u), *headers[u])]
        started = time.perf_counter()
        for utt in tqdm(todo, desc=f"resynthesising into {out}", unit="utt", disable=None):
            audio, data_rate = load_audio(targets[utt], f"{scp}: {utt}")  # mono: checked above
            wav = resample(torch.from_numpy(audio), data_rate, rate).to(device)
            back = resample(resynthesize(codec, wav).cpu(), rate, data_rate)
            back = torch.nn.functional.pad(back, (0, max(len(audio) - back.shape[-1], 0)))[: len(audio)]
            write_audio(wav_path(out, utt), back.numpy(), data_rate)
        seconds = time.perf_counter() - started
        wrote = write_scp_if_complete(out, utts)
    who = f"job {job}/{nj}: " if job is not None else ""
    line = (f"{who}{len(todo)} of {len(mine)} targets resynthesised in {seconds:.1f} s, "
            f"{len(mine) - len(todo)} already done")
    if wrote:
        return f"{line}; all {len(utts)} done: {out / 'wav.scp'}"
    return f"{line}; {out / 'wav.scp'} is written once every job is done"
