"""The training loop every system uses: one CPU, one GPU, or many under torchrun (DDP).

Writes ``EXP/stage{N}/``: ``config.yaml`` (resolved), ``speakers.txt`` (the
speaker index of the CE loss), ``checkpoints/`` (``latest.pt``, the best N
``epochN.pt`` by validation loss, ``averaged.pt``), ``log/scalars.tsv`` (and
TensorBoard event files when the tensorboard package is installed).

Randomness: every process seeds torch, numpy and Python's ``random`` with
``train.seed`` to build the model, so all ranks start from the same weights;
then each rank switches to its own stream, seeded by (seed, rank), for the
draws of training (a diffusion model's times and noise, MaskGIT's masks,
dropout): ranks with the same stream would repeat each other's draws.

Resuming is bit-for-bit on the same hardware: the checkpoint holds model,
optimizer, scheduler, grad scaler, every rank's generator states (torch,
CUDA, numpy, ``random``), epoch and the number of batches done in that
epoch; each epoch's sample order depends only on (seed, epoch) and each
example's randomness on (seed, epoch, index), so the resumed run sees exactly
the batches the uninterrupted one would have, and draws what it would have.

``data.batch_size`` is the batch of one optimizer step over all processes.
Under torchrun, each of the W processes takes batches of ``batch_size / W``
(which must divide evenly) from its shard of the epoch (``EpochSampler``),
DDP averages the gradients, and only rank 0 writes checkpoints and logs;
validation runs on every row, sharded, with the sums reduced across ranks
(``data.valid_batch_size`` is per process: it sets memory use, not results).
A config therefore trains alike on any number of processes, up to
floating-point rounding, except in BatchNorm layers (the SpEx+ speaker
encoder's), which normalise a training batch with the statistics of each
process's part of it.

Inputs: every audio file of both data dirs is checked from its header before anything is written
(``TSEDataset.check_audio``); a file that fails when read (NaN) is one line naming it and its row, from a
DataLoader worker too (``tsekit.data.dataset.batches``).

One writer: the stage folder's writer lock (``tsekit.lock``) is held from
before anything is read or written until training ends; under torchrun rank
0 holds it for all ranks, and every rank stops when rank 0 cannot take it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tsekit import TsekitError
from tsekit import checkpoint as ckpt
from tsekit.data.table import read_table
from tsekit.jobs import ScalarLog, atomic_open
from tsekit.lock import LockedError, writer_lock

if TYPE_CHECKING:  # for annotations only; train() imports the dataset module where it needs it
    from tsekit.data.dataset import TSEDataset


def describe_hardware(device: torch.device, world: int) -> str:
    """What a training run ran on, for its log (and the model card, which reads it there): processes x the GPU's
    name, or the CPU's model and torch's threads."""
    if device.type == "cuda":
        return f"{world} x {torch.cuda.get_device_name(device)}"
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "CPU")
    return f"{world} x {cpu}, {torch.get_num_threads()} threads" if world > 1 else \
        f"{cpu}, {torch.get_num_threads()} threads"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        return []


class Distributed:
    """Rank and world size from torchrun's environment; a single process otherwise."""

    def __init__(self, device: str | None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
        self.device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(self.device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float) -> list[float]:
        """Sum over ranks (validation metrics)."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            torch.distributed.all_reduce(tensor)
        return tensor.tolist()


class EpochSampler(torch.utils.data.Sampler):
    """This rank's indices of one epoch, in an order fixed by (seed, epoch), from batch ``start`` on.

    Training (``shuffle``) shards are equal, as DDP steps in lockstep: the last
    ``size % world`` indices of the order are left out of that epoch. With
    rank r taking every world-th index, the ranks' k-th batches of size B/world
    together hold the k-th batch of size B of one process: the same examples.
    Validation shards keep every index (ranks may get one more or less).
    """

    def __init__(self, size: int, seed: int, epoch: int, shuffle: bool, rank: int, world: int,
                 batch_size: int, start_batch: int = 0):
        if shuffle:
            generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
            order = torch.randperm(size, generator=generator).tolist()
            order = order[: size - size % world]
        else:
            order = list(range(size))
        self.indices = order[rank::world][start_batch * batch_size:]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_optimizer(cfg, parameters) -> torch.optim.Optimizer:
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    return kinds[cfg.optim.name](parameters, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                                 betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)


def make_scheduler(cfg, optimizer, steps_per_epoch: int):
    """(scheduler, whether it steps every batch); None for a constant learning rate."""
    sched = cfg.scheduler
    if sched.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=sched.factor,
                                                          patience=sched.patience), False
    if sched.name == "warmup_decay":
        total = max(1, cfg.train.epochs * steps_per_epoch)
        floor = sched.min_lr / cfg.optim.lr

        def factor(step: int) -> float:
            if step < sched.warmup_steps:
                return (step + 1) / sched.warmup_steps
            progress = min(1.0, (step - sched.warmup_steps) / max(1, total - sched.warmup_steps))
            if sched.decay == "cosine":
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
            if sched.decay == "linear":
                return floor + (1 - floor) * (1 - progress)
            return max(floor, floor ** progress)  # exponential, from 1 down to floor

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True
    return None, False


class WeightAverage:
    """Exponential moving average of a model's state (``train.ema``): avg <- decay * avg + (1 - decay) * w.

    Diffusion models (DDTSE, SGMSE+) are validated and sampled with the average, whose weights are
    far less noisy than the last step's. Integer buffers are copied, not averaged.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                self.state[key].lerp_(value, 1 - self.decay)
            else:
                self.state[key].copy_(value)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module):
        """The model holds the averaged weights inside the block, its own again after it."""
        own = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.state)
        try:
            yield
        finally:
            model.load_state_dict(own)


