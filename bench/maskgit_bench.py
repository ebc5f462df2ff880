"""maskgit_tse's decoding trade-off from one run: quality and speed for 1, 4, 8 and 16 iterations, with and
without classifier-free guidance.

    .venv/bin/python bench/maskgit_bench.py DATA EXP [--rows 40] [--iterations 1,4,8,16] [--guidance 0,1.5]
                                           [--asr-model tiny.en|DIR] [--device cpu]

DATA is a data dir with wav.scp, spk1.scp and enroll.scp (and text, the reference of the WER; without it
the WER is against Whisper's transcript of the clean target); EXP a trained ``maskgit_tse`` experiment.
Every setting extracts the same first ``--rows`` rows in this process with the same thread count, so
their real-time factors are comparable; each row of the table gives network calls per utterance, the RTF,
and speaker similarity to the enrollment, DNSMOS OVRL, corpus WER and SI-SDR (reported, not the goal),
with the mixture as a row. The last line gives each setting's time as a multiple of the one-iteration
setting's, measured in this run.
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


def main() -> None:
    from tsekit.data.table import read_table, sorted_keys
    from tsekit.infer.extract import default_chunk_seconds, extract_waveform, load_experiment, load_mono
    from tsekit.metrics.scorer import Scorer, Utterance

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("exp", type=Path)
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--iterations", default="1,4,8,16")
    parser.add_argument("--guidance", default="0,1.5", help="guidance scales w (logits cond + w (cond - uncond))")
    parser.add_argument("--asr-model", default="tiny.en")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model, cfg = load_experiment(args.exp, device=args.device)
    if model.registry_name != "maskgit_tse":
        raise SystemExit(f"{args.exp}: a {model.registry_name} experiment, not maskgit_tse")
    rate = cfg.data.sample_rate
    tables = {name: read_table(args.data / name) for name in ("wav.scp", "spk1.scp", "enroll.scp")}
    texts = read_table(args.data / "text") if (args.data / "text").is_file() else {}
    utts = sorted_keys(tables["wav.scp"])[: args.rows]
    signals = {u: {k: load_mono(t[u], f"{args.data / k}: {u}", rate) for k, t in tables.items()} for u in utts}
    audio_seconds = sum(len(signals[u]["wav.scp"]) for u in utts) / rate
    scorer = Scorer(METRICS, asr_model=args.asr_model)

    def utterance(u: str, estimate: np.ndarray, with_mixture: bool = False) -> Utterance:
        s = signals[u]
        return Utterance(u, rate, estimate, s["spk1.scp"], s["wav.scp"] if with_mixture else None, s["enroll.scp"],
                         rate, texts.get(u))

    calls = []
    model.network.register_forward_hook(lambda *_: calls.append(1))
    chunk = default_chunk_seconds(cfg)
    rows: dict[str, dict[str, float]] = {}
    for guidance in (float(g) for g in args.guidance.split(",")):
        for iterations in (int(k) for k in args.iterations.split(",")):
            model.iterations, model.guidance_scale = iterations, guidance
            calls.clear()
            started = time.perf_counter()
            estimates = {u: extract_waveform(model, signals[u]["wav.scp"], signals[u]["enroll.scp"], rate, chunk,
                                             output_level=cfg.infer.output_level) for u in utts}
            seconds = time.perf_counter() - started
            scores = summarize([scorer.score(utterance(u, e)) for u, e in estimates.items()])
            rows[f"K={iterations:<2} w={guidance:g}"] = {"calls": len(calls) / len(utts),
                                                         "rtf": seconds / audio_seconds, **scores}
    mixture = summarize([scorer.score(utterance(u, signals[u]["wav.scp"])) for u in utts])
    rows["mixture"] = {"calls": 0.0, "rtf": 0.0, **mixture}

    print(f"{len(utts)} rows of {args.data}, {args.exp}, on {args.device}; WER by {args.asr_model} against "
          f"{'text' if texts else 'its transcript of the clean target'}")
    print(f"{'setting':<12} {'calls':>6} {'RTF':>7} {'spk_sim':>8} {'OVRL':>6} {'WER %':>7} {'SI-SDR':>7}")
    for name, r in rows.items():
        print(f"{name:<12} {r['calls']:6.1f} {r['rtf']:7.3f} {r['spk_sim']:8.3f} {r['dnsmos_ovrl']:6.3f} "
              f"{100 * r['wer']:7.2f} {r['si_sdr']:7.2f}")
    base = next(r["rtf"] for n, r in rows.items() if n != "mixture")
    print("time / first setting: " + ", ".join(f"{n.strip()} {r['rtf'] / base:.2f}x"
                                               for n, r in rows.items() if n != "mixture"))


if __name__ == "__main__":
    main()
