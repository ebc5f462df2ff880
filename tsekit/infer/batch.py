"""Inference over a data dir (recipe stage 6): ``OUT/wav/<utt>.wav`` per row, then ``OUT/wav.scp``.

A system that transcribes the target speaker (``TSEModel.transcribes``) also
writes ``OUT/txt/<utt>.txt`` (its transcript, one line) per row, before the
row's wav, and ``OUT/text`` (Kaldi text: ``utt transcript``) from those
files once every row is done, just before ``OUT/wav.scp`` (so a decode dir
with ``wav.scp`` has its ``text``). With ``refine`` no transcript is made
(refinement gives none).

Resuming: every wav (and transcript) is written atomically (temporary file +
rename), so a wav that exists is complete, and its transcript exists too; a
rerun skips those rows and extracts only the rest. It trusts only what tsekit
wrote: a row's wav counts as done when its header reads and says what tsekit
writes (mono, the model's rate, the mixture's number of samples:
``tsekit.data.audio.is_written``); a file cut short or put there by hand is
extracted again.

Inputs: every audio file of this job's rows is checked from its header before
the first wav is written (``tsekit.data.audio.check_audio``, plus what the
model needs: ``check_inputs``), so a bad file in the last row leaves nothing.
Nothing records which checkpoint wrote them: decode with another checkpoint
into another OUT. A second process extracting the same shard into the same
OUT is refused (``tsekit.lock``: one lock per ``--job``, ``.OUT.jobJ.lock``).

Jobs: ``job=J, nj=N`` processes the J-th of N contiguous shards of the sorted
utterances (the same shards as ``tsekit score --job``), for the Kaldi runners
(``run.pl`` / ``slurm.pl``). No merge step is needed: whichever process finds
every utterance of the data dir with its wav writes ``OUT/wav.scp``
(atomically; two jobs finishing together write the same content), so the
last job to finish writes it, and a rerun after all are done writes it too;
``OUT/text`` likewise.

Threads: without ``job``, ``nj`` is the number of torch threads of this one
process (default: torch's own choice). With ``job``, N processes may share
one machine (``run.pl``), so each takes its share of the CPUs this process
may use, ``max(1, cpus // N)``; set OMP_NUM_THREADS to choose yourself
(e.g. Slurm jobs on separate nodes).

``wav.scp`` holds absolute paths, so it works from any directory.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tsekit import TsekitError, warn
from tsekit.data.enroll import ENROLLMENT_FILES
from tsekit.data.table import read_table, sorted_keys, write_table
from tsekit.jobs import (
    check_job,
    job_and_speed,
    set_threads,
    shard,
    torch_device,
    wav_path,
    write_scp_if_complete,
)
from tsekit.lock import writer_lock


@dataclass
class InferSummary:
    """What one call did; ``str()`` is the line the CLI prints."""

    out: Path
    checkpoint: Path
    total: int  # rows of the data dir
    mine: int  # rows of this job
    extracted: int  # extracted now
    skipped: int  # already there
    audio_seconds: float  # of the mixtures extracted now
    seconds: float  # wall time of the extraction
    wrote_scp: bool
    output_level: str
    job: int | None = None
    nj: int | None = None
    transcribes: bool = False  # the model's transcripts go to OUT/txt/ and, with wav.scp, OUT/text

    def __str__(self) -> str:
        who, speed = job_and_speed(self.job, self.nj, self.extracted, self.seconds, self.audio_seconds)
        line = (f"{who}{self.extracted} of {self.mine} utterances extracted{speed}, {self.skipped} already done "
                f"({self.checkpoint}, output level {self.output_level})")
        tables = f"{self.out / 'wav.scp'} and {self.out / 'text'}" if self.transcribes else str(self.out / "wav.scp")
        if self.wrote_scp:
            return f"{line}; all {self.total} done: {tables}"
        return f"{line}; {tables} {'are' if self.transcribes else 'is'} written once every job is done"


def txt_path(out: Path, utt: str) -> Path:
    """Where a transcribing model's transcript of ``utt`` goes (written before the wav)."""
    return out / "txt" / f"{utt}.txt"


