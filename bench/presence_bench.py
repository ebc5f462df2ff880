"""The target-presence decision (tsekit.infer.presence) against the truth of who speaks when: frame accuracy.

    .venv/bin/python bench/presence_bench.py synth CORPUS DATA [--seed 0]
    .venv/bin/python bench/presence_bench.py measure --model MODEL --data DATA --decode DECODE
    .venv/bin/python bench/presence_bench.py cost --model MODEL --mix MIX --enroll ENROLL

``synth`` builds a conversation data dir (the layout of issue 30's conversation sets: a row per recording and
speaker, wav.scp the whole recording, spk1.scp the speaker's own track, enroll.scp another utterance of the
speaker, utt2spk, utt2reco, rttm) from a LibriSpeech-layout folder of single-speaker utterances (CORPUS/<speaker>/
<chapter>/*.flac; the mini corpus's TTS test speakers): speakers in groups of three take turns, each speaking its
utterances but the first (its enrollment), with gaps of 0.3-1.2 s, and a turn starts 0.3-1.0 s before the previous
one ends with probability 0.3 (overlap). The truth of a turn is the utterance without its 0.1 s of leading and
trailing digital silence (the mini corpus pads its TTS so). Beside it, DATA_absent holds the same recordings,
each enrolled with the speakers of the next recording: targets that never speak in them.

``measure`` extracts every row with MODEL into DECODE (``tsekit infer``; rows already there are kept), finds the
speech segments of each recording once (Silero VAD), scores every segment of every row by both methods (energy
ratio in dB, speaker similarity), and prints, for a range of thresholds of each, the frame accuracy (10 ms frames
where the decision agrees with the RTTM: the target speaks and its segment is kept, or it does not and the frame
is silenced), the recall (target frames kept) and the rejection (frames without the target silenced), pooled over
the rows; beside them two references: keeping every speech segment (the VAD alone) and the per-segment oracle
(a segment kept when the target speaks in most of it: the best any per-segment decision can do).

``cost`` times, in this process, ``tsekit extract`` of MIX without ``--segments``, the Silero VAD over MIX (the
model's loading apart), and the whole presence decision of each method (VAD, scores, gating, RTTM: the first time,
with loading and warm-up, as ``tsekit extract`` runs it, and again, as for every further row of ``tsekit
infer``); it reports each as a fraction of the extraction's time.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

FRAME = 0.01  # seconds
ENERGY_THRESHOLDS = (-15.0, -12.0, -10.0, -8.0, -7.0, -6.0, -5.0, -4.0, -3.0)
SIMILARITY_THRESHOLDS = (0.5, 0.55, 0.6, 0.62, 0.65, 0.7, 0.75)
PAD = 0.1  # seconds of digital silence at each end of a mini corpus utterance


def synth(corpus: Path, data: Path, seed: int) -> None:
    import soundfile as sf

    from tsekit.data.audio import write_audio
    from tsekit.data.table import write_table

    rng = np.random.default_rng(seed)
    speakers = sorted(p.name for p in corpus.iterdir() if p.is_dir())
    rng.shuffle(speakers)
    rows: dict[str, dict[str, str]] = {name: {} for name in ("wav.scp", "spk1.scp", "enroll.scp", "utt2spk",
                                                               "utt2reco")}
    rttm = []
    for group in range(len(speakers) // 3):
        members = speakers[3 * group : 3 * group + 3]
        rec = f"conv{group:02d}"
        utterances = {spk: sorted((corpus / spk).glob("*/*.flac")) for spk in members}
        turns = [(spk, path) for spk in members for path in utterances[spk][1:]]
        order = list(rng.permutation(len(turns)))
        sequence = []  # no speaker follows itself: take the first remaining turn of another speaker
        while order:
            pick = next((i for i in order if not sequence or turns[i][0] != sequence[-1][0]), order[0])
            order.remove(pick)
            sequence.append(turns[pick])
        rate = sf.info(str(sequence[0][1])).samplerate
        placed, end = [], 0.5
        for spk, path in sequence:
            audio, _ = sf.read(str(path), dtype="float32")
            if placed and rng.random() < 0.3:
                start = max(0.0, end - rng.uniform(0.3, 1.0))  # overlaps the end of the previous turn
            else:
                start = end + rng.uniform(0.3, 1.2)
            placed.append((spk, round(start * rate), audio))
            end = max(end, start + len(audio) / rate)
        length = round((end + 1.0) * rate)
        tracks = {spk: np.zeros(length, dtype=np.float32) for spk in members}
        for spk, start, audio in placed:
            tracks[spk][start : start + len(audio)] += audio
            on = start / rate + PAD
            rttm.append(f"SPEAKER {rec} 1 {on:.3f} {len(audio) / rate - 2 * PAD:.3f} <NA> <NA> {spk} <NA> <NA>")
        mixture = sum(tracks.values())
        scale = min(1.0, 0.9 / np.abs(mixture).max())  # overlapping turns must not clip
        mixture_path = data / "wav" / f"{rec}.wav"
        write_audio(mixture_path, mixture * scale, rate)
        for spk in members:
            utt = f"{rec}-{spk}"
            track_path = data / "tracks" / f"{utt}.wav"
            write_audio(track_path, tracks[spk] * scale, rate)
            rows["wav.scp"][utt] = str(mixture_path.resolve())
            rows["spk1.scp"][utt] = str(track_path.resolve())
            rows["enroll.scp"][utt] = str(utterances[spk][0].resolve())
            rows["utt2spk"][utt] = spk
            rows["utt2reco"][utt] = rec
        print(f"{rec}: {length / rate:.1f} s, speakers {' '.join(members)}, {len(placed)} turns")
    text = "\n".join(sorted(rttm, key=lambda line: (line.split()[1], float(line.split()[3])))) + "\n"
    for name, table in rows.items():
        write_table(data / name, table)
    (data / "rttm").write_text(text)
    # the same recordings, each enrolled with the speakers of the next one: targets that never speak in them
    absent = data.parent / f"{data.name}_absent"
    recordings = sorted(set(rows["utt2reco"].values()))
    following = dict(zip(recordings, recordings[1:] + recordings[:1], strict=True))
    moved: dict[str, dict[str, str]] = {name: {} for name in ("wav.scp", "enroll.scp", "utt2spk", "utt2reco")}
    for utt, rec in rows["utt2reco"].items():
        for other, other_rec in rows["utt2reco"].items():
            if other_rec == following[rec] and rec != other_rec:
                row = f"{rec}-{rows['utt2spk'][other]}"
                moved["wav.scp"][row] = rows["wav.scp"][utt]
                moved["enroll.scp"][row] = rows["enroll.scp"][other]
                moved["utt2spk"][row] = rows["utt2spk"][other]
                moved["utt2reco"][row] = rec
    for name, table in moved.items():
        write_table(absent / name, table)
    (absent / "rttm").write_text(text)


def read_rttm(path: Path) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(recording, speaker) -> turns (onset, offset) in seconds."""
    turns: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            onset = float(fields[3])
            turns.setdefault((fields[1], fields[7]), []).append((onset, onset + float(fields[4])))
    return turns


