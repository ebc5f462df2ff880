"""Peak memory and speed of `tsekit extract` on a long recording: streamed in blocks against the whole file in memory.

    .venv/bin/python bench/long_extract.py DATA --model MODEL --minutes 10 [--work DIR] [--whole]

A recording of --minutes is made by looping the mixtures of the data dir DATA (its wav.scp, in sorted order) and
written to --work (default: a temporary folder, removed at the end) with the enrollment of DATA's first row;
then, each in a process of its own, so that its peak resident memory is its own (``os.wait4``):

* streamed: ``tsekit extract --model MODEL`` as a user runs it (blocks in and out, ``tsekit.infer.extract``);
* whole (with --whole): the obvious alternative, what ``tsekit extract`` did before it streamed: the whole
  mixture read, ``extract_waveform`` in memory, ``write_audio``.

Both use the model's own chunking and output level. The table gives the peak resident set size, the wall time
and the real-time factor (wall seconds / audio seconds) of each, the ratio of the two peaks, and how far apart
the two outputs are (in 16-bit steps: they differ only by the rounding of the level's gain).
Run it with OMP_NUM_THREADS=1 for a real-time factor of one core.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

WHOLE = """
import sys
from tsekit.data.audio import load_audio, write_audio
from tsekit.infer.extract import extract_waveform
from tsekit.train.config import default_chunk_seconds
from tsekit.train.experiment import load_experiment

model, cfg = load_experiment(sys.argv[1])
mixture, rate = load_audio(sys.argv[2])
enroll, _ = load_audio(sys.argv[3])
estimate = extract_waveform(model, mixture, enroll, rate, default_chunk_seconds(cfg),
                            output_level=cfg.infer.output_level, peak=cfg.infer.peak)
write_audio(sys.argv[4], estimate, rate)
"""


def make_recording(data: Path, minutes: float, work: Path) -> tuple[Path, Path, int]:
    """(the recording, the enrollment, its rate): DATA's mixtures looped to ``minutes``, written block by block."""
    from tsekit.data.table import read_table

    mixtures = [entry for _, entry in sorted(read_table(data / "wav.scp").items())]
    enroll = next(iter(sorted(read_table(data / "enroll.scp").items())))[1]
    rate = sf.info(mixtures[0]).samplerate
    total, done = int(minutes * 60 * rate), 0
    path = work / f"recording_{minutes:g}min.wav"
    with sf.SoundFile(path, "w", rate, 1, "PCM_16") as out:
        for entry in itertools.cycle(mixtures):
            if done >= total:
                break
            samples = sf.read(entry, dtype="float32")[0][: total - done]
            out.write(samples)
            done += len(samples)
    return path, Path(enroll), rate


def measure(command: list[str]) -> tuple[float, float]:
    """(peak resident set size in MB, wall seconds) of a child process; its errors stop the bench."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed: {child.stderr.read().decode(errors='replace')}")
    return usage.ru_maxrss / 1024, seconds  # Linux reports kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", required=True, help="a packaged model or an experiment dir")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--whole", action="store_true", help="also run the whole-file alternative")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        recording, enroll, rate = make_recording(args.data, args.minutes, work)
        seconds = sf.info(recording).duration
        runs = {"streamed": [sys.executable, "-m", "tsekit", "extract", "--model", args.model, "--mix",
                             str(recording), "--enroll", str(enroll), "-o", str(work / "streamed.wav")]}
        if args.whole:
            runs["whole"] = [sys.executable, "-c", WHOLE, args.model, str(recording), str(enroll),
                             str(work / "whole.wav")]
        print(f"{recording.name}: {seconds / 60:.1f} min at {rate} Hz, OMP_NUM_THREADS="
              f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
        print(f"{'run':<10} {'peak RSS MB':>12} {'wall s':>8} {'RTF':>7}")
        peaks = {}
        for name, command in runs.items():
            peaks[name], wall = measure(command)
            print(f"{name:<10} {peaks[name]:12.0f} {wall:8.1f} {wall / seconds:7.3f}")
        if args.whole:
            a = sf.read(work / "streamed.wav", dtype="int16")[0].astype(np.int32)
            b = sf.read(work / "whole.wav", dtype="int16")[0].astype(np.int32)
            print(f"whole / streamed peak RSS: {peaks['whole'] / peaks['streamed']:.2f}; outputs differ by at most "
                  f"{np.max(np.abs(a - b))} 16-bit steps ({np.mean(a != b):.2%} of samples)")


if __name__ == "__main__":
    main()
