"""tsekit data validate | split | subset | holdout."""

import sys

import click


@click.group()
def data() -> None:
    """Validate, split, subset and hold out parts of Kaldi data dirs."""


@data.command()
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--no-audio", is_flag=True, help="Skip opening the audio files (table checks only).")
@click.option("--require-enroll", is_flag=True, help="Fail when enroll.scp is missing (it is written by stage 2).")
def validate(data_dir: str, no_audio: bool, require_enroll: bool) -> None:
    """Check DATA_DIR like Kaldi's validate_data_dir.sh plus the TSE rules.

    Exits 1 and lists every problem found.
    """
    from pathlib import Path

    from tsekit.data.validate import validate_data_dir

    problems = validate_data_dir(data_dir, check_audio=not no_audio, require_enroll=require_enroll)
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        click.echo(f"tsekit: error: {data_dir}: {len(problems)} problems found", err=True)
        sys.exit(1)
    note = "" if (Path(data_dir) / "enroll.scp").is_file() else " (no enroll.scp yet: run `tsekit enroll`)"
    click.echo(f"{data_dir}: OK{note}")


@data.command()
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.argument("num_parts", type=click.IntRange(min=1))
def split(data_dir: str, num_parts: int) -> None:
    """Split DATA_DIR into DATA_DIR/splitN/{1..N} (contiguous sorted rows)."""
    from tsekit.data.datadir import split_data_dir

    parts = split_data_dir(data_dir, num_parts)
    click.echo(f"wrote {len(parts)} parts under {parts[0].parent}")


@data.command()
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--utt-list", required=True, type=click.Path(dir_okay=False), help="Utterances to keep, one per line.")
@click.argument("out", type=click.Path(file_okay=False))
def subset(data_dir: str, utt_list: str, out: str) -> None:
    """Copy the rows of DATA_DIR named in --utt-list into OUT."""
    from tsekit.data.datadir import subset_data_dir
    from tsekit.data.table import read_table

    subset_data_dir(data_dir, utt_list, out)
    click.echo(f"wrote {out} ({len(read_table(f'{out}/wav.scp'))} rows)")


@data.command()
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--train-out", required=True, type=click.Path(file_okay=False),
              help="Data dir of the rows whose target is not held out.")
@click.option("--heldout-out", required=True, type=click.Path(file_okay=False),
              help="Data dir of the rows whose target source utterance is held out.")
@click.option("--per-speaker", default=2, show_default=True, type=int,
              help="Source utterances held out per speaker (at least 2 when DATA_DIR has enroll.scp).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the held-out draw and the enrollments.")
def holdout(data_dir: str, train_out: str, heldout_out: str, per_speaker: int, seed: int) -> None:
    """Split DATA_DIR by source utterance into --train-out and --heldout-out.

    Per speaker, --per-speaker of its source utterances (utt2uniq) are held
    out: rows with such a target go to --heldout-out, all others to
    --train-out, so a speaker classifier is validated on unseen utterances of
    its training speakers. Enrollment lists are drawn anew within each part;
    pos/neg clips are not carried. A rerun with the same options rewrites
    nothing.
    """
    from tsekit.data.holdout import holdout_data_dir

    click.echo(holdout_data_dir(data_dir, train_out, heldout_out, per_speaker=per_speaker, seed=seed).summary())