def mask(spans: list[tuple[float, float]], count: int) -> np.ndarray:
    active = np.zeros(count, dtype=bool)
    for onset, offset in spans:
        active[round(onset / FRAME) : round(offset / FRAME)] = True
    return active


def measure(model: str, data: Path, decode: Path) -> None:
    from tsekit.data.audio import load_audio
    from tsekit.data.table import read_table, sorted_keys
    from tsekit.infer.batch import infer_data_dir
    from tsekit.infer.presence import PresenceGate, PresenceSettings, energy_ratio

    if not (decode / "wav.scp").is_file():
        print(infer_data_dir(model, data, decode))
    mixtures, enrolls = read_table(data / "wav.scp"), read_table(data / "enroll.scp")
    utt2spk, utt2reco = read_table(data / "utt2spk"), read_table(data / "utt2reco")
    truth = read_rttm(data / "rttm")
    gate = PresenceGate(PresenceSettings(method="speaker"))
    segments: dict[str, list[tuple[int, int]]] = {}
    pooled: dict[str, list[np.ndarray]] = {"truth": [], "vad": [], "oracle": []}
    scored = []  # per row: (truth mask, segment masks, energy scores, similarity scores)
    for utt in sorted_keys(mixtures):
        mixture, rate = load_audio(mixtures[utt])
        output, _ = load_audio(str(decode / "wav" / f"{utt}.wav"))
        enrollment, _ = load_audio(enrolls[utt])
        rec = utt2reco[utt]
        if rec not in segments:
            segments[rec] = gate.segments(mixture, rate)
        count = math.ceil(len(mixture) / rate / FRAME)
        target = mask(truth.get((rec, utt2spk[utt]), []), count)
        spans = [mask([(s / rate, e / rate)], count) for s, e in segments[rec]]
        energies = [energy_ratio(output[s:e], mixture[s:e]) for s, e in segments[rec]]
        similarities = gate.decide(output, mixture, enrollment, rate, segments[rec]).scores
        pooled["truth"].append(target)
        pooled["vad"].append(np.any(spans, axis=0) if spans else np.zeros(count, dtype=bool))
        pooled["oracle"].append(np.any([span for span in spans if target[span].mean() > 0.5] or
                                       [np.zeros(count, dtype=bool)], axis=0))
        scored.append((spans, energies, similarities, count))
        print(f"{utt}: {len(spans)} segments, energy dB {np.round(energies, 1).tolist()}, "
              f"similarity {np.round(similarities, 2).tolist()}")
    target = np.concatenate(pooled["truth"])

    def report(name: str, kept: np.ndarray) -> None:
        recall = f"{kept[target].mean():.3f}" if target.any() else "-"  # a set of absent targets has none
        print(f"{name:28s} accuracy {np.mean(kept == target):.3f}  recall {recall}  "
              f"rejection {(~kept[~target]).mean():.3f}")

    print(f"{len(scored)} rows, {len(segments)} recordings, {len(target) * FRAME:.0f} s of rows, target active "
          f"{target.mean():.2f} of it")
    report("VAD only (keep all speech)", np.concatenate(pooled["vad"]))
    report("per-segment oracle", np.concatenate(pooled["oracle"]))
    for method, column, thresholds in (("energy", 1, ENERGY_THRESHOLDS), ("speaker", 2, SIMILARITY_THRESHOLDS)):
        for threshold in thresholds:
            kept = np.concatenate([np.any([span for span, score in zip(row[0], row[column], strict=True)
                                           if score > threshold] or [np.zeros(row[3], dtype=bool)], axis=0)
                                   for row in scored])
            report(f"{method} > {threshold:g}", kept)