def training_speakers(train_data: Path) -> list[str]:
    return sorted(set(read_table(train_data / "utt2spk").values()))


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _init_from(model: torch.nn.Module, where: str, key: str) -> str:
    """Start from the weights of an experiment (root, stage folder, packaged model) or a checkpoint file."""
    from tsekit.train.experiment import find_checkpoint

    try:
        path = find_checkpoint(where, where if Path(where).is_file() else None)
    except TsekitError as err:
        raise TsekitError(f"{key}: {err}") from None
    state = ckpt.load_safetensors(path) if path.suffix == ".safetensors" else ckpt.load_checkpoint(path)["model"]
    missing, unexpected = ckpt.load_weights(model, state, path, strict=False)
    return f"initialised from {path} ({len(missing)} missing, {len(unexpected)} unexpected tensors)"


def _freeze(model: torch.nn.Module, prefixes: list[str]) -> str:
    frozen = 0
    for name, parameter in model.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return f"{frozen} parameters frozen ({', '.join(prefixes)})"


def _load_teacher(where: str, device: torch.device) -> torch.nn.Module:
    """The frozen distillation teacher: an experiment root, a stage folder or a checkpoint file."""
    from tsekit.train.experiment import load_experiment

    teacher, teacher_cfg = load_experiment(where, where if Path(where).is_file() else None, device)
    if not hasattr(teacher, "distillation_targets"):
        raise TsekitError(f"distill.teacher {where}: model {teacher_cfg.model.name} cannot be a distillation "
                          "teacher (it has no distillation_targets)")
    return teacher.requires_grad_(False).eval()


def train(cfg, train_data: str | os.PathLike, valid_data: str | os.PathLike, exp_dir: str | os.PathLike,
          stage: int = 1, resume: bool = True, device: str | None = None) -> Path:
    """Train (or resume) stage ``stage`` of an experiment; returns the stage folder.

    Raises ``tsekit.lock.LockedError`` when another live process trains the same stage.
    """
    dist = Distributed(device)
    stage_dir = Path(exp_dir) / f"stage{stage}"
    with _stage_lock(stage_dir, dist):
        return _train(cfg, Path(train_data), Path(valid_data), stage_dir, stage, resume, dist)


