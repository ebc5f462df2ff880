"""Smoke run of every published config at its published size: training steps, the trainer's overhead, peak
memory and one inference. On a GPU it is the first thing to run; on the CPU, CI runs it.

    .venv/bin/python bench/gpu_smoke.py [--device cpu|cuda] [--configs GLOB] [--steps N] [--warmup N]
        [--batch-size B] [--chunk-seconds S] [--utterance-seconds S] [--infer-seconds S] [--[no-]fewest-steps]
        [--out FILE] [--work DIR]

Configs: every egs/*/conf/*.yaml but the mini recipe's (--configs picks some by "corpus/system", e.g.
'libri2mix/*' or '*/ddtse'; a distillation teacher the selection needs comes along). Every training stage a
config has is a row (stage 2 where stage2.enabled). Defaults (``DEFAULTS``): on a GPU (``--device cuda``, AMP
as the trainer does) the recipes' shapes: 3 warm-up and 10 timed steps at the config's batch size and chunk,
rows of 10 s, inference on 4 s, the configs' samplers as published; on the CPU a smoke run short enough for
CI (``make test`` runs it, about 7 min on one thread): one step at batch 1 on 0.5 s chunks of 1 s rows,
inference on 0.5 s, no warm-up, so no bare loop and no ratio (``measuring``), and every sampler with the
fewest steps its code allows (--fewest-steps, ``FEWEST_STEPS``: DDTSE's steps and pc_steps 1, MaskGIT's
iterations 1, whisper_cfm's flow_steps 1 and max_text_tokens 2; the notes column says so): the same code
runs, fewer times, and the models, their training and their checkpoints are the published ones. Per row:

1. Data: a synthetic training data dir the way the recipe builds one, random noise at the config's rate:
   rows of --utterance-seconds (at least the chunk; whole-utterance systems train on them whole) of two
   speakers, as many as the steps need, enrollments by tsekit's enroll stage (positive/negative clips for the
   pos/neg systems), transcripts of common words (whisper_cfm), codec tokens by tsekit tokenize (maskgit_tse);
   the validation set is one row of 1 s, cut to the chunk for the systems that train on chunks (validation
   reads whole rows; its enrollments, 1 s rows beside it, are made first).
2. The trainer: its public ``train()`` with the published config (the loader ``tsekit train`` uses) and
   train.epochs=1, train.max_steps_per_epoch (the steps), data.batch_size=B, data.chunk_seconds=S when given;
   a distillation teacher is its own config's smoke run, stage 2 starts from stage 1's averaged.pt.
   ``data.batch_size`` is read as one device's batch (with one process, the global batch is that).
3. A bare PyTorch loop on the same model (the trainer's, after it returns) and the trainer's first batch:
   forward, loss (``compute_loss``), backward, optimizer step; with AMP under autocast and a GradScaler; a
   distillation teacher's targets computed every step, as the trainer does. Nothing else: no data loading,
   non-finite checks, gradient clipping, EMA, scheduler or logging.
4. One inference (the last stage of an extraction system): the experiment loaded as ``tsekit extract`` loads
   it, then ``extract_waveform`` on --infer-seconds of noise with enrollments of --utterance-seconds
   (whisper_cfm also transcribes).

Columns:
- parameters: of the model's module tree (frozen parts held outside it, Whisper in whisper_cfm, are in notes);
- trainer steps/s: 1 / the trainer's step time = the mean interval between the starts of consecutive forwards
  of its model (a forward pre-hook, CUDA synchronised) over the timed steps after the warm-up. A step so holds
  everything the trainer does per batch (fetching it from the loader's workers, the forward, loss, non-finite
  checks, backward, unscaling and clipping, optimizer, EMA, scheduler, logging), and none of the loader's
  start-up, validation or checkpoints;
- bare steps/s: 1 / the bare loop's mean step time over the timed steps after the warm-up ones;
- trainer/bare: the ratio of the two step times: the trainer's overhead (aim: at most 1.05 on a GPU);
- peak memory: over the row's training, bare loop and inference: CUDA's allocator (``max_memory_allocated``)
  on a GPU, the process's peak resident set elsewhere (reset per row on Linux);
- inference RTF: compute seconds / seconds of the mixture, of the one timed inference.

Published frozen weights that cannot exist offline are replaced by the real architecture with random
weights, and the notes say so: EnCodec 24 kHz (``encodec_codec.random_checkpoint``), Whisper by name
(``tsekit.pretrained.whisper.stand_in``; the dimensions of the names below), the universal HiFi-GAN where
``make install`` did not bring it (V1's generator, ``vocoders.random_hifigan``). Exit status 1 when any row
failed (its error is in the table).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fnmatch
import gc
import math
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
MIN_ROWS = 4  # two speakers with two rows each: every row has an enrollment of its speaker in another row
VALID_SECONDS = 1.0  # validation is not measured: one short row keeps it cheap
# published Whisper sizes a config may name, as openai-whisper's checkpoints give them (ModelDimensions)
WHISPER_DIMS = {
    "large-v2": {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 1280, "n_audio_head": 20, "n_audio_layer": 32,
                 "n_vocab": 51865, "n_text_ctx": 448, "n_text_state": 1280, "n_text_head": 20, "n_text_layer": 32},
}
# HiFi-GAN V1 (and UNIVERSAL_V1): the generator of the authors' published config.json
HIFIGAN_V1 = {"resblock": "1", "upsample_rates": [8, 8, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4],
              "upsample_initial_channel": 512, "resblock_kernel_sizes": [3, 7, 11],
              "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "num_mels": 80, "n_fft": 1024,
              "hop_size": 256, "win_size": 1024, "sampling_rate": 22050, "fmin": 0, "fmax": 8000}
# per device type; 0 for batch_size and chunk_seconds: the config's. The CPU's is a smoke run short enough for CI
# (the enrollments of 1 s are the least the Resemblyzer speaker encoder takes); a GPU's has the recipes' shapes.
DEFAULTS = {
    "cpu": {"steps": 1, "warmup": 0, "batch_size": 1, "chunk_seconds": 0.5, "utterance_seconds": 1.0,
            "infer_seconds": 0.5, "fewest_steps": True},
    "cuda": {"steps": 10, "warmup": 3, "batch_size": 0, "chunk_seconds": 0, "utterance_seconds": 10.0,
             "infer_seconds": 4.0, "fewest_steps": False},
}
# --fewest-steps: model.params overrides that run each sampler's loops the fewest times they allow, every loop
# still once (DDTSE's sampler 2 network evaluations instead of 11, its score sampler 2 instead of 60; the flow
# one Euler step; MaskGIT one iteration; two decoded tokens, so that the cached decoding runs too). A published
# config's sampler then costs a CPU smoke run seconds instead of minutes, and goes through the same code.
FEWEST_STEPS = {"ddtse": {"steps": 1, "pc_steps": 1}, "maskgit_tse": {"iterations": 1},
                "whisper_cfm": {"flow_steps": 1, "max_text_tokens": 2}}
WORDS = "THE AND OF TO A IN THAT HE WAS IT HIS I WITH AS HAD FOR YOU HER NOT BUT AT ON SHE IS".split()
WORDS_PER_SECOND = 2.7  # LibriSpeech's speaking rate, roughly


@dataclass
class Row:
    config: Path
    stage: int
    parameters: int = 0
    shape: str = ""
    trainer_step: float = math.nan
    bare_step: float = math.nan
    peak_bytes: int = 0
    rtf: float = math.nan
    notes: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def name(self) -> str:
        return f"{self.config.parent.parent.name}/{self.config.stem}"


def published_configs(pattern: str) -> list[Path]:
    """The selected published configs, each distillation teacher before its students."""
    from tsekit.train.config import load_config

    every = sorted(p for p in REPO.glob("egs/*/conf/*.yaml") if p.parent.parent.name != "mini_libri2mix")
    chosen = [p for p in every if fnmatch.fnmatch(f"{p.parent.parent.name}/{p.stem}", pattern)]
    ordered: list[Path] = []
    for path in chosen:
        teacher = teacher_config(path, load_config(path, []))
        for needed in ([teacher] if teacher else []) + [path]:
            if needed not in ordered:
                ordered.append(needed)
    return ordered


def teacher_config(path: Path, cfg) -> Path | None:
    """The config the recipe trains a distillation teacher ``exp/<name>`` with: conf/<name>.yaml beside it."""
    if not cfg.distill.teacher:
        return None
    return path.parent / f"{Path(cfg.distill.teacher).name}.yaml"


# --- peak memory --------------------------------------------------------------------------------------------

def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):  # Linux: the peak resident set starts again from now
            Path("/proc/self/clear_refs").write_text("5")


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- published frozen weights, replaced ---------------------------------------------------------------------

def random_whisper(name: str, device: torch.device):
    """openai-whisper's model of size ``name`` with random weights, built on ``device``."""
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    with torch.device(device):
        return Whisper(ModelDimensions(**WHISPER_DIMS[name])).eval()