def cost(model: str, mix: str, enroll: str) -> None:
    import tempfile
    import time

    from tsekit.data.audio import load_audio
    from tsekit.infer.extract import extract_file
    from tsekit.infer.presence import PresenceGate, PresenceSettings
    from tsekit.pretrained.vad import SileroVad, blocks_of

    mixture, rate = load_audio(mix)
    enrollment, _ = load_audio(enroll)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        extract_file(model, mix, enroll, Path(tmp) / "out.wav")
        extraction = time.perf_counter() - started
        output, _ = load_audio(str(Path(tmp) / "out.wav"))
        started = time.perf_counter()
        vad = SileroVad()
        loading = time.perf_counter() - started
        started = time.perf_counter()
        segments = vad.segments(blocks_of(mixture, rate), rate)
        vad_seconds = time.perf_counter() - started
        print(f"{len(mixture) / rate:.1f} s of audio at {rate} Hz, {len(segments)} speech segments")
        print(f"tsekit extract (model loading included): {extraction:.2f} s")
        print(f"Silero VAD: {vad_seconds:.3f} s ({vad_seconds / extraction:.1%} of the extraction; "
              f"{loading:.3f} s more to load it)")
        for method in ("energy", "speaker"):
            started = time.perf_counter()
            gate = PresenceGate(PresenceSettings(method=method))
            gate(output, mixture, enrollment, rate, Path(tmp) / "out.rttm", "out")
            cold = time.perf_counter() - started
            # again with the models loaded and warm, as for every row after the first of `tsekit infer`
            started = time.perf_counter()
            gate(output, mixture, enrollment, rate, Path(tmp) / "out.rttm", "out")
            warm = time.perf_counter() - started
            print(f"presence by {method} (VAD, scores, gating, RTTM): first {cold:.3f} s, loading included "
                  f"({cold / extraction:.1%} of the extraction), then {warm:.3f} s ({warm / extraction:.1%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("synth", help="build a synthetic conversation data dir")
    make.add_argument("corpus", type=Path)
    make.add_argument("data", type=Path)
    make.add_argument("--seed", type=int, default=0)
    run = commands.add_parser("measure", help="frame accuracy of the presence decision against the RTTM")
    run.add_argument("--model", required=True)
    run.add_argument("--data", type=Path, required=True)
    run.add_argument("--decode", type=Path, required=True)
    timing = commands.add_parser("cost", help="the VAD's and the presence decision's time against extraction's")
    timing.add_argument("--model", required=True)
    timing.add_argument("--mix", required=True)
    timing.add_argument("--enroll", required=True)
    args = parser.parse_args()
    if args.command == "synth":
        synth(args.corpus, args.data, args.seed)
    elif args.command == "measure":
        measure(args.model, args.data, args.decode)
    else:
        cost(args.model, args.mix, args.enroll)


if __name__ == "__main__":
    main()
