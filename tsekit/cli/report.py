"""tsekit report: a static results page to listen to and look at (recipe stage 8)."""

import click


@click.command()
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Data dir the systems were scored on (data/test); its name picks EXP/decode_<name>/.")
@click.option("--exp", "exp_dirs", required=True, multiple=True, type=click.Path(file_okay=False),
              help="Experiment dir with decode_<set>/scores/scores.tsv (stage 7); repeat for each system.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder (replaced whole): index.html, audio/, img/.")
@click.option("--n", "n", type=click.IntRange(min=1), default=12, show_default=True,
              help="Utterances to show (not with --select list).")
@click.option("--select", type=click.Choice(["best", "worst", "random", "list"]), default=None,
              help="Which utterances: best/worst by SI-SDRi (mean over the systems; SI-SDR when some system "
                   "lacks SI-SDRi), random (--seed), list (--utt-list). Default: best, or list with --utt-list.")
@click.option("--utt-list", type=click.Path(dir_okay=False), default=None,
              help="File of utterance ids, one per line, shown in its order (--select list).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --select random.")
@click.option("--link", is_flag=True, help="Symlink the audio files instead of copying them.")
@click.option("--threshold", type=float, default=1.0, show_default=True,
              help="SI-SDRi (dB) above which an utterance counts as accepted.")
def report(data_dir, exp_dirs, out, n, select, utt_list, seed, link, threshold) -> None:
    """Write a self-contained HTML results page of the scored systems into OUT.

    \b
    tsekit report --data data/test --exp exp/zspex --exp exp/spex_plus --out exp/report_test
    tsekit report --data data/test --exp exp/zspex --out DIR --select random --n 20 --seed 3

    The page (no network needed to open it) has a summary table, plots, players and
    spectrograms of the chosen utterances, and the commands and configs behind each
    system. The folder can be zipped and published as it is.
    """
    from tsekit import TsekitError
    from tsekit.report.page import build_report

    if select is None:
        select = "list" if utt_list else "best"
    elif utt_list and select != "list":
        raise TsekitError(f"--utt-list goes with --select list, not --select {select}")
    index = build_report(data_dir, list(exp_dirs), out, n=n, select=select, seed=seed, utt_list=utt_list, link=link,
                         threshold=threshold)
    click.echo(f"report written: {index}")
