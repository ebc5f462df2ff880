"""maskgit_tse's decoding trade-off from one run: quality and speed for 1, 4, 8 and 16 iterations, with and
without classifier-free guidance, at the lengths inference uses and at the lengths training saw.

    .venv/bin/python bench/maskgit_bench.py DATA EXP [--rows 40] [--iterations 1,4,8,16] [--guidance 0,1.5]
                                           [--lengths infer,train] [--join 4] [--asr-model tiny.en|DIR]
                                           [--device cpu]

DATA is a data dir with wav.scp, spk1.scp and enroll.scp (and text, the reference of the WER; without it
the WER is against Whisper's transcript of the clean target); EXP a trained ``maskgit_tse`` experiment.
Every setting extracts the same first ``--rows`` rows in this process with the same thread count, so
their real-time factors are comparable; each row of the table gives network calls per utterance, the RTF,
and speaker similarity to the enrollment, DNSMOS OVRL, corpus WER and SI-SDR (reported, not the goal),
with the mixture as a row. The last line gives each setting's time as a multiple of the one-iteration
setting's, measured in this run.

``--lengths``: ``infer`` decodes as ``tsekit infer`` does (chunks of the config's default inference length,
the whole enrollment); ``train`` in chunks of the training crop (``data.chunk_seconds``) with the enrollment
cut to its training crop (``data.enroll_seconds``, the middle of it). Speaker similarity is to the whole
enrollment either way. Token accuracy (``acc``: all codebooks, ``acc1``: the first) compares the tokens
decoded in back-to-back chunks of that length (no cross-fade) with the codec's tokens of the clean target.

``--join N`` evaluates longer rows than the data dir has (the mini corpus's are about 2 s, shorter than the
inference chunk): N rows of the same target speaker (utt2spk) end to end, mixtures, targets and transcripts
alike, enrolled by their distinct enrollments end to end; ``--rows`` then counts joined rows.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

METRICS = ["spk_sim", "dnsmos_ovrl", "wer", "si_sdr"]


def summarize(results) -> dict[str, float]:
    """Means of spk_sim, dnsmos_ovrl, si_sdr and the corpus WER (errors over words) of UtteranceScores."""
    out = {m: float(np.nanmean([r.scores[m] for r in results])) for m in ("spk_sim", "dnsmos_ovrl", "si_sdr")}
    words = sum(r.asr.get("words", 0) for r in results)
    errors = sum(r.asr.get("estimate_word_errors", 0) for r in results)
    out["wer"] = errors / words if words else math.nan
    return out


def middle(signal: np.ndarray, samples: int | None) -> np.ndarray:
    """The middle ``samples`` of ``signal`` (all of it when None or shorter)."""
    if samples is None or len(signal) <= samples:
        return signal
    start = (len(signal) - samples) // 2
    return signal[start : start + samples]


def join_rows(utts: list[str], speaker_of: dict[str, str], size: int) -> list[list[str]]:
    """The rows of each target speaker, in order, in groups of ``size``; a speaker's last, smaller group is left out."""
    by_speaker: dict[str, list[str]] = {}
    for utt in utts:
        by_speaker.setdefault(speaker_of[utt], []).append(utt)
    return [rows[i : i + size] for rows in by_speaker.values() for i in range(0, len(rows) - size + 1, size)]


def token_accuracy(model, mixture: np.ndarray, target: np.ndarray, enroll: np.ndarray,
                   chunk_seconds: float | None) -> tuple[float, float]:
    """(all codebooks, first codebook): the fraction of the clean target's codec tokens that decoding the
    mixture in back-to-back chunks of ``chunk_seconds`` (None: whole) gives."""
    import torch

    from tsekit.codec.registry import resample
    from tsekit.infer.extract import chunk_starts

    codec = model.codec(torch.device("cpu"))
    rate = int(codec.sample_rate)

    def encode(signal: np.ndarray) -> torch.Tensor:
        return codec.encode(resample(torch.from_numpy(signal)[None], model.sample_rate, rate))

    mixture_tokens, target_tokens, enroll_tokens = encode(mixture), encode(target), encode(enroll)
    frames = min(mixture_tokens.shape[-1], target_tokens.shape[-1])
    mel = model._mel(torch.from_numpy(mixture)[None], mixture_tokens.shape[-1])
    chunk = frames if chunk_seconds is None else min(round(chunk_seconds * codec.frame_rate), frames)
    decoded = torch.empty_like(target_tokens[..., :frames])
    for start in chunk_starts(frames, chunk, 0):
        piece = slice(start, start + chunk)
        decoded[..., piece] = model.generate(mixture_tokens[..., piece], enroll_tokens,
                                             None if mel is None else mel[:, piece])
    right = decoded == target_tokens[..., :frames]
    return right.float().mean().item(), right[:, 0].float().mean().item()