@contextlib.contextmanager
def random_frozen_parts(cfg, work: Path, device: torch.device) -> Iterator[tuple[list[str], list[str]]]:
    """(config overrides, notes) putting random weights in place of the published frozen ones ``cfg`` names;
    a Whisper by name is substituted inside the block."""
    overrides, notes = [], []
    with contextlib.ExitStack() as stack:
        if cfg.codec.spec == "encodec_24khz":
            from tsekit.pretrained.encodec_codec import random_checkpoint

            weights = work / "encodec_24khz_random.th"
            if not weights.is_file():
                random_checkpoint(weights, 0)
            overrides.append(f"codec.params.weights={weights}")
            notes.append("EnCodec 24 kHz: random weights")
        if cfg.vocoder.spec == "hifigan_universal":
            from tsekit.pretrained.vocoders import random_hifigan, universal_checkpoint

            if not universal_checkpoint().is_file():  # the real weights where make install brought them
                checkpoint = random_hifigan(work / "hifigan_v1_random", HIFIGAN_V1, 0)
                overrides.append(f"vocoder.params.checkpoint={checkpoint}")  # its config.json beside it
                notes.append("HiFi-GAN V1: random weights")
        whisper = cfg.model.params.get("whisper")
        if whisper in WHISPER_DIMS:
            from tsekit.pretrained.whisper import stand_in

            model = random_whisper(whisper, device)
            stack.enter_context(stand_in(whisper, model))
            count = sum(p.numel() for p in model.parameters())
            notes.append(f"Whisper {whisper}: random weights, {count / 1e6:.0f} M frozen parameters besides")
        yield overrides, notes


