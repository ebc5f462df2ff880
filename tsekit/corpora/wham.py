"""WHAM! on disk -> one Kaldi data dir per split (tr, cv, tt).

Layout::

    ROOT/wav{8k,16k}/{min,max}/{tr,cv,tt}/{mix_both,mix_clean,mix_single,s1,s2,noise}/<name>.wav

File names follow WSJ0-2mix (see :mod:`tsekit.corpora.wsj0_2mix`). mix_single
is source 1 plus noise, so it gives only target-s1 rows; the noisy mixtures
also fill noise1.scp.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from tsekit.corpora.common import Tables, mixture_contents, rows_to_tables, write_splits
from tsekit.corpora.wsj0_2mix import WSJ_SPLITS, wsj_split_dir, wsj_split_rows


def prepare_wham(
    root: str | os.PathLike,
    out: str | os.PathLike,
    sample_rate: int = 8000,
    mode: str = "min",
    mixture: str = "mix_both",
    splits: Sequence[str] = WSJ_SPLITS,
) -> str:
    """Write ``out/<split>/`` for each split of WHAM!; returns the summary table.

    All splits are checked before any is written (no partial output on error).
    """
    sources, noise = mixture_contents(mixture)
    tables: dict[str, Tables] = {}
    for split in splits:
        split_dir = wsj_split_dir(root, sample_rate, mode, split)
        rows = wsj_split_rows(split_dir, mixture, sources=sources, noise=noise)
        tables[split] = rows_to_tables(rows, sample_rate, desc=f"wham {split}")
    return write_splits(out, tables)