def main() -> None:
    from tsekit.data.table import read_table, sorted_keys
    from tsekit.infer.extract import extract_waveform, load_mono
    from tsekit.metrics.scorer import Scorer, Utterance
    from tsekit.train.config import default_chunk_seconds
    from tsekit.train.experiment import load_experiment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("exp", type=Path)
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--iterations", default="1,4,8,16")
    parser.add_argument("--guidance", default="0,1.5", help="guidance scales w (logits cond + w (cond - uncond))")
    parser.add_argument("--lengths", default="infer", help="infer, train or both (module docstring)")
    parser.add_argument("--join", type=int, default=1, help="rows of one speaker joined into one (docstring)")
    parser.add_argument("--asr-model", default="tiny.en")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model, cfg = load_experiment(args.exp, device=args.device)
    if model.registry_name != "maskgit_tse":
        raise SystemExit(f"{args.exp}: a {model.registry_name} experiment, not maskgit_tse")
    rate = cfg.data.sample_rate
    tables = {name: read_table(args.data / name) for name in ("wav.scp", "spk1.scp", "enroll.scp")}
    texts = read_table(args.data / "text") if (args.data / "text").is_file() else {}
    utts = sorted_keys(tables["wav.scp"])
    groups = [[u] for u in utts] if args.join == 1 else join_rows(utts, read_table(args.data / "utt2spk"), args.join)
    groups = groups[: args.rows]

    def load(u: str, name: str) -> np.ndarray:
        return load_mono(tables[name][u], f"{args.data / name}: {u}", rate)

    signals, joined_texts = {}, {}
    for group in groups:
        key = group[0] if len(group) == 1 else f"{group[0]}+{len(group) - 1}"
        enrollments = dict.fromkeys(tables["enroll.scp"][u] for u in group)  # distinct, in order
        signals[key] = {"wav.scp": np.concatenate([load(u, "wav.scp") for u in group]),
                        "spk1.scp": np.concatenate([load(u, "spk1.scp") for u in group]),
                        "enroll.scp": np.concatenate([load_mono(e, f"{args.data / 'enroll.scp'}: {key}", rate)
                                                      for e in enrollments])}
        if all(u in texts for u in group):  # a row cut short has no text (docs/ARCHITECTURE.md: text)
            joined_texts[key] = " ".join(texts[u] for u in group)
    transcribed = bool(texts)
    texts, utts = joined_texts, list(signals)
    audio_seconds = sum(len(signals[u]["wav.scp"]) for u in utts) / rate
    scorer = Scorer(METRICS, asr_model=args.asr_model)

    def utterance(u: str, estimate: np.ndarray, with_mixture: bool = False) -> Utterance:
        s = signals[u]
        return Utterance(u, rate, estimate, s["spk1.scp"], s["wav.scp"] if with_mixture else None, s["enroll.scp"],
                         rate, texts.get(u), untranscribed=transcribed and u not in texts)

    calls = []
    model.network.register_forward_hook(lambda *_: calls.append(1))
    lengths = {"infer": (default_chunk_seconds(cfg), None),
               "train": (cfg.data.chunk_seconds, cfg.data.enroll_seconds)}
    rows: dict[str, dict[str, float]] = {}
    for length in args.lengths.split(","):
        if length not in lengths:
            raise SystemExit(f"--lengths: {length!r} is neither infer nor train")
        chunk, enroll_seconds = lengths[length]
        enroll_samples = None if enroll_seconds is None else round(enroll_seconds * rate)
        enrollments = {u: middle(signals[u]["enroll.scp"], enroll_samples) for u in utts}
        for guidance in (float(g) for g in args.guidance.split(",")):
            for iterations in (int(k) for k in args.iterations.split(",")):
                model.iterations, model.guidance_scale = iterations, guidance
                calls.clear()
                started = time.perf_counter()
                estimates = {u: extract_waveform(model, signals[u]["wav.scp"], enrollments[u], rate, chunk,
                                                 output_level=cfg.infer.output_level) for u in utts}
                seconds, calls_per_row = time.perf_counter() - started, len(calls) / len(utts)
                scores = summarize([scorer.score(utterance(u, e)) for u, e in estimates.items()])
                accuracy = np.mean([token_accuracy(model, signals[u]["wav.scp"], signals[u]["spk1.scp"],
                                                   enrollments[u], chunk) for u in utts], axis=0)
                rows[f"{length} K={iterations:<2} w={guidance:g}"] = {
                    "calls": calls_per_row, "rtf": seconds / audio_seconds, **scores,
                    "acc": accuracy[0], "acc1": accuracy[1]}
    mixture = summarize([scorer.score(utterance(u, signals[u]["wav.scp"])) for u in utts])
    rows["mixture"] = {"calls": 0.0, "rtf": 0.0, **mixture, "acc": math.nan, "acc1": math.nan}

    print(f"{len(utts)} rows of {args.data}, {args.exp}, on {args.device}; WER by {args.asr_model} against "
          f"{'text' if texts else 'its transcript of the clean target'}; "
          + "; ".join(f"{n}: chunks of {c or 'whole'} s, enrollment {e or 'whole'} s" for n, (c, e) in lengths.items()
                      if n in args.lengths.split(",")))
    print(f"{'setting':<18} {'calls':>6} {'RTF':>7} {'spk_sim':>8} {'OVRL':>6} {'WER %':>7} {'SI-SDR':>7} "
          f"{'acc':>6} {'acc1':>6}")
    for name, r in rows.items():
        print(f"{name:<18} {r['calls']:6.1f} {r['rtf']:7.3f} {r['spk_sim']:8.3f} {r['dnsmos_ovrl']:6.3f} "
              f"{100 * r['wer']:7.2f} {r['si_sdr']:7.2f} {r['acc']:6.3f} {r['acc1']:6.3f}")
    base = next(r["rtf"] for n, r in rows.items() if n != "mixture")
    print("time / first setting: " + ", ".join(f"{n.strip()} {r['rtf'] / base:.2f}x"
                                               for n, r in rows.items() if n != "mixture"))


if __name__ == "__main__":
    main()
