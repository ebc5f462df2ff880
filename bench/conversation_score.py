"""How long `tsekit score` takes on long conversations (the conversation metrics over RTTM turns).

    .venv/bin/python bench/conversation_score.py [--work DIR] [--minutes 10] [--speakers 3]

Writes one synthetic conversation (each speaker's track: white noise in its turns of 2-8 s, taken in turn with
up to 0.5 s of overlap and gaps up to 1 s), a data dir of one row per speaker as the conversation corpus lays it
out, and estimates = track + 0.1 x the rest of the mixture. Then measures
  (a) the whole `tsekit score --data DIR --est SCP` command (process start, header checks, reading the audio,
      the four conversation metrics of the estimate and of the mixture baseline, RESULTS.md), its peak memory;
  (b) in-process, the seconds of each metric on one row, to show where the time goes.
The content of the signals does not change the cost: every step is linear in the recording's length.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000


def write_conversation(work: Path, minutes: float, speakers: int) -> tuple[Path, Path]:
    """(data dir, estimates scp) of one conversation."""
    from tsekit.data.rttm import Turn, format_rttm
    from tsekit.data.table import write_table

    rng = np.random.default_rng(0)
    frames, names = int(minutes * 60 * RATE), [f"S{k}" for k in range(speakers)]
    turns, start, k = [], 0.0, 0
    while start < minutes * 60 - 2:
        end = min(start + rng.uniform(2, 8), minutes * 60)
        turns.append((names[k % speakers], start, end))
        start, k = end - rng.uniform(-1.0, 0.5), k + 1  # the next turn overlaps by up to 0.5 s, or follows a gap
    tracks = {}
    for name in names:
        active = np.zeros(frames, dtype=bool)
        for who, onset, end in turns:
            if who == name:
                active[round(onset * RATE):round(end * RATE)] = True
        tracks[name] = (0.1 * rng.standard_normal(frames) * active).astype(np.float32)
    mixture = sum(tracks.values())
    data, est = work / "data" / "conv", work / "est"
    for folder in (data, est):
        folder.mkdir(parents=True, exist_ok=True)
    sf.write(data / "rec.wav", mixture, RATE)
    tables: dict[str, dict[str, str]] = {n: {} for n in ("wav.scp", "spk1.scp", "utt2spk", "utt2reco", "est")}
    for name in names:
        utt = f"rec-{name}"
        sf.write(data / f"{utt}.wav", tracks[name], RATE)
        sf.write(est / f"{utt}.wav", tracks[name] + 0.1 * (mixture - tracks[name]), RATE)
        tables["wav.scp"][utt], tables["spk1.scp"][utt] = str(data / "rec.wav"), str(data / f"{utt}.wav")
        tables["utt2spk"][utt], tables["utt2reco"][utt], tables["est"][utt] = name, "rec", str(est / f"{utt}.wav")
    for name, table in tables.items():
        write_table((est / "wav.scp") if name == "est" else data / name, table)
    (data / "rttm").write_text(format_rttm({"rec": [Turn(who, onset, end) for who, onset, end in turns]}))
    return data, est / "wav.scp"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "work" / "conversation")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--speakers", type=int, default=3)
    args = parser.parse_args()
    data, est = write_conversation(args.work, args.minutes, args.speakers)
    out = args.work / "scores"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tsekit", "score", "--data", str(data), "--est", str(est), "--out",
                    str(out)], check=True, capture_output=True)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{args.minutes:g}-minute {RATE // 1000} kHz conversation, {args.speakers} speakers = {args.speakers} rows")
    print(f"tsekit score --data (whole command, estimate + mixture baseline): {wall:.1f} s, "
          f"{wall / args.speakers:.1f} s per row, peak RSS {peak_mb:.0f} MB")

    from tsekit.metrics import conversation
    from tsekit.metrics.jobs import inputs_from_data_dir, load_utterance

    utterance, _ = load_utterance(inputs_from_data_dir(data, str(est)), "rec-S0")
    for metric in conversation.CONVERSATION_METRICS:
        start = time.perf_counter()
        value = conversation.conversation_scores(utterance.estimate, utterance.reference, utterance.mixture,
                                                 utterance.regions, {metric})[metric]
        print(f"  {metric:24s} {time.perf_counter() - start:6.2f} s   ({value:.2f} dB)")
    print(f"  active samples of row rec-S0: {int(utterance.regions.active.sum())} of {len(utterance.estimate)}")
    print((out / "RESULTS.md").read_text())


if __name__ == "__main__":
    main()
