"""tsekit tokenize: codec tokens of every signal of a data dir (recipe stage 3)."""

import click


@click.command()
@click.option("--codec", required=True,
              help="A registered codec name (encodec_24khz) or the experiment dir of a codec the toolkit trained.")
@click.argument("data", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--bandwidth", type=float, default=None,
              help="kbps, for a registered codec that has several (encodec_24khz: 1.5, 3, 6, 12, 24; default 6).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint of a registered codec (default: where its package caches it).")
@click.option("--params", default=None,
              help="Constructor parameters of a registered codec as a YAML mapping ('{bandwidth: 6.0}'); "
                   "--bandwidth and --weights override them.")
@click.option("--nj", type=click.IntRange(min=1), default=None,
              help="With --job: the number of jobs. Without: torch threads of this process.")
@click.option("--job", type=click.IntRange(min=1), default=None,
              help="Encode only shard JOB of --nj (Kaldi runners); the last job to finish writes the tokens.scp files.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
def tokenize(codec, data, out, bandwidth, weights, params, nj, job, device) -> None:
    """Encode the mixtures, targets and enrollments of DATA into OUT/<signal>/tokens.{ark,scp}.

    \b
    tsekit tokenize --codec encodec_24khz --bandwidth 6 data/test dump/encodec_24khz/test
    $cmd JOB=1:4 LOG tsekit tokenize --codec exp/codec data/train dump/codec/train --job JOB --nj 4
    Signals: mixture (wav.scp), target (spk1.scp), enroll (enroll.scp), enroll_pos and enroll_neg
    (enroll_pos.scp, enroll_neg.scp, when the data dir has them); an enrollment sampled from spk2enroll
    is the target of its row. A rerun skips what is done (resume after a kill).
    """
    from tsekit import TsekitError
    from tsekit.codec.registry import codec_options
    from tsekit.codec.tokenize import tokenize_data_dir

    if job is not None and nj is None:
        raise TsekitError("--job needs --nj (the number of jobs)")
    if job is not None and job > nj:
        raise TsekitError(f"--job {job} is larger than --nj {nj}")
    options = codec_options(params, bandwidth=bandwidth, weights=weights)
    summary = tokenize_data_dir(codec, data, out, params=options, nj=nj, job=job, device=device)
    click.echo(str(summary), err=True)
