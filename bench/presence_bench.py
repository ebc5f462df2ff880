"""The target-presence decision (tsekit.infer.presence) against the truth of who speaks when: frame accuracy.

    .venv/bin/python bench/presence_bench.py synth CORPUS DATA [--seed 0]
    .venv/bin/python bench/presence_bench.py measure --model MODEL --data DATA --decode DECODE \
        [--windows 0.6,1.0,1.8] [--speaker-windows 1.8] [--hop 0.2]
    .venv/bin/python bench/presence_bench.py cost --model MODEL --mix MIX --enroll ENROLL

``synth`` builds a conversation data dir (the layout of issue 30's conversation sets: a row per recording and
speaker, wav.scp the whole recording, spk1.scp the speaker's own track, enroll.scp another utterance of the
speaker, utt2spk, utt2reco, rttm) from a LibriSpeech-layout folder of single-speaker utterances (CORPUS/<speaker>/
<chapter>/*.flac; the mini corpus's TTS test speakers): speakers in groups of three take turns, each speaking its
utterances but the first (its enrollment), with gaps of 0.3-1.2 s, and a turn starts 0.3-1.0 s before the previous
one ends with probability 0.3 (overlap). The truth of a turn is the utterance without its 0.1 s of leading and
trailing digital silence (the mini corpus pads its TTS so). Beside it, DATA_absent holds the same recordings,
each enrolled with the speakers of the next recording: targets that never speak in them.

``measure`` extracts every row with MODEL into DECODE (``tsekit infer``; rows already there are kept), and prints,
pooled over the rows, the frame accuracy (10 ms frames where the decision agrees with the RTTM: the target speaks
and its frame is kept, or it does not and the frame is silenced), the target frames kept and the frames without
the target silenced, of:

* two references: keeping all the VAD's speech, and two oracles: per VAD segment (a segment kept when the target
  speaks in most of it: the best a decision per segment can do) and per frame of ``--hop`` (a frame kept when the
  target speaks in most of it, cut to the speech: the best ``tsekit.infer.presence``'s frames can do);
* the decision per VAD segment that tsekit made before (energy ratio in dB, speaker similarity of the whole
  segment) over a range of thresholds;
* ``tsekit.infer.presence``'s decision per frame of ``--hop`` seconds, for each window of ``--windows`` (energy)
  and ``--speaker-windows`` (speaker; each costs a Resemblyzer embedding per speech frame), each threshold, and
  each (``min_gap``, ``min_keep``) of ``SMOOTHING``: the frame scores come from ``PresenceGate.decide``, the
  thresholds and smoothing are then applied to them as ``decide`` does (``decide_frames``, ``kept_stretches``).

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
SMOOTHING = ((0.0, 0.0), (0.4, 0.4), (0.6, 0.6), (1.0, 0.6))  # (min_gap, min_keep) in seconds
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


def energy_ratio(output: np.ndarray, mixture: np.ndarray) -> float:
    """10 log10(output energy / mixture energy) in dB over a whole segment (the decision per segment)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(10 * np.log10(np.sum(np.square(output, dtype=np.float64))
                                   / np.sum(np.square(mixture, dtype=np.float64))))


