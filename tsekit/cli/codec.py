"""tsekit codec: train the toolkit's own codec or vocoder, and resynthesise a data dir's targets through one."""

import click


@click.group()
def codec() -> None:
    """Train a codec or mel vocoder (recipe stage 3) and measure its resynthesis ceiling."""


@codec.command(context_settings={"ignore_unknown_options": False})
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Codec or vocoder YAML (egs/<corpus>/conf/codec.yaml or vocoder.yaml).")
@click.option("--train-data", required=True, type=click.Path(file_okay=False),
              help="Data dir whose clean targets (spk1.scp) are the training audio.")
@click.option("--valid-data", required=True, type=click.Path(file_okay=False),
              help="Data dir whose first targets are validated.")
@click.option("--exp-dir", required=True, type=click.Path(file_okay=False),
              help="Experiment dir; writes config.yaml, checkpoints/last.pt, codec.pt, log/.")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.argument("overrides", nargs=-1)
def train(config_path, train_data, valid_data, exp_dir, device, print_config, overrides) -> None:
    """Train (or resume) a codec or vocoder; OVERRIDES are key.sub=value settings applied to the config.

    \b
    tsekit codec train --config conf/vocoder.yaml --train-data data/train --valid-data data/dev \\
                       --exp-dir exp/vocoder train.steps=5000
    A rerun continues from checkpoints/last.pt; a finished run does nothing.
    """
    from tsekit.codec.train import load_codec_config, train_codec
    from tsekit.typed_config import format_config

    cfg = load_codec_config(config_path, overrides)
    if print_config:
        click.echo(format_config(cfg), nl=False)
        return
    click.echo(f"trained: {train_codec(cfg, train_data, valid_data, exp_dir, device=device)}")


@codec.command()
@click.option("--codec", "codec_spec", required=True,
              help="A trained codec/vocoder experiment dir (exp/<name>) or a registered codec name.")
@click.option("--params", default=None,
              help="Constructor parameters of a registered codec as a YAML mapping ('{bandwidth: 6.0}').")
@click.option("--job", type=int, default=None, help="This job's shard, 1..--nj.")
@click.option("--nj", type=int, default=None, help="Number of shards (jobs).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.argument("data", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
def resynth(codec_spec, params, job, nj, device, data, out) -> None:
    """DATA's clean targets (spk1.scp) through the codec (encode -> decode) or vocoder (mel -> waveform) into
    OUT/wav/ and OUT/wav.scp, at DATA's rate and length: the resynthesis ceiling, scored with tsekit score.

    Resumable: wavs that exist are skipped.
    """
    from tsekit.codec.registry import codec_options
    from tsekit.codec.train import resynth_data_dir

    click.echo(resynth_data_dir(codec_spec, data, out, job=job, nj=nj, device=device, params=codec_options(params)))
