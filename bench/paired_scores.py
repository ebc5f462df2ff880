"""Two systems (or a system and the mixture) compared row by row on the scores `tsekit score` wrote.

    .venv/bin/python bench/paired_scores.py A.tsv B.tsv [--metrics pesq,dnsmos_ovrl,spk_sim]

A.tsv and B.tsv are per-row tables of `tsekit score` (a scores dir's scores.tsv, or its mixture.tsv for the
mixture). Means over rows hide whether one is better on most rows or on a few by much; on the same rows, the
paired difference says it: for each metric, the mean of A and of B over the rows both score (NaN, e.g. WER of a
row without a transcript, left out), the mean difference A - B, on how many rows A is higher, and the paired t
statistic (mean difference over its standard error; |t| above about 2 is unlikely by chance on 40-80 rows).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path


def read_scores(path: Path) -> dict[str, dict[str, str]]:
    """utt -> {metric: value} of a tsekit score table."""
    with open(path, newline="") as table:
        return {row["utt"]: row for row in csv.DictReader(table, delimiter="\t")}


def paired(a: dict[str, dict[str, str]], b: dict[str, dict[str, str]], metric: str) -> str:
    """One line: A's and B's means, mean difference, rows where A > B, paired t, over the rows both score."""
    pairs = [(float(a[utt][metric]), float(b[utt][metric])) for utt in sorted(set(a) & set(b))]
    pairs = [(x, y) for x, y in pairs if not (math.isnan(x) or math.isnan(y))]
    if len(pairs) < 2:
        return f"{metric}: fewer than 2 rows scored by both"
    diffs = [x - y for x, y in pairs]
    n, mean = len(diffs), sum(diffs) / len(diffs)
    spread = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    t = mean / (spread / math.sqrt(n)) if spread > 0 else math.inf * (1 if mean > 0 else -1)
    return (f"{metric}: A {sum(x for x, _ in pairs) / n:.3f}  B {sum(y for _, y in pairs) / n:.3f}  "
            f"A - B {mean:+.3f}  A higher on {sum(d > 0 for d in diffs)}/{n} rows  paired t {t:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="scores.tsv of A")
    parser.add_argument("b", type=Path, help="scores.tsv (or mixture.tsv) of B")
    parser.add_argument("--metrics", default="pesq,stoi,dnsmos_sig,dnsmos_bak,dnsmos_ovrl,dnsmos_p808,wer,spk_sim")
    args = parser.parse_args()
    a, b = read_scores(args.a), read_scores(args.b)
    for metric in args.metrics.split(","):
        if not (a and metric in next(iter(a.values())) and b and metric in next(iter(b.values()))):
            raise SystemExit(f"{metric}: not a column of both {args.a} and {args.b}")
        print(paired(a, b, metric))


if __name__ == "__main__":
    main()