# --- synthetic data -----------------------------------------------------------------------------------------

def synthetic_data_dir(out: Path, rows: int, seconds: float, rate: int, needs: frozenset[str], seed: int) -> Path:
    """A data dir of ``rows`` rows of random noise (mixture and target source), alternating two speakers, with
    enrollments (and positive/negative clips when ``needs`` has them) made by tsekit's enroll stage."""
    from tsekit.data.audio import write_audio
    from tsekit.data.datadir import write_data_dir
    from tsekit.data.enroll import enroll_data_dir

    rng = np.random.default_rng(seed)
    tables: dict[str, dict[str, str]] = {"wav.scp": {}, "spk1.scp": {}, "utt2spk": {}, "text": {}}
    for index in range(rows):
        speaker = f"spk{index % 2}"
        utt = f"{speaker}-{index:05d}"
        for table, kind in (("wav.scp", "mix"), ("spk1.scp", "s1")):
            path = out.parent / f"{out.name}_audio" / kind / f"{utt}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_audio(path, 0.1 * rng.standard_normal(round(seconds * rate)), rate)
            tables[table][utt] = str(path)
        tables["utt2spk"][utt] = speaker
        tables["text"][utt] = " ".join(rng.choice(WORDS, max(1, round(seconds * WORDS_PER_SECOND))))
    write_data_dir(out, tables)
    enroll_data_dir(out, posneg=bool(needs & {"enroll_pos", "enroll_neg"}))
    return out


