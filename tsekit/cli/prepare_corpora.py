"""tsekit prepare libri2mix | libri3mix | wsj0-2mix | wham: a corpus on disk -> Kaldi data dirs.

Thin wrappers: the work (and every check) is in tsekit.corpora.*, imported
inside each command so that `tsekit --help` does not load numpy/soundfile.
"""

from __future__ import annotations

import click

ROOT = click.argument("root", type=click.Path(file_okay=False, path_type=str))
OUT = click.argument("out", type=click.Path(file_okay=False, path_type=str))
MODE = click.option(
    "--mode", type=click.Choice(["min", "max"]), default="min", show_default=True,
    help="min: mixtures end with the shorter source; max: with the longer one.",
)


def sample_rate_option(default: int):
    return click.option(
        "--sample-rate", type=click.Choice(["8000", "16000"]), default=str(default), show_default=True,
        help="Which copy to read: wav8k/ or wav16k/.",
    )


def splits_option(default: str):
    return click.option(
        "--splits", default=default, show_default=True,
        help="Comma-separated splits to prepare, each written to OUT/<split>/.",
    )


def mixture_option(default: str):
    return click.option(
        "--mixture", type=click.Choice(["mix_clean", "mix_both", "mix_single"]), default=default,
        show_default=True, help="mix_single holds source 1 + noise only (one row per mixture).",
    )


def parse_splits(text: str) -> list[str]:
    splits = [split.strip() for split in text.split(",") if split.strip()]
    if not splits:
        raise click.BadParameter("give at least one split", param_hint="--splits")
    return splits


def librimix_command(num_sources: int) -> click.Command:
    """`tsekit prepare libri<N>mix`: Libri2Mix and Libri3Mix share every option."""

    @click.command(
        f"libri{num_sources}mix",
        help=f"Libri{num_sources}Mix (ROOT holds wav8k/ and wav16k/) -> OUT/<split>/, "
        "one row per (mixture, target).",
    )
    @ROOT
    @OUT
    @sample_rate_option(16000)
    @MODE
    @mixture_option("mix_clean")
    @splits_option("train-100,dev,test")
    @click.option(
        "--librispeech", type=click.Path(file_okay=False, path_type=str), default=None,
        help="LibriSpeech folder; its *.trans.txt transcripts fill `text`.",
    )
    def command(
        root: str, out: str, sample_rate: str, mode: str, mixture: str, splits: str, librispeech: str | None
    ) -> None:
        from tsekit.corpora.librimix import prepare_librimix

        summary = prepare_librimix(
            root, out, sample_rate=int(sample_rate), mode=mode, mixture=mixture,
            splits=parse_splits(splits), librispeech=librispeech, num_sources=num_sources,
        )
        click.echo(summary)

    return command


libri2mix = librimix_command(2)
libri3mix = librimix_command(3)


@click.command("wsj0-2mix")
@ROOT
@OUT
@sample_rate_option(8000)
@MODE
@splits_option("tr,cv,tt")
def wsj0_2mix(root: str, out: str, sample_rate: str, mode: str, splits: str) -> None:
    """WSJ0-2mix (ROOT is the 2speakers/ folder) -> OUT/<split>/, two rows per mixture."""
    from tsekit.corpora.wsj0_2mix import prepare_wsj0_2mix

    click.echo(prepare_wsj0_2mix(root, out, sample_rate=int(sample_rate), mode=mode,
                                 splits=parse_splits(splits)))


@click.command("wham")
@ROOT
@OUT
@sample_rate_option(8000)
@MODE
@mixture_option("mix_both")
@splits_option("tr,cv,tt")
def wham(root: str, out: str, sample_rate: str, mode: str, mixture: str, splits: str) -> None:
    """WHAM! (ROOT holds wav8k/ and wav16k/) -> OUT/<split>/, noise in noise1.scp."""
    from tsekit.corpora.wham import prepare_wham

    click.echo(prepare_wham(root, out, sample_rate=int(sample_rate), mode=mode, mixture=mixture,
                            splits=parse_splits(splits)))
