"""Codec tokens of a data dir (recipe stage 3, ``tsekit tokenize``): one integer matrix per signal a token
system reads. The layout of OUT (``codec.yaml``, per-signal arks, ``tokens.scp``, resume records), how the
dataset finds an enrollment's tokens and how they are read and checked are data: ``tsekit.data.tokens``.

Every signal is resampled from its file's rate to the codec's (``registry.resample``) and encoded whole.
Before anything is written (``codec.yaml`` included), every file still to encode is checked from its header
(``tsekit.data.audio.check_audio``: found, readable, not empty, mono), so a bad file leaves OUT as it was.

Resuming and jobs (as ``tsekit infer``): ``job=J, nj=N`` takes the J-th of N contiguous shards of the
sorted rows, with all the signals of those rows, and appends to its own ark and resume record; a rerun skips
every key any record holds, whichever run or job wrote it, and whoever finds a signal complete writes its
``tokens.scp`` (the last job to finish; a rerun after all are done writes it too). A second process on the
same shard is refused (``tsekit.lock``, ``.OUT.jobJ.lock``). A rerun with another codec, bandwidth or weights
into the same OUT is refused (``codec.yaml`` differs).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsekit import TsekitError
from tsekit.data.table import sorted_keys
from tsekit.data.tokens import (
    SIGNALS,
    TokenWriter,
    read_signals,
    write_codec_info,
    write_complete_scps,
    written_tokens,
)
from tsekit.jobs import job_and_speed
from tsekit.lock import writer_lock


@dataclass
class TokenizeSummary:
    """What one call did; ``str()`` is the line the CLI prints."""

    out: Path
    codec: str
    total: int  # matrices of the data dir, all signals
    mine: int  # matrices of this job
    encoded: int  # encoded now
    skipped: int  # already there
    audio_seconds: float  # of the signals encoded now
    seconds: float  # wall time of the encoding
    complete: list[str]  # signals whose tokens.scp is written
    signals: list[str]  # signals of this data dir
    job: int | None = None
    nj: int | None = None

    def __str__(self) -> str:
        who, speed = job_and_speed(self.job, self.nj, self.encoded, self.seconds, self.audio_seconds)
        line = (f"{who}{self.encoded} of {self.mine} signals encoded with {self.codec}{speed}, "
                f"{self.skipped} already done")
        if self.complete == self.signals:
            return f"{line}; all {self.total} done: {', '.join(str(self.out / s / 'tokens.scp') for s in self.signals)}"
        return f"{line}; the tokens.scp files are written once every job is done"


def codec_info(codec, spec: str) -> dict:
    """What codec.yaml records of a loaded codec."""
    bandwidth = getattr(codec, "bandwidth", None)
    return {"codec": spec, "bandwidth": None if bandwidth is None else float(bandwidth),
            "sample_rate": int(codec.sample_rate), "frame_rate": float(codec.frame_rate),
            "num_codebooks": int(codec.num_codebooks), "codebook_size": int(codec.codebook_size),
            "weights_sha256": codec.weights_sha256}


def _load_codec(spec: str, params: Mapping):
    from tsekit.codec.registry import load_codec
    from tsekit.pretrained.codec_base import Codec

    if Path(spec).is_dir():
        spec = str(Path(spec).resolve())  # codec.yaml must name it from any directory
    codec = load_codec(spec, **dict(params))
    if not isinstance(codec, Codec):
        raise TsekitError(f"--codec {spec}: {type(codec).__name__} is a vocoder, not a codec: it has no tokens")
    return codec, spec


def tokenize_data_dir(codec: str | os.PathLike, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                      params: Mapping | None = None, nj: int | None = None, job: int | None = None,
                      device: str = "cpu") -> TokenizeSummary:
    """Encode every signal of ``data_dir`` (this job's shard of its rows) with ``codec`` into ``out_dir``.

    ``codec``: a registered codec name (``params`` go to its constructor, e.g. bandwidth and weights; none
    keeps its defaults) or the experiment dir of a codec the toolkit trained. ``nj``/``job``: as ``tsekit infer``.
    """
    import torch
    from tqdm import tqdm

    from tsekit.codec.registry import resample
    from tsekit.data.audio import check_audio, load_audio
    from tsekit.jobs import check_job, set_threads, shard, torch_device

    data_dir, out = Path(data_dir), Path(out_dir)
    check_job(job, nj)
    signals = read_signals(data_dir)
    device = torch_device(device)
    model, spec = _load_codec(str(codec), params or {})
    model = model.to(device)
    info = codec_info(model, spec)
    rows = sorted_keys(signals["mixture"])
    mine = shard(rows, job, nj) if job is not None else rows
    items = [(signal, row, table[row]) for signal, table in signals.items() for row in mine]
    total = sum(len(table) for table in signals.values())
    with writer_lock(out, f"job{job}" if job is not None else ""):
        done = {signal: written_tokens(out, signal) for signal in signals}
        todo = [item for item in items if item[1] not in done[item[0]]]
        # every file to encode, from its header, before the first token is written (any rate: resampled)
        check_audio({data_dir / SIGNALS[signal]: {key: entry for s, key, entry in todo if s == signal}
                     for signal in signals})
        write_codec_info(out, info)  # after the checks: a failed run leaves OUT as it was
        previous_threads = set_threads(nj, job)
        started = time.perf_counter()
        audio_seconds = 0.0
        bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=f"tokenizing into {out}", unit="signal",
                   disable=None)
        try:
            with TokenWriter(out, job) as writer:
                for signal, key, entry in todo:
                    samples, rate = load_audio(entry, f"{data_dir / SIGNALS[signal]}: {key}")  # mono: checked above
                    with torch.inference_mode():
                        wav = resample(torch.from_numpy(samples)[None], rate, model.sample_rate).to(device)
                        tokens = model.encode(wav)[0].cpu().numpy().astype(np.int32)
                    writer.write(signal, key, tokens)
                    audio_seconds += len(samples) / rate
                    bar.update(1)
        finally:
            bar.close()
            torch.set_num_threads(previous_threads)  # a library call leaves the process as it found it
        seconds = time.perf_counter() - started
        complete = write_complete_scps(out, signals)
    return TokenizeSummary(out=out, codec=spec, total=total, mine=len(items), encoded=len(todo),
                           skipped=len(items) - len(todo), audio_seconds=audio_seconds, seconds=seconds,
                           complete=complete, signals=list(signals), job=job, nj=nj)