@contextlib.contextmanager
def _stage_lock(stage_dir: Path, dist: Distributed):
    """The stage folder's writer lock, taken by rank 0 for every rank; all ranks stop when it is refused."""
    with contextlib.ExitStack() as stack:
        refused = None
        if dist.main:
            try:
                stack.enter_context(writer_lock(stage_dir))
            except LockedError as err:
                refused = err
        stop = refused is not None
        if dist.world > 1:  # every rank learns rank 0's answer
            stop = bool(dist.sum(float(stop))[0])
        if stop:
            raise refused or LockedError(f"{stage_dir}: rank 0 could not take the writer lock; see its log")
        yield


def _train(cfg, train_data: Path, valid_data: Path, stage_dir: Path, stage: int, resume: bool,
           dist: Distributed) -> Path:
    from tqdm import tqdm

    from tsekit.codec.registry import SECTIONS, record_codec_references, resolve_codec_references
    from tsekit.data.dataset import TSEDataset, batches, collate
    from tsekit.models.registry import build_model, model_params
    from tsekit.train.config import save_config
    from tsekit.train.losses import compute_loss
    from tsekit.typed_config import config_to_dict

    if stage > 1 and cfg.stage2.epochs:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=cfg.stage2.epochs))
    if stage > 1 and cfg.stage2.lr:
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=cfg.stage2.lr))
    folder = stage_dir / "checkpoints"
    speakers = training_speakers(train_data)
    params = dict(cfg.model.params)
    if stage > 1 and cfg.stage2.params:  # the stage's config (saved with it) holds the model as trained
        params.update(cfg.stage2.params)
        cfg.model.params = params
    if "num_speakers" in model_params(cfg.model.name) and "num_speakers" not in params:
        params["num_speakers"] = len(speakers)
        cfg.model.params = params
    # a token or mel system speaks through the codec or vocoder of its config's section (stage 3 built it)
    params = record_codec_references(params, model_params(cfg.model.name), {s: getattr(cfg, s) for s in SECTIONS},
                                     stage_dir)
    cfg.model.params = params
    ckpt.seed_everything(cfg.train.seed)  # every rank builds the same initial model
    model = build_model(cfg.model.name, resolve_codec_references(params, stage_dir)).to(dist.device)
    messages = []
    frozen_prefixes: list[str] = []
    if stage > 1 and cfg.stage2.init_from:
        messages.append(_init_from(model, cfg.stage2.init_from, "stage2.init_from"))
        frozen_prefixes = [p.rstrip(".") for p in cfg.stage2.freeze]
    if stage == 1 and cfg.train.init_from:
        messages.append(_init_from(model, cfg.train.init_from, "train.init_from"))
    teacher, needs = None, model.needs
    if stage == 1 and cfg.distill.teacher:
        teacher = _load_teacher(cfg.distill.teacher, dist.device)
        needs = needs | getattr(model, "distill_needs", frozenset())
        frozen_prefixes = [p.rstrip(".") for p in cfg.distill.freeze]
        messages.append(f"distilling towards {cfg.distill.teacher}")
    if frozen_prefixes:
        messages.append(_freeze(model, frozen_prefixes))
    terms = cfg.stage2.loss if stage > 1 and cfg.stage2.loss else cfg.loss
    every_output = frozenset(term.output for term in terms)
    weighted_outputs = frozenset(term.output for term in terms if term.weight) or every_output

    def batch_loss(net: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        # A term of weight 0 only watches. A training step does not ask for its output (DDTSE's first_error
        # costs a network evaluation) and logs it only when the model gives it anyway (whisper_cfm's parts);
        # validation asks for every output.
        model.wanted_outputs = weighted_outputs if net.training else every_output
        if teacher is not None:
            batch = {**batch, **teacher.distillation_targets(batch)}
        outputs = net(batch)
        used = [term for term in terms if term.weight or term.output in outputs] if net.training else terms
        return compute_loss(outputs, batch, used)

    data = cfg.data

    def tokens_of(data_dir: Path) -> Path | None:
        return Path(data.tokens) / Path(data_dir).name if data.tokens else None

    train_set = TSEDataset(train_data, needs, data.sample_rate, train=True, chunk_seconds=data.chunk_seconds,
                           enroll=data.enroll, enroll_seconds=data.enroll_seconds,
                           dynamic_mixing=data.dynamic_mixing, dm_sir_range=tuple(data.dm_sir_range),
                           dm_noise=data.dm_noise, dm_snr_range=tuple(data.dm_snr_range), speakers=speakers,
                           seed=cfg.train.seed, tokens_dir=tokens_of(train_data),
                           absent_fraction=data.absent_fraction, silent_fraction=data.silent_fraction)
    # validation measures present targets unless told to take the training's shares of absent and silent ones
    valid_shares = (data.absent_fraction, data.silent_fraction) if data.absent_in_valid else (0.0, 0.0)
    valid_set = TSEDataset(valid_data, needs, data.sample_rate, train=False, chunk_seconds=None,
                           enroll="fixed", speakers=speakers, seed=cfg.train.seed, tokens_dir=tokens_of(valid_data),
                           absent_fraction=valid_shares[0], silent_fraction=valid_shares[1])
    for dataset in (train_set, valid_set):
        dataset.check_audio()  # before the first byte is written: a bad file in the last row leaves nothing
        check_token_grid(model, dataset)
        if dataset.skipped:
            messages.append(f"{dataset.data_dir}: {dataset.skipped} rows without a transcript (targets cut short) "
                            f"left out; {len(dataset)} used")
    if data.batch_size % dist.world:
        raise TsekitError(f"data.batch_size {data.batch_size} is the batch of all {dist.world} processes together "
                          "and must divide evenly among them")
    rank_batch = data.batch_size // dist.world
    steps_per_epoch = len(train_set) // data.batch_size
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise TsekitError(f"{train_data}: {len(train_set)} rows make no batch of {data.batch_size}")
    messages.append(f"batch {data.batch_size}" + (f" in all ({rank_batch} in each of {dist.world} processes)"
                                                  if dist.world > 1 else "") + f", {steps_per_epoch} steps an epoch")
    messages.append(f"hardware: {describe_hardware(dist.device, dist.world)}")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg, trainable)
    scheduler, per_step = make_scheduler(cfg, optimizer, steps_per_epoch)
    amp = cfg.train.amp and dist.device.type == "cuda"
    scaler = torch.amp.GradScaler(enabled=amp)
    average = WeightAverage(model, cfg.train.ema) if cfg.train.ema else None
    wrapped = model
    if dist.world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dist.device] if amp else None)

    # each rank its own stream from here on: the same draws on every rank (diffusion times, masks, noise,
    # dropout) would make W processes do the work of one
    ckpt.seed_everything(ckpt.rank_seed(cfg.train.seed, dist.rank))
    epoch, batches_done, step, nonfinite = 0, 0, 0, 0
    if resume and (folder / ckpt.LATEST).is_file():
        state = ckpt.load_checkpoint(folder / ckpt.LATEST, map_location=dist.device)
        # with EMA, "model" holds the average (what inference loads) and "train_weights" the weights trained
        ckpt.load_weights(model, state.get("train_weights", state["model"]), folder / ckpt.LATEST)
        if average is not None:
            average.state = state["model"]
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if len(state["rng"]) == dist.world:
            ckpt.set_rng_state(state["rng"][dist.rank], dist.device)
        else:  # the batches stay those of the first run (the batch is global); the draws cannot
            ckpt.seed_everything(ckpt.rank_seed(cfg.train.seed, dist.rank, state["step"]))
            messages.append(f"saved by {len(state['rng'])} processes, resumed by {dist.world}: random draws "
                            "continue from new streams")
        epoch, batches_done, step, nonfinite = (state[k] for k in ("epoch", "batches_done", "step", "nonfinite"))
        if epoch >= cfg.train.epochs and (folder / ckpt.AVERAGED).is_file():
            if dist.main:
                print(f"{stage_dir}: already trained ({epoch} epochs); nothing to do", flush=True)
            return stage_dir
        messages.append(f"resumed from {folder / ckpt.LATEST}: epoch {epoch + 1}, batch {batches_done}")
    elif dist.main:
        stage_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, stage_dir / "config.yaml")
        with atomic_open(stage_dir / "speakers.txt") as f:
            f.write("".join(f"{s}\n" for s in speakers))
    if dist.main:
        for message in messages:
            print(message, flush=True)
    log = ScalarLog(stage_dir / "log", dist.main)

    def snapshot() -> dict:
        rng = [ckpt.rng_state(dist.device)]
        if dist.world > 1:
            rng = [None] * dist.world
            torch.distributed.all_gather_object(rng, ckpt.rng_state(dist.device))
        weights = {"model": model.state_dict()}
        if average is not None:
            weights = {"model": average.state, "train_weights": model.state_dict()}
        return {**weights, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "scaler": scaler.state_dict(), "rng": rng, "epoch": epoch, "batches_done": batches_done,
                "step": step, "nonfinite": nonfinite, "config": config_to_dict(cfg), "speakers": speakers}

    while epoch < cfg.train.epochs:
        train_set.set_epoch(epoch)
        model.set_epoch(epoch)
        sampler = EpochSampler(len(train_set), cfg.train.seed, epoch, True, dist.rank, dist.world,
                               rank_batch, batches_done)
        # the loader's own generator: one from the global stream would shift the model's draws after a resume
        # (examples are seeded by index, so worker seeds do not matter)
        loader = torch.utils.data.DataLoader(train_set, batch_size=rank_batch, sampler=sampler,
                                             num_workers=data.num_workers, collate_fn=collate, drop_last=True,
                                             generator=torch.Generator().manual_seed(cfg.train.seed + epoch))
        wrapped.train()
        for name, module in model.named_modules():  # frozen parts keep their normalisation statistics too
            if name and any(name == p or name.startswith(p + ".") for p in frozen_prefixes):
                module.eval()
        bar = tqdm(batches(loader), total=steps_per_epoch, initial=batches_done, desc=f"epoch {epoch + 1}",
                   disable=None if dist.main else True, leave=False)
        started = time.perf_counter()
        for batch in bar:
            if batches_done >= steps_per_epoch:
                break
            batch = _to_device(batch, dist.device)
            with torch.autocast(dist.device.type, enabled=amp):
                loss, parts = batch_loss(wrapped, batch)
            optimizer.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.grad_clip or float("inf"))
            if not torch.isfinite(loss) or not torch.isfinite(norm):
                nonfinite += 1  # skip the update; the step still counts, so resuming stays aligned
                if nonfinite > cfg.train.max_nonfinite:
                    raise TsekitError(f"{nonfinite} steps with a non-finite loss or gradient; stopping "
                                      f"(train.max_nonfinite={cfg.train.max_nonfinite})")
                scaler.update()
            else:
                scaler.step(optimizer)
                scaler.update()
                if average is not None:
                    average.update(model)
            if per_step:
                scheduler.step()
            step += 1
            batches_done += 1
            if step % cfg.train.log_interval == 0:
                # the mean over ranks: the loss of the whole batch, as one process with it would log
                logged = dict(zip(["loss", *parts], dist.sum(loss.item(), *parts.values()), strict=True))
                for label, value in logged.items():
                    log.add(f"train/{label}", value / dist.world, step)
                log.add("train/lr", optimizer.param_groups[0]["lr"], step)
                bar.set_postfix(loss=f"{logged['loss'] / dist.world:.3f}")
            if cfg.train.save_interval and step % cfg.train.save_interval == 0 and dist.main:
                ckpt.save_checkpoint(folder / ckpt.LATEST, snapshot())
            elif cfg.train.save_interval and step % cfg.train.save_interval == 0:
                snapshot()  # the other ranks join all_gather_object
        bar.close()
        # the bare model: DDP's forward would sync buffers, a collective that uneven shards would hang
        with average.applied(model) if average is not None else contextlib.nullcontext():
            valid = validate(model, valid_set, cfg, dist, batch_loss, [t.label for t in terms], collate)
        valid_loss = valid[cfg.train.valid_metric]  # what plateau and the best-N selection follow
        if scheduler is not None and not per_step:
            scheduler.step(valid_loss)
        for label, value in valid.items():
            log.add(f"valid/{label}", value, step)
        log.add("train/seconds_per_epoch", time.perf_counter() - started, step)
        epoch, batches_done = epoch + 1, 0
        state = snapshot()
        if dist.main:
            name = f"epoch{epoch}.pt"
            ckpt.save_checkpoint(folder / name, state)
            kept = ckpt.update_best(folder, valid_loss, name, cfg.train.keep_best)
            ckpt.link_checkpoint(folder / name, folder / ckpt.LATEST)  # the same state: not written twice
            if not kept:
                (folder / name).unlink()
            chosen = "" if cfg.train.valid_metric == "loss" else f", {cfg.train.valid_metric} {valid_loss:.4f}"
            print(f"epoch {epoch}/{cfg.train.epochs}: valid loss {valid['loss']:.4f}{chosen} (step {step})",
                  flush=True)
    if dist.main:
        best = [folder / name for _, name in ckpt.read_best(folder)]
        ckpt.average_checkpoints(best, folder / ckpt.AVERAGED)
    log.close()
    if dist.world > 1:  # ranks leave together: a rank that exits while rank 0 still averages can abort in gloo
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return stage_dir