def data_dirs(cfg, work: Path, rows: int, seconds: float, device: torch.device) -> tuple[Path, Path, list[str]]:
    """(training, validation) data dirs for ``cfg``'s model, tokenized into work/tokens when it reads tokens;
    the overrides that point the config at those tokens."""
    from tsekit.data.audio import load_audio, write_audio
    from tsekit.data.datadir import read_data_dir, subset_tables, write_data_dir
    from tsekit.data.table import sorted_keys
    from tsekit.models.registry import model_class

    cls = model_class(cfg.model.name)
    needs = cls.needs | getattr(cls, "distill_needs", frozenset())
    rate = cfg.data.sample_rate
    train = synthetic_data_dir(work / "data" / "train", max(rows, MIN_ROWS), seconds, rate, needs, 0)
    enrolled = synthetic_data_dir(work / "data" / "valid_enrolled", MIN_ROWS, VALID_SECONDS, rate, needs, 1)
    tables = read_data_dir(enrolled)  # validation enrolls from enroll.scp: one row of it is a validation set
    tables = subset_tables(tables, sorted_keys(tables["wav.scp"])[:1])
    if cfg.data.chunk_seconds:  # validation reads its rows whole: cut this one to a training example's length
        for table in ("wav.scp", "spk1.scp"):  # (its enrollments, other rows of VALID_SECONDS, are made already)
            for entry in tables[table].values():
                write_audio(entry, load_audio(entry)[0][: round(cfg.data.chunk_seconds * rate)], rate)
    valid = write_data_dir(work / "data" / "valid", tables)
    if not any(need.endswith("_tokens") for need in needs):
        return train, valid, []
    from tsekit.codec.tokenize import tokenize_data_dir

    for data in (train, valid):
        tokenize_data_dir(cfg.codec.spec, data, work / "tokens" / data.name, cfg.codec.params, device=str(device))
    return train, valid, [f"data.tokens={work / 'tokens'}"]


# --- timing -------------------------------------------------------------------------------------------------

