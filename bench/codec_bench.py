"""Tokenization and decoding speed of each codec, and what two tokenization jobs gain over one.

    .venv/bin/python bench/codec_bench.py DATA [--codec NAME|EXP ...] [--weights encodec_24khz=PATH ...]
        [--work DIR] [--device cpu|cuda]

For every codec (default: encodec_24khz, plus dac_16khz when its package imports; a trained toolkit codec
by its experiment dir, e.g. egs/mini_libri2mix/exp/codec):

(a) `tsekit tokenize` of DATA (mixtures, targets, enrollments) as the recipe runs it: one job (--nj 1)
    against two jobs at once (--nj 2, JOB=1 and 2 as run.pl starts them), each a process of its own with
    the cores shared out as `tsekit infer` does; real-time factor = wall seconds / audio seconds encoded,
    and the speed-up of two jobs over one;
(b) decoding: the mixture tokens read back and decoded in one process, RTF against their audio length.

encodec_24khz without --weights runs the real architecture with random weights (no pretrained weights can
be downloaded here): the cost is the real one, the tokens are not.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def available_codecs() -> list[str]:
    codecs = ["encodec_24khz"]
    try:
        import dac  # noqa: F401
    except Exception:  # not installed, or its torchaudio extension fails to load: skip it
        print("dac_16khz: the `dac` package does not import here; skipped")
    else:
        codecs.append("dac_16khz")
    return codecs


def tokenize_jobs(codec: str, params: list[str], data: Path, out: Path, nj: int, device: str) -> float:
    """Wall seconds of `tsekit tokenize` over DATA in ``nj`` concurrent job processes."""
    tsekit = Path(sys.executable).parent / "tsekit"
    started = time.perf_counter()
    jobs = [subprocess.Popen([str(tsekit), "tokenize", "--codec", codec, *params, str(data), str(out),
                              "--nj", str(nj), "--job", str(job), "--device", device],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for job in range(1, nj + 1)]
    for job in jobs:
        _, errors = job.communicate()
        if job.returncode != 0:
            raise SystemExit(f"tsekit tokenize failed: {errors.strip().splitlines()[-1]}")
    return time.perf_counter() - started


def encoded_seconds(out: Path) -> float:
    """Audio seconds behind every token matrix in OUT (frames / frame rate)."""
    import kaldiio

    from tsekit.data.tokens import SIGNALS, read_codec_info

    frame_rate = float(read_codec_info(out)["frame_rate"])
    total = 0.0
    for signal in SIGNALS:
        scp = out / signal / "tokens.scp"
        if scp.is_file():
            total += sum(matrix.shape[1] for _, matrix in kaldiio.load_scp_sequential(str(scp))) / frame_rate
    return total


def decode_rtf(codec: str, params: dict, out: Path, device: str) -> float:
    import kaldiio

    from tsekit.codec.registry import load_codec
    from tsekit.data.tokens import read_codec_info

    model = load_codec(codec, **params).to(device)
    frame_rate = float(read_codec_info(out)["frame_rate"])
    compute = audio = 0.0
    with torch.no_grad():
        for _, matrix in kaldiio.load_scp_sequential(str(out / "mixture" / "tokens.scp")):
            tokens = torch.from_numpy(matrix).long()[None].to(device)
            started = time.perf_counter()
            model.decode(tokens)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            compute += time.perf_counter() - started
            audio += matrix.shape[1] / frame_rate
    return compute / audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--codec", action="append", default=None, help="a registered name or a trained codec's exp dir")
    parser.add_argument("--weights", action="append", default=[], help="NAME=PATH: a registered codec's checkpoint")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    weights = dict(item.split("=", 1) for item in args.weights)
    work = args.work or Path(tempfile.mkdtemp(prefix="codec_bench_"))
    codecs = args.codec or available_codecs()
    rows = []
    for codec in codecs:
        params: dict = {}
        if codec == "encodec_24khz":
            from tsekit.pretrained.encodec_codec import random_checkpoint

            params["weights"] = weights.get(codec) or str(random_checkpoint(work / "encodec_random.th", 0))
        elif codec in weights:
            params["weights"] = weights[codec]
        options = ["--weights", params["weights"]] if params else []
        name = Path(codec).name
        one = tokenize_jobs(codec, options, args.data, work / name / "nj1", 1, args.device)
        two = tokenize_jobs(codec, options, args.data, work / name / "nj2", 2, args.device)
        seconds = encoded_seconds(work / name / "nj1")
        rows.append((name, one / seconds, two / seconds, one / two,
                     decode_rtf(codec, params, work / name / "nj1", args.device)))
    print(f"{args.data} on {args.device}; RTF = wall or compute seconds / audio seconds (lower is faster)")
    print(f"{'codec':<20} {'tokenize nj1':>13} {'tokenize nj2':>13} {'nj2 speed-up':>13} {'decode':>9}")
    for name, one, two, speedup, decode in rows:
        print(f"{name:<20} {one:13.4f} {two:13.4f} {speedup:12.2f}x {decode:9.4f}")


if __name__ == "__main__":
    main()
