"""tsekit prepare mini-libri2mix OUT: synthesize the small Libri2Mix-layout (or Libri3Mix) demo corpus."""

from __future__ import annotations

import click


@click.command("mini-libri2mix")
@click.argument("out", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--size", default="small", show_default=True,
    help="tiny (tests, seconds), small (~30 s on 2 CPUs), demo (the demo recipe's, ~1 min), "
    "medium (~2.5 min), or a number of training mixtures.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same files (bit for bit).")
@click.option(
    "--sample-rate", type=click.Choice(["8000", "16000"]), default="16000", show_default=True,
    help="Writes Libri2Mix/wav8k/ or wav16k/ (the LibriSpeech sources are always 16 kHz).",
)
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Worker processes [default: CPUs].")
@click.option(
    "--num-sources", type=click.Choice(["2", "3"]), default="2", show_default=True,
    help="Speakers per mixture: 3 writes OUT/Libri3Mix/ (with s3/) instead of OUT/Libri2Mix/.",
)
def mini_libri2mix(out: str, size: str, seed: int, sample_rate: str, jobs: int | None, num_sources: str) -> None:
    """Synthesize a small Libri2Mix (TTS voices + synthetic noise) under OUT.

    Writes OUT/Libri2Mix/ in the real Libri2Mix layout and OUT/LibriSpeech/
    with transcripts; read it with `tsekit prepare libri2mix OUT/Libri2Mix DATA
    --librispeech OUT/LibriSpeech` (with --num-sources 3: `libri3mix
    OUT/Libri3Mix`). Needs the Debian packages listed in
    tools/system_packages.sh. An interrupted run resumes where it stopped.
    """
    from tsekit.corpora.mini_librimix import make_mini_libri2mix

    click.echo(make_mini_libri2mix(out, size=size, seed=seed, sample_rate=int(sample_rate), jobs=jobs,
                                   num_sources=int(num_sources)))