class ForwardClock:
    """When each forward of the first model of class ``cls`` begins (the trainer builds its model inside
    ``train()``, so a global hook finds it on its first call and hands over to a hook on it alone); keeps that
    model and the first batch it was given."""

    def __init__(self, cls: type, device: torch.device):
        self.cls, self.device = cls, device
        self.times: list[float] = []
        self.model: torch.nn.Module | None = None
        self.batch: dict | None = None
        self._handles = [torch.nn.modules.module.register_module_forward_pre_hook(self._find)]

    def _find(self, module: torch.nn.Module, args: tuple) -> None:
        if self.model is None and type(module) is self.cls:
            self.model, self.batch = module, args[0]
            self.close()
            self._handles = [module.register_forward_pre_hook(self._tick)]
            self._tick(module, args)

    def _tick(self, module: torch.nn.Module, args: tuple) -> None:
        synchronize(self.device)
        self.times.append(time.perf_counter())

    def step_seconds(self, first: int, steps: int) -> float:
        """Mean interval between forward ``first`` and forward ``first + steps`` (0-based)."""
        if len(self.times) <= first + steps:
            raise RuntimeError(f"the trainer ran {len(self.times)} forwards, expected at least {first + steps + 1}")
        return (self.times[first + steps] - self.times[first]) / steps

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def bare_step_seconds(model: torch.nn.Module, batch: dict, cfg, stage: int, teacher, device: torch.device,
                      warmup: int, steps: int) -> float:
    """Mean seconds of a bare training step (see the module docstring) after ``warmup`` untimed ones."""
    from tsekit.train.losses import compute_loss
    from tsekit.train.trainer import make_optimizer

    terms = cfg.stage2.loss if stage > 1 and cfg.stage2.loss else cfg.loss
    frozen = cfg.stage2.freeze if stage > 1 else cfg.distill.freeze if teacher is not None else []
    model.train()
    for name, module in model.named_modules():  # as the trainer: frozen parts keep their normalisation statistics
        if name and any(name == p or name.startswith(p + ".") for p in (f.rstrip(".") for f in frozen)):
            module.eval()
    optimizer = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    amp = cfg.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(enabled=amp)
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            started = time.perf_counter()
        with torch.autocast(device.type, enabled=amp):
            inputs = batch if teacher is None else {**batch, **teacher.distillation_targets(batch)}
            loss, _ = compute_loss(model(inputs), inputs, terms)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def inference_rtf(stage_dir: Path, device: torch.device, seconds: float, enroll_seconds: float,
                  warmup: bool) -> float:
    """RTF of one extraction of ``seconds`` given enrollments of ``enroll_seconds`` by the trained experiment, loaded
    as ``tsekit extract`` loads it (after an untimed one with ``warmup``)."""
    from tsekit.data.enroll import ENROLLMENT_FILES
    from tsekit.infer.extract import extract_waveform
    from tsekit.train.experiment import load_experiment

    model, cfg = load_experiment(stage_dir, device=device)
    rate = cfg.data.sample_rate
    rng = np.random.default_rng(2)

    def noise(length: float) -> np.ndarray:
        return (0.1 * rng.standard_normal(round(length * rate))).astype(np.float32)

    mixture = noise(seconds)
    # as tsekit infer: a token system is enrolled by the waveform it tokenizes
    enrollments = {key: noise(enroll_seconds) for key in ENROLLMENT_FILES
                   if key in model.needs or f"{key}_tokens" in model.needs}
    for _ in range(2 if warmup else 1):  # the last run is the timed one
        synchronize(device)
        started = time.perf_counter()
        extract_waveform(model, mixture, enrollments, rate, device=device, with_text=model.transcribes)
        synchronize(device)
    return (time.perf_counter() - started) / seconds


# --- one config ---------------------------------------------------------------------------------------------

def run_config(path: Path, args, device: torch.device, work: Path, teachers: dict[Path, Path]) -> list[Row]:
    """The rows of one config (one per training stage); an error ends the config and is recorded in its row."""
    from tsekit.checkpoint import AVERAGED
    from tsekit.train.config import load_config

    published = load_config(path, [])
    rows = [Row(path, stage) for stage in ([1, 2] if published.stage2.enabled else [1])]
    batch = args.batch_size or published.data.batch_size
    chunk = published.data.chunk_seconds and (args.chunk_seconds or published.data.chunk_seconds)
    seconds = max(args.utterance_seconds, chunk or 0.0)
    steps = args.warmup + args.steps + measuring(args)
    row_work = work / rows[0].name
    shutil.rmtree(row_work, ignore_errors=True)
    for row in rows:
        row.shape = f"{batch} x {chunk or seconds:g} s" + ("" if chunk else " whole")
    row = rows[0]
    try:
        with random_frozen_parts(published, work, device) as (overrides, notes):
            overrides += ["train.epochs=1", "stage2.epochs=1", f"train.max_steps_per_epoch={steps}",
                          f"data.batch_size={batch}"] + ([f"data.chunk_seconds={chunk}"] if chunk else [])
            fewest = FEWEST_STEPS.get(published.model.name, {}) if args.fewest_steps else {}
            overrides += [f"model.params.{name}={value}" for name, value in fewest.items()]
            if fewest:
                notes.append("sampling: " + ", ".join(f"{name}={value}" for name, value in fewest.items()))
            teacher = teacher_config(path, published)
            if teacher is not None:
                overrides.append(f"distill.teacher={teachers[teacher]}")
            train_dir, valid_dir, tokens = data_dirs(load_config(path, overrides), row_work, batch * steps, seconds,
                                                     device)
            for row in rows:
                row.notes = notes
                stage_overrides = overrides + tokens
                if row.stage == 2:  # as the recipe's stage 5
                    stage_overrides.append(f"stage2.init_from={row_work / 'exp' / 'stage1' / 'checkpoints' / AVERAGED}")
                run_stage(row, load_config(path, stage_overrides), train_dir, valid_dir, row_work, args, device,
                          last=row is rows[-1])
    except Exception as err:  # noqa: BLE001  (a smoke run reports every failure in its table and goes on)
        row.error = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        traceback.print_exc()
    finally:
        free(device)
    teachers[path] = row_work / "exp"
    return rows


