"""Whisper's 30-second input in whisper_cfm: pad every input to 30 s as Whisper was trained, or crop the
positional embedding to the input. Speed of the encoder and WER of plain Whisper for both, from one run.

    .venv/bin/python bench/whisper_input.py DATA [--whisper tiny.en] [--rows 40] [--signal spk1.scp]
                                            [--seconds-before 0]

DATA is a data dir with ``text``; ``--signal`` the scp whose audio is transcribed (the clean targets by
default: the question is what cropping does to Whisper itself). ``--seconds-before`` puts that much of another
row's audio first, as whisper_cfm puts the enrollment before the mixture (its words are not in the reference:
a measure of how the input's length changes the encoder's cost). Both modes go through whisper_cfm's own
encoder and greedy decoder with untrained (zero) LoRA, so they are plain Whisper; the encoder's time is
measured per utterance in this process, and the last line gives pad30's time as a multiple of crop's.
The training cost follows: forward and backward of the whole whisper_cfm loss (the mini config's sizes, a
randomly initialised vocoder for the target mel) on one batch of ``--batch`` rows of the data dir, mixtures
with their enrollments, for each mode (mean of 3 steps after one warm-up step).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    from tsekit.codec.registry import resample
    from tsekit.data.audio import load_audio
    from tsekit.data.table import read_table, sorted_keys
    from tsekit.metrics.asr import word_errors
    from tsekit.models import build_model
    from tsekit.models.whisper_cfm import FRAME_SAMPLES, WHISPER_RATE, whisper_log_mel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--whisper", default="tiny.en")
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--signal", default="spk1.scp")
    parser.add_argument("--seconds-before", type=float, default=0.0)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model("whisper_cfm", {"whisper": args.whisper}).eval()
    whisper = model.whisper(torch.device("cpu"))
    audio, texts = read_table(args.data / args.signal), read_table(args.data / "text")
    rows = sorted_keys(audio)[: args.rows]
    totals = {mode: {"errors": 0, "words": 0, "seconds": 0.0} for mode in ("crop", "pad30")}
    for index, utt in enumerate(rows):
        samples, rate = load_audio(audio[utt], utt)
        wav = resample(torch.from_numpy(samples).float()[None], rate, WHISPER_RATE)
        if args.seconds_before:
            other, other_rate = load_audio(audio[rows[index - 1]], rows[index - 1])
            before = resample(torch.from_numpy(other).float()[None], other_rate, WHISPER_RATE)
            before = before[:, : int(args.seconds_before * WHISPER_RATE)]
            wav = torch.cat([before, wav], 1)
        wav = wav[:, : wav.shape[1] // FRAME_SAMPLES * FRAME_SAMPLES]
        for mode, total in totals.items():
            size = whisper.dims.n_audio_ctx * FRAME_SAMPLES if mode == "pad30" else wav.shape[1]
            padded = torch.nn.functional.pad(wav, (0, size - wav.shape[1]))
            with torch.no_grad():
                mel = whisper_log_mel(padded, torch.tensor([wav.shape[1]]), whisper.dims.n_mels)
                started = time.perf_counter()
                frames, _ = model._encoder(whisper, mel, None)
                total["seconds"] += time.perf_counter() - started
                hypothesis = model.transcribe(frames)[0]
            errors, words = word_errors(texts[utt], hypothesis)
            total["errors"] += errors
            total["words"] += words
    print(f"{len(rows)} rows of {args.data / args.signal}, Whisper {args.whisper}, "
          f"{args.seconds_before:g} s of other speech first")
    print(f"{'input':<8}{'WER %':>8}{'encoder s/utt':>15}")
    for mode, total in totals.items():
        print(f"{mode:<8}{100 * total['errors'] / max(total['words'], 1):>8.2f}"
              f"{total['seconds'] / len(rows):>15.4f}")
    print(f"pad30 encoder time / crop encoder time: {totals['pad30']['seconds'] / totals['crop']['seconds']:.1f}")
    steps = {mode: training_step_seconds(args, mode) for mode in ("crop", "pad30")}
    print(f"training step, batch {args.batch}: crop {steps['crop']:.2f} s, pad30 {steps['pad30']:.2f} s; "
          f"pad30 / crop: {steps['pad30'] / steps['crop']:.1f}")


def training_step_seconds(args: argparse.Namespace, mode: str) -> float:
    """Mean seconds of forward + backward of the whisper_cfm loss on one batch of the data dir's rows."""
    from tsekit.data.dataset import TSEDataset, collate
    from tsekit.models import build_model

    torch.manual_seed(0)
    model = build_model("whisper_cfm", {
        "whisper": args.whisper, "input_padding": mode, "flow_channels": [128, 128], "flow_heads": 2,
        "vocoder": "tsekit_vocoder", "vocoder_params": {"sample_rate": 16000, "hop_length": 256}}).train()
    dataset = TSEDataset(args.data, model.needs, 16000, train=True, chunk_seconds=None)
    batch = collate([dataset[index] for index in range(args.batch)])
    times = []
    for _ in range(4):
        started = time.perf_counter()
        model(batch)["objective"].mean().backward()
        times.append(time.perf_counter() - started)
    return sum(times[1:]) / 3


if __name__ == "__main__":
    main()