def read_inputs(data_dir: Path, needs: frozenset[str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(utt -> mixture, batch key -> utt -> enrollment for each enrollment the model needs), every row checked."""
    if not data_dir.is_dir():
        raise TsekitError(f"{data_dir}: data directory not found")
    mixtures = read_table(data_dir / "wav.scp")
    if not mixtures:
        raise TsekitError(f"{data_dir / 'wav.scp'}: no utterances")
    for utt in mixtures:
        if "/" in utt:
            raise TsekitError(f"{data_dir / 'wav.scp'}: utterance id {utt!r} contains '/'; cannot be a file name")
    enrollments = {}
    # a token model trained on an enrollment's tokens encodes the enrollment's waveform at inference
    for key in sorted(k for k in ENROLLMENT_FILES if k in needs or f"{k}_tokens" in needs):
        path = data_dir / ENROLLMENT_FILES[key]
        if not path.is_file():
            posneg = " --posneg" if key != "enroll" else ""
            raise TsekitError(f"{path}: file not found (run `tsekit enroll {data_dir}{posneg}` first)")
        enrollments[key] = read_table(path)
        missing = [u for u in mixtures if u not in enrollments[key]]
        if missing:
            raise TsekitError(f"{path}: no enrollment for {len(missing)} of {len(mixtures)} "
                              f"utterances (e.g. {sorted_keys(missing)[0]})")
    return mixtures, enrollments


def check_inputs(model, lengths: dict[str, int], enrollments: dict[Path, dict[str, str]],
                 refine: tuple[Path, dict[str, str]] | None, utts: list[str], rate: int) -> None:
    """Fail before any work on a bad enrollment or estimate to refine of rows ``utts`` (headers only:
    ``check_audio`` at the model's rate), an enrollment the model cannot use (``TSEModel.check_enrollment``:
    too short for its speaker encoder), or an estimate to refine that is not as long as its mixture
    (``lengths``: utt -> samples of the mixture, checked before). Each table is scp path -> utt -> entry.
    """
    from tsekit.data.audio import check_audio

    tables = {path: {utt: table[utt] for utt in utts} for path, table in enrollments.items()}
    if refine is not None:
        tables[refine[0]] = {utt: refine[1][utt] for utt in utts}
    headers = check_audio(tables, rate)
    for path in enrollments:
        for utt in utts:
            model.check_enrollment(headers[path][utt][1], f"{path}: {utt}")
    if refine is not None:
        for utt in utts:
            if (refined := headers[refine[0]][utt][1]) != lengths[utt]:
                raise TsekitError(f"{refine[0]}: {utt}: {refine[1][utt]} has {refined} samples, its mixture "
                                  f"{lengths[utt]}: not an estimate of this data dir's mixture")


def read_refine(path: str | os.PathLike, utts: list[str]) -> dict[str, str]:
    """The scp of another system's estimates to refine, checked to have every utterance."""
    path = Path(path)
    if not path.is_file():
        raise TsekitError(f"{path}: file not found (the wav.scp of another system's decode dir)")
    table = read_table(path)
    missing = [u for u in utts if u not in table]
    if missing:
        raise TsekitError(f"{path}: no estimate for {len(missing)} of {len(utts)} utterances (e.g. {missing[0]})")
    return table


def write_text_table(out: Path, utts: list[str]) -> None:
    """Write OUT/text (``utt transcript``, C-sorted) from OUT/txt/<utt>.txt once every utterance is done."""
    text = {}
    for utt in utts:
        path = txt_path(out, utt)
        if not path.is_file():  # a wav without its transcript: written by a system that does not transcribe
            raise TsekitError(f"{path}: not found, but {wav_path(out, utt)} is there; remove that wav and rerun "
                              "to extract it with its transcript")
        text[utt] = path.read_text(encoding="utf-8").strip()
    write_table(out / "text", text)


def infer_data_dir(exp_dir: str | os.PathLike, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   nj: int | None = None, job: int | None = None, device: str = "cpu",
                   checkpoint: str | os.PathLike | None = None, chunk_seconds: float | None = None,
                   overlap_seconds: float = 1.0, output_level: str | None = None,
                   refine: str | os.PathLike | None = None, refine_passes: int = 1,
                   refine_start: float = 1.0, model_params: dict | None = None, segments: bool = False,
                   presence: str = "energy", presence_threshold: float | None = None,
                   presence_window: float | None = None) -> InferSummary:
    """Extract the target speech of every row of ``data_dir`` (this job's shard) into ``out_dir``.

    ``refine``: the wav.scp of another system's estimates of these rows; the model improves them
    (``TSEModel.refine``, ``refine_passes`` times from diffusion time ``refine_start``) instead of
    extracting from the mixture alone.

    A model with ``transcribes`` (and no ``refine``) also writes OUT/txt/<utt>.txt and OUT/text
    (module docstring).

    ``chunk_seconds`` None takes the config's default (``default_chunk_seconds``); 0 never chunks.
    ``output_level`` None takes the experiment's ``infer.output_level`` (``tsekit.infer.level``).
    ``model_params`` replace model parameters for this run (``load_experiment``): a generative system's decoding
    settings. Nothing records them in OUT: decode with other settings into another OUT.

    ``segments``: also decide where each row's target speaks (``tsekit.infer.presence``, by ``presence`` above
    ``presence_threshold`` over windows of ``presence_window`` seconds, None for the method's defaults), silence
    the output elsewhere, and write OUT/presence/<utt>.rttm (before the row's wav; a row without it is not done)
    and, once every row has one, OUT/rttm (before OUT/wav.scp).
    """
    import numpy as np
    import torch

    from tsekit.data.audio import check_audio, is_written
    from tsekit.data.enroll import enrollment_doubt
    from tsekit.infer.extract import AudioProgress, extract_to_file, load_mono, open_mono
    from tsekit.train.config import default_chunk_seconds
    from tsekit.train.experiment import find_checkpoint, load_experiment

    data_dir, out = Path(data_dir), Path(out_dir)
    check_job(job, nj)
    gate = None
    if segments:  # a missing VAD file is refused before the work
        from tsekit.infer.presence import PresenceGate, PresenceSettings, rttm_path, target_enrollment

        gate = PresenceGate(PresenceSettings(presence, presence_threshold, presence_window))
    path = find_checkpoint(exp_dir, checkpoint)
    model, cfg = load_experiment(exp_dir, path, torch_device(device), model_params)
    rate = cfg.data.sample_rate
    mixtures, enrolls = read_inputs(data_dir, model.needs)
    utts = sorted_keys(mixtures)
    mine = shard(utts, job, nj) if job is not None else utts
    if refine is not None:
        refine_table = read_refine(refine, utts)
    # one writer per shard (tsekit.lock): the jobs of one run share OUT, each with its own lock
    with writer_lock(out, f"job{job}" if job is not None else ""):
        with_text = model.transcribes and refine is None
        scp = data_dir / "wav.scp"
        headers = check_audio({scp: {u: mixtures[u] for u in mine}}, rate)[scp]
        lengths = {utt: frames for utt, (_, frames) in headers.items()}
        # a row is done when its wav is as tsekit writes it, and its transcript exists too when the model transcribes
        todo = [u for u in mine if not is_written(wav_path(out, u), rate, lengths[u])
                or (with_text and not txt_path(out, u).is_file()) or (segments and not rttm_path(out, u).is_file())]
        check_inputs(model, lengths, {data_dir / ENROLLMENT_FILES[k]: v for k, v in enrolls.items()},
                     None if refine is None else (Path(refine), refine_table), todo, rate)
        if chunk_seconds is None:
            chunk_seconds = default_chunk_seconds(cfg, model)
        output_level = output_level or cfg.infer.output_level
        previous_threads = set_threads(nj, job)
        started = time.perf_counter()
        doubted: set[str] = set()  # enrollment entries warned about
        todo_frames = sum(lengths[u] for u in todo)
        try:
            # the bar counts seconds of audio, so a long recording moves it as its chunks are done
            with AudioProgress(sum(lengths[u] for u in mine) / rate, f"extracting into {out}",
                               done_seconds=(sum(lengths[u] for u in mine) - todo_frames) / rate) as progress:
                for utt in todo:
                    enroll = {k: load_mono(table[utt], f"{data_dir / ENROLLMENT_FILES[k]}: {utt}", rate)
                              for k, table in enrolls.items()} or {"enroll": np.zeros(0, dtype=np.float32)}
                    for key, table in enrolls.items():  # once per clip, though several rows may share one
                        if table[utt] not in doubted and (doubt := enrollment_doubt(enroll[key], rate)):
                            doubted.add(table[utt])
                            warn(f"{data_dir / ENROLLMENT_FILES[key]}: {utt}: {table[utt]}: {doubt}")
                    refined = (contextlib.nullcontext() if refine is None
                               else open_mono(refine_table[utt], f"{refine}: {utt}", rate))
                    with open_mono(mixtures[utt], f"{data_dir / 'wav.scp'}: {utt}", rate) as mixture, \
                            refined as initial:
                        # a transcript is written before its wav: a wav that exists implies it (resuming)
                        extract_to_file(model, mixture, enroll, wav_path(out, utt), chunk_seconds, overlap_seconds,
                                        output_level=output_level, peak=cfg.infer.peak, refine=initial,
                                        refine_passes=refine_passes, refine_start=refine_start,
                                        transcript=txt_path(out, utt) if with_text else None, progress=progress,
                                        presence=None if gate is None else functools.partial(
                                            gate, enrollment=target_enrollment(enroll), rate=rate,
                                            rttm=rttm_path(out, utt), recording=utt))
        finally:
            torch.set_num_threads(previous_threads)  # a library call leaves the process as it found it
        seconds = time.perf_counter() - started
        # OUT/text before OUT/wav.scp, so that a finished decode dir (wav.scp) always has its text
        if with_text and all(wav_path(out, u).is_file() for u in utts):
            write_text_table(out, utts)
        if segments:
            from tsekit.infer.presence import write_rttm_table

            write_rttm_table(out, utts)
        wrote = write_scp_if_complete(out, utts)
        return InferSummary(out=out, checkpoint=path, total=len(utts), mine=len(mine), extracted=len(todo),
                            skipped=len(mine) - len(todo), audio_seconds=todo_frames / rate, seconds=seconds,
                            wrote_scp=wrote, output_level=output_level, job=job, nj=nj, transcribes=with_text)