def run_stage(row: Row, cfg, train_dir: Path, valid_dir: Path, row_work: Path, args, device: torch.device,
              last: bool) -> None:
    """Fill ``row``: the trainer's steps, the bare loop's, peak memory and (``last`` stage) an inference."""
    from tsekit.models.registry import model_class
    from tsekit.train.experiment import load_experiment
    from tsekit.train.trainer import train

    free(device)
    reset_peak_memory(device)
    clock = ForwardClock(model_class(cfg.model.name), device)
    try:
        with open(row_work / f"train_stage{row.stage}.log", "w") as log, contextlib.redirect_stdout(log):
            stage_dir = train(cfg, train_dir, valid_dir, row_work / "exp", stage=row.stage, resume=False,
                              device=str(device))
    finally:
        clock.close()
    row.trainer_step = clock.step_seconds(args.warmup, args.steps)
    model, batch = clock.model, clock.batch
    del clock
    row.parameters = sum(p.numel() for p in model.parameters())
    teacher = None
    if row.stage == 1 and cfg.distill.teacher and measuring(args):
        teacher = load_experiment(cfg.distill.teacher, device=device)[0].requires_grad_(False)
    if measuring(args):
        row.bare_step = bare_step_seconds(model, batch, cfg, row.stage, teacher, device, args.warmup, args.steps)
    del model, batch, teacher
    free(device)
    if last and extracts(model_class(cfg.model.name)):
        row.rtf = inference_rtf(stage_dir, device, args.infer_seconds, args.utterance_seconds, measuring(args))
    row.peak_bytes = peak_memory(device)


def extracts(cls: type) -> bool:
    """Whether a system extracts speech: it learns a target, as a waveform or as codec tokens (not so the pos/neg
    systems' distillation teacher, a speaker encoder)."""
    return bool(cls.needs & {"target", "target_tokens"})


def measuring(args) -> bool:
    """Timings to compare (after warm-up steps) or a smoke run only (no warm-up: the CPU's default, CI's run).

    Measuring adds the bare loop, one more trainer step whose forward ends the last timed one (without it,
    validation's first forward ends it, adding its loader's start-up) and an untimed inference first. Without
    warm-up the one step timed pays one-off costs (kernel choices, allocator growth) that a bare loop run
    after it would not, so there is no ratio to give.
    """
    return args.warmup > 0


