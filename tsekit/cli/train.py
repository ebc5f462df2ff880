"""tsekit train: stage 1 / stage 2 training of a TSE system (recipe stages 4-5)."""

import click


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Experiment YAML (egs/<corpus>/conf/<system>.yaml).")
@click.option("--train-data", type=click.Path(file_okay=False), help="Training data dir.")
@click.option("--valid-data", type=click.Path(file_okay=False), help="Validation data dir.")
@click.option("--exp-dir", type=click.Path(file_okay=False), help="Experiment dir; writes EXP/stage{N}/.")
@click.option("--stage", type=click.IntRange(1, 2), default=1, show_default=True,
              help="Training stage; stage 2 starts from --init-from and freezes what stage2.freeze says.")
@click.option("--init-from", type=click.Path(exists=True), default=None,
              help="Weights to start from: a checkpoint file or an experiment (its root, a stage folder or a "
                   "packaged model). Stage 1: fine-tuning (sets train.init_from); stage 2: sets stage2.init_from.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from EXP/stage{N}/checkpoints/latest.pt when it exists.")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.option("--print-needs", is_flag=True,
              help="Print what the configured model needs from a data dir (e.g. enroll, tokens) and exit.")
@click.option("--print-value", metavar="KEY", default=None,
              help="Print one resolved setting (e.g. distill.teacher; empty for null) and exit.")
@click.argument("overrides", nargs=-1)
def train(config_path, train_data, valid_data, exp_dir, stage, init_from, resume, device, print_config,
          print_needs, print_value, overrides) -> None:
    """Train a system; OVERRIDES are key.sub=value settings applied to the config.

    \b
    tsekit train --config conf/spex_plus.yaml --train-data data/train-100 --valid-data data/dev \\
                 --exp-dir exp/spex_plus optim.lr=5e-4 train.epochs=50
    Under torchrun every process trains its share of each batch (DistributedDataParallel).
    """
    from tsekit import TsekitError
    from tsekit.train.config import load_config
    from tsekit.typed_config import config_value, format_config

    overrides = list(overrides)
    if init_from:
        overrides.append(f"{'stage2' if stage == 2 else 'train'}.init_from={init_from}")
    cfg = load_config(config_path, overrides)
    if print_config:
        click.echo(format_config(cfg), nl=False)
        return
    if print_value is not None:
        click.echo(config_value(cfg, print_value))
        return
    if print_needs:
        from tsekit.models.registry import model_class

        click.echo(" ".join(sorted(model_class(cfg.model.name).needs)))
        return
    for name, value in (("--train-data", train_data), ("--valid-data", valid_data), ("--exp-dir", exp_dir)):
        if value is None:
            raise TsekitError(f"{name} is required")
    if stage == 2 and not cfg.stage2.init_from:
        raise TsekitError("stage 2 needs --init-from (or stage2.init_from in the config)")
    import os

    from tsekit.train.trainer import train as run

    stage_dir = run(cfg, train_data, valid_data, exp_dir, stage=stage, resume=resume, device=device)
    if os.environ.get("RANK", "0") == "0":
        click.echo(f"trained: {stage_dir}")
