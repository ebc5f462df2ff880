"""How far the level of extracted speech is from the reference's, beside the mixture's.

    .venv/bin/python bench/output_level.py DATA DECODE [DECODE ...]

DATA is a data dir (wav.scp mixtures, spk1.scp references); each DECODE is a
decode dir of `tsekit infer` (its wav.scp). For every row, the level
difference is 10 log10(energy of the signal / energy of the reference), in dB;
the table gives its mean, its mean absolute value and its spread over the rows,
for each decode dir and for the mixture itself (the obvious alternative a
listener compares with: a mixture of two equally loud talkers is about +3 dB).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def level_difference_db(signal: np.ndarray, reference: np.ndarray) -> float:
    """10 log10(|signal|^2 / |reference|^2) over their common length."""
    n = min(len(signal), len(reference))
    energy = float(np.sum(np.square(signal[:n], dtype=np.float64)))
    reference_energy = float(np.sum(np.square(reference[:n], dtype=np.float64)))
    return 10 * np.log10(max(energy, 1e-20) / max(reference_energy, 1e-20))


def main() -> None:
    from tsekit.data.audio import load_audio
    from tsekit.data.table import read_table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("decodes", type=Path, nargs="+")
    args = parser.parse_args()

    references = read_table(args.data / "spk1.scp")
    columns = {"mixture": read_table(args.data / "wav.scp")}
    columns.update({str(d): read_table(d / "wav.scp") for d in args.decodes})
    utts = sorted(set(references).intersection(*columns.values()))
    print(f"{len(utts)} rows of {args.data}; level difference to the reference in dB")
    print(f"{'signal':<50} {'mean':>7} {'mean |.|':>9} {'std':>6}")
    for name, table in columns.items():
        diffs = np.array([level_difference_db(load_audio(table[u], name)[0], load_audio(references[u], "ref")[0])
                          for u in utts])
        print(f"{name:<50} {diffs.mean():+7.2f} {np.abs(diffs).mean():9.2f} {diffs.std():6.2f}")


if __name__ == "__main__":
    main()