def free(device: torch.device) -> None:
    """Drop what earlier work left, so that the next peak starts from the process's baseline."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    else:
        with contextlib.suppress(OSError, AttributeError):  # glibc keeps freed heap in the process unless trimmed
            ctypes.CDLL("libc.so.6").malloc_trim(0)


# --- the table ----------------------------------------------------------------------------------------------

HEADER = ("config", "stage", "parameters", "batch x chunk", "trainer steps/s", "bare steps/s", "trainer/bare",
          "peak memory", "inference RTF", "notes")


def cells(row: Row, infer_seconds: float) -> list[str]:
    def rate(seconds: float) -> str:
        return "-" if math.isnan(seconds) else f"{1 / seconds:.3g}"

    ratio = row.trainer_step / row.bare_step
    notes = "; ".join(row.notes + ([f"FAILED: {row.error}"] if row.error else []))
    return [row.name, str(row.stage), f"{row.parameters / 1e6:.1f} M" if row.parameters else "-", row.shape,
            rate(row.trainer_step), rate(row.bare_step), "-" if math.isnan(ratio) else f"{ratio:.3f}",
            f"{row.peak_bytes / 2**30:.2f} GiB" if row.peak_bytes else "-",
            "-" if math.isnan(row.rtf) else f"{row.rtf:.3g} ({infer_seconds:g} s)", notes]


def markdown(rows: list[Row], infer_seconds: float) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells(row, infer_seconds)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (CI's run) or cuda (AMP, as the trainer)")
    parser.add_argument("--configs", default="*", help="glob over corpus/system, e.g. 'libri2mix/*'")
    parser.add_argument("--steps", type=int, help="timed training steps")
    parser.add_argument("--warmup", type=int, help="untimed training steps first")
    parser.add_argument("--batch-size", type=int, help="data.batch_size (0: the config's)")
    parser.add_argument("--chunk-seconds", type=float, help="data.chunk_seconds of the configs that train on chunks "
                        "(0: the config's)")
    parser.add_argument("--utterance-seconds", type=float, help="length of the synthetic rows (at least the chunk): "
                        "whole-utterance configs train on them, enrollments are cut from them")
    parser.add_argument("--infer-seconds", type=float, help="the mixture of the inference")
    parser.add_argument("--fewest-steps", action=argparse.BooleanOptionalAction, help="run each sampler with "
                        "the fewest steps its code allows (FEWEST_STEPS; the CPU's default)")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    parser.add_argument("--work", type=Path, help="keep data and experiments here (default: a temporary folder)")
    args = parser.parse_args()
    from tsekit.jobs import torch_device
    from tsekit.train.config import load_config

    device = torch_device(args.device)
    for name, value in DEFAULTS[device.type].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    configs = published_configs(args.configs)
    if not configs:
        sys.exit(f"--configs {args.configs}: no published config matches")
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    chunk = f"{args.chunk_seconds:g} s" if args.chunk_seconds else "of the config"
    print(f"{len(configs)} configs on {what}: {args.warmup} warm-up + {args.steps} timed steps, batch "
          f"{args.batch_size or 'of the config'}, chunk {chunk}, rows of {args.utterance_seconds:g} s, inference on "
          f"{args.infer_seconds:g} s", flush=True)
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_smoke.")))
        work.mkdir(parents=True, exist_ok=True)
        rows: list[Row] = []
        teachers: dict[Path, Path] = {}  # config -> its experiment, for the students it teaches
        needed = {teacher_config(p, load_config(p, [])) for p in configs}
        for path in configs:
            started, cpu = time.perf_counter(), time.process_time()
            done = run_config(path, args, device, work, teachers)
            rows += done
            for row in done:
                print("| " + " | ".join(cells(row, args.infer_seconds)) + " |", flush=True)
            spent = f"{time.perf_counter() - started:.0f} s, {time.process_time() - cpu:.0f} s of CPU time"
            print(f"  ({spent})", flush=True)
            if args.work is None and path not in needed:
                shutil.rmtree(work / done[0].name, ignore_errors=True)  # checkpoints of 65 M parameters add up
    table = markdown(rows, args.infer_seconds)
    print("\n" + table, end="")
    if args.out:
        args.out.write_text(table)
    sys.exit(1 if any(row.error for row in rows) else 0)


if __name__ == "__main__":
    main()
