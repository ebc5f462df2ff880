"""Benchmark of `tsekit score` against the plain per-file loop the seed systems use.

    .venv/bin/python bench/score_bench.py [--work DIR] [--size small] [--split train-100]

Builds (once, cached in --work) the mini corpus, takes a few hundred rows, makes
estimates (target + noise), then measures in the same run:
  (a) utterances per second of `tsekit score --nj 1` and `--nj 2` (whole command,
      process start and imports included),
  (b) the ratio against a plain loop script that reads each file pair and calls
      pesq, pystoi and an SI-SDR one file at a time (as the seeds' calc_metrics.py
      does), timed the same way, as a whole process,
  (c) the floor: the time spent inside the metric libraries themselves, as a share
      of each method's time.
Metrics compared: si_sdr, pesq, stoi (what the plain loop computes); one more run
scores every signal metric with the mixture baseline, for reference (DNSMOS, WER
and speaker similarity are model-bound and left out).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
TSEKIT = Path(sys.executable).parent / "tsekit"
REPEATS = 3
ALL_SIGNAL_METRICS = "si_sdr,si_sdri,snr,snri,sdr,sir,sar,pesq,stoi,estoi"


def prepare(work: Path, size: str, split: str) -> tuple[Path, Path]:
    """Data dir of the mini corpus split and an scp of estimates (cached)."""
    from tsekit.corpora.librimix import prepare_libri2mix
    from tsekit.corpora.mini_librimix import make_mini_libri2mix
    from tsekit.data.table import read_table, write_table

    data = work / "data" / split
    if not (data / "wav.scp").is_file():
        make_mini_libri2mix(work / "mini", size=size, jobs=2)
        prepare_libri2mix(work / "mini" / "Libri2Mix", work / "data", mixture="mix_both", splits=(split,))
    est_scp = work / "est" / "wav.scp"
    if not est_scp.is_file():
        rng = np.random.default_rng(0)
        est_scp.parent.mkdir(parents=True, exist_ok=True)
        table = {}
        for utt, path in read_table(data / "spk1.scp").items():
            target, rate = sf.read(path, dtype="float32")
            estimate = target + 0.1 * np.std(target) * rng.standard_normal(len(target)).astype(np.float32)
            sf.write(work / "est" / f"{utt}.wav", estimate, rate)
            table[utt] = str(work / "est" / f"{utt}.wav")
        write_table(est_scp, table)
    return data, est_scp


def si_sdr_loop(estimate: np.ndarray, reference: np.ndarray) -> float:
    """The SI-SDR the seeds compute inline (zero-mean projection)."""
    estimate = estimate - estimate.mean()
    reference = reference - reference.mean()
    target = np.dot(estimate, reference) / np.dot(reference, reference) * reference
    return 10 * np.log10(np.sum(target**2) / np.sum((estimate - target) ** 2))


def plain_loop(data: Path, est_scp: Path) -> None:
    """The one-file-at-a-time loop, run as its own process like a calc_metrics.py script.

    Prints the seconds spent inside pesq/pystoi/si-sdr (the floor) for the parent to read.
    """
    from pesq import pesq
    from pystoi import stoi

    refs = dict(line.split(maxsplit=1) for line in (data / "spk1.scp").read_text().splitlines())
    ests = dict(line.split(maxsplit=1) for line in est_scp.read_text().splitlines())
    inside = 0.0
    for utt in sorted(refs):
        reference, rate = sf.read(refs[utt])
        estimate, _ = sf.read(ests[utt])
        t0 = time.perf_counter()
        pesq(rate, reference, estimate, "wb" if rate == 16000 else "nb")
        stoi(reference, estimate, rate, extended=False)
        si_sdr_loop(estimate, reference)
        inside += time.perf_counter() - t0
    print(inside)


def run_plain_loop(data: Path, est_scp: Path) -> tuple[float, float]:
    """(wall seconds of the whole process, seconds inside the metric libraries)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--plain-loop", str(data), str(est_scp)], check=True,
                          capture_output=True, text=True)
    return time.perf_counter() - start, float(proc.stdout.split()[-1])


def tsekit_score(data: Path, est_scp: Path, out: Path, nj: int, metrics: str, mix: bool = False) -> float:
    """Wall seconds of one `tsekit score` command on a fresh output folder."""
    subprocess.run(["rm", "-rf", str(out)], check=True)
    command = [str(TSEKIT), "score", "--ref", str(data / "spk1.scp"), "--est", str(est_scp),
               "--out", str(out), "--nj", str(nj), "--metrics", metrics]
    if mix:
        command += ["--mix", str(data / "wav.scp")]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "work")
    parser.add_argument("--size", default="small")
    parser.add_argument("--split", default="train-100")
    parser.add_argument("--plain-loop", nargs=2, type=Path, metavar=("DATA", "EST_SCP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_loop:
        plain_loop(*args.plain_loop)
        return
    data, est_scp = prepare(args.work, args.size, args.split)
    n = len((data / "spk1.scp").read_text().splitlines())

    # each measured REPEATS times, interleaved, keeping the fastest (the least disturbed by the machine)
    same = "si_sdr,pesq,stoi"
    loops, ones, twos = [], [], []
    for _ in range(REPEATS):
        loops.append(run_plain_loop(data, est_scp))
        ones.append(tsekit_score(data, est_scp, args.work / "out1", 1, same))
        twos.append(tsekit_score(data, est_scp, args.work / "out2", 2, same))
    loop_wall, loop_inside = min(loops)
    one, two = min(ones), min(twos)
    full = tsekit_score(data, est_scp, args.work / "full2", 2, ALL_SIGNAL_METRICS, mix=True)

    print(f"{n} utterances of {data} (16 kHz), metrics si_sdr + pesq + stoi unless said otherwise; "
          f"best of {REPEATS} runs\n")
    print(f"{'method':<50} {'seconds':>8} {'utt/s':>7} {'vs loop':>8} {'library share':>14}")
    rows = [("plain loop script (pesq, pystoi, si-sdr per file)", loop_wall, 1),
            ("tsekit score --nj 1", one, 1), ("tsekit score --nj 2", two, 2)]
    for name, seconds, cores in rows:
        print(f"{name:<50} {seconds:8.2f} {n / seconds:7.1f} {loop_wall / seconds:7.2f}x "
              f"{100 * loop_inside / (seconds * cores):13.0f}%")
    print(f"{'tsekit score --nj 2, 10 metrics + mixture':<50} {full:8.2f} {n / full:7.1f} {'':>8} {'':>14}")
    print(f"  (that last row: {ALL_SIGNAL_METRICS}, each also on the mixture as baseline)")
    print(f"\nfloor: {loop_inside:.2f} s inside pesq, pystoi and si-sdr ({n / loop_inside:.1f} utt/s on one core); "
          "library share = floor / (wall time x processes): the part of the work that is the libraries' own")


if __name__ == "__main__":
    main()