def measure(model: str, data: Path, decode: Path, windows: list[float], hop: float,
            speaker_windows: list[float]) -> None:
    from tsekit.data.audio import load_audio
    from tsekit.data.table import read_table, sorted_keys
    from tsekit.infer.batch import infer_data_dir
    from tsekit.infer.presence import PresenceGate, PresenceSettings, decide_frames, kept_stretches, speech_frames

    if not (decode / "wav.scp").is_file():
        print(infer_data_dir(model, data, decode))
    mixtures, enrolls = read_table(data / "wav.scp"), read_table(data / "enroll.scp")
    utt2spk, utt2reco = read_table(data / "utt2spk"), read_table(data / "utt2reco")
    truth = read_rttm(data / "rttm")
    gates = {(method, window): PresenceGate(PresenceSettings(method=method, window=window, hop=hop))
             for method, sizes in (("energy", windows), ("speaker", speaker_windows)) for window in sizes}
    first = next(iter(gates.values()))
    rows = []  # per row: truth, VAD segments, rate, count, per-segment scores, {(method, window): frame scores}
    for utt in sorted_keys(mixtures):
        mixture, rate = load_audio(mixtures[utt])
        output, _ = load_audio(str(decode / "wav" / f"{utt}.wav"))
        enrollment, _ = load_audio(enrolls[utt])
        count = math.ceil(len(mixture) / rate / FRAME)
        target = mask(truth.get((utt2reco[utt], utt2spk[utt]), []), count)
        frames = {key: gate.decide(output, mixture, enrollment, rate) for key, gate in gates.items()}
        segments = next(iter(frames.values())).segments
        reference = first.encoder.embed(enrollment, rate)
        per_segment = {"energy": [energy_ratio(output[s:e], mixture[s:e]) for s, e in segments],
                       "speaker": [float(np.dot(first.encoder.embed(output[s:e], rate), reference))
                                   for s, e in segments]}
        rows.append((target, segments, rate, count, per_segment, frames))
        print(f"{utt}: {len(segments)} VAD segments", flush=True)
    target = np.concatenate([row[0] for row in rows])

    def as_frames(kept: list[tuple[int, int]], rate: int, count: int) -> np.ndarray:
        return mask([(s / rate, e / rate) for s, e in kept], count)

    def report(name: str, kept: np.ndarray) -> None:
        recall = f"{kept[target].mean():.3f}" if target.any() else "-"  # a set of absent targets has none
        print(f"{name:44s} accuracy {np.mean(kept == target):.3f}  kept {recall}  "
              f"silenced {(~kept[~target]).mean():.3f}")

    print(f"{len(rows)} rows, {len(target) * FRAME:.0f} s of rows, target active {target.mean():.2f} of it")
    report("VAD only (keep all speech)", np.concatenate([as_frames(r[1], r[2], r[3]) for r in rows]))
    report("per-segment oracle", np.concatenate([
        as_frames([(s, e) for s, e in r[1] if r[0][round(s / r[2] / FRAME) : round(e / r[2] / FRAME)].mean() > 0.5],
                  r[2], r[3]) for r in rows]))
    hop_frames = round(hop / FRAME)

    def oracle(row: tuple) -> np.ndarray:
        target, segments, rate, count = row[:4]
        scores = next(iter(row[5].values())).scores
        hop_samples = next(iter(row[5].values())).hop
        wanted = np.array([target[k * hop_frames : (k + 1) * hop_frames].mean() > 0.5 if k * hop_frames < count
                           else False for k in range(len(scores))])
        speech = speech_frames(segments, hop_samples, len(scores))
        return as_frames(kept_stretches(wanted & speech, hop_samples, segments), rate, count)

    report(f"window oracle ({hop:g} s frames)", np.concatenate([oracle(r) for r in rows]))
    for method, thresholds in (("energy", ENERGY_THRESHOLDS), ("speaker", SIMILARITY_THRESHOLDS)):
        for threshold in thresholds:
            report(f"per segment: {method} > {threshold:g}", np.concatenate([
                as_frames([seg for seg, score in zip(r[1], r[4][method], strict=True) if score > threshold],
                          r[2], r[3]) for r in rows]))
    for method, window in gates:
        for threshold in ENERGY_THRESHOLDS if method == "energy" else SIMILARITY_THRESHOLDS:
            for min_gap, min_keep in SMOOTHING:
                kept = []
                for r in rows:
                    presence = r[5][(method, window)]
                    speech = speech_frames(presence.segments, presence.hop, len(presence.scores))
                    present = decide_frames(presence.scores, speech, threshold, round(min_gap / hop),
                                            round(min_keep / hop))
                    kept.append(as_frames(kept_stretches(present, presence.hop, presence.segments), r[2], r[3]))
                report(f"{method} {window:g} s > {threshold:g}, gap {min_gap:g} keep {min_keep:g}",
                       np.concatenate(kept))


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
            gate(output, mixture, enrollment, rate, Path(tmp) / "out.rttm", "out").gate(output)
            cold = time.perf_counter() - started
            # again with the models loaded and warm, as for every row after the first of `tsekit infer`
            started = time.perf_counter()
            gate(output, mixture, enrollment, rate, Path(tmp) / "out.rttm", "out").gate(output)
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
    run.add_argument("--windows", default="0.6,1.0,1.8", help="energy windows (s), comma-separated")
    run.add_argument("--speaker-windows", default="1.8", help="speaker windows (s), comma-separated")
    run.add_argument("--hop", type=float, default=0.2)
    timing = commands.add_parser("cost", help="the VAD's and the presence decision's time against extraction's")
    timing.add_argument("--model", required=True)
    timing.add_argument("--mix", required=True)
    timing.add_argument("--enroll", required=True)
    args = parser.parse_args()
    if args.command == "synth":
        synth(args.corpus, args.data, args.seed)
    elif args.command == "measure":
        measure(args.model, args.data, args.decode, [float(w) for w in args.windows.split(",")], args.hop,
                [float(w) for w in args.speaker_windows.split(",") if w])
    else:
        cost(args.model, args.mix, args.enroll)


if __name__ == "__main__":
    main()