@torch.no_grad()
def validate(model, dataset, cfg, dist: Distributed, batch_loss, labels: list[str], collate) -> dict[str, float]:
    """Mean total loss ("loss") and mean of every loss term over the validation set, across ranks.

    The random draws of a model's validation forward (a diffusion model's time and noise) come from a
    generator seeded the same way every epoch, so epochs are compared on the same draws; the training RNG
    is left as it was.
    """
    model.eval()
    devices = [dist.device] if dist.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.train.seed + dist.rank)
        return _validate(model, dataset, cfg, dist, batch_loss, labels, collate)


def _validate(model, dataset, cfg, dist: Distributed, batch_loss, labels: list[str], collate) -> dict[str, float]:
    from tsekit.data.dataset import batches

    sampler = EpochSampler(len(dataset), 0, 0, False, dist.rank, dist.world, 1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.data.valid_batch_size, sampler=sampler,
                                         num_workers=cfg.data.num_workers, collate_fn=collate)
    sums: dict[str, float] = {"loss": 0.0, **{label: 0.0 for label in labels}}
    count = 0
    for batch in batches(loader):
        batch = _to_device(batch, dist.device)
        loss, parts = batch_loss(model, batch)
        size = batch["mixture"].shape[0]
        for label, value in {"loss": loss.item(), **parts}.items():
            sums[label] += value * size
        count += size
    *totals, count = dist.sum(*sums.values(), count)
    return {label: total / max(count, 1) for label, total in zip(sums, totals, strict=True)}


def check_token_grid(model: torch.nn.Module, dataset: TSEDataset) -> None:
    """A token model (``num_codebooks``, ``codebook_size``) must be built for the codec its tokens come from, and
    speak through a codec of the same weights; else a one-line error naming that codec.yaml, before the first step."""
    from tsekit.data.tokens import check_token_codec

    info = getattr(dataset, "token_info", None)
    if info is None or not hasattr(model, "num_codebooks"):
        return
    built = (model.num_codebooks, model.codebook_size)
    if (info["num_codebooks"], info["codebook_size"]) != built:
        raise TsekitError(f"{dataset.tokens_dir / 'codec.yaml'}: tokens of {info['num_codebooks']} codebooks of "
                          f"{info['codebook_size']}, but model.params has num_codebooks {built[0]} and codebook_size "
                          f"{built[1]}")
    check_token_codec(dataset.tokens_dir, info, getattr(model, "codec_spec", None),
                      getattr(model, "codec_sha256", None))

