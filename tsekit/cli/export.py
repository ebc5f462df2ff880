"""tsekit export: a trained experiment as a packaged model (recipe stage 9)."""

import click


@click.command()
@click.argument("exp_dir", type=click.Path(file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--checkpoint", default=None,
              help="A checkpoint file, or a file name in the stage's checkpoints/ (epoch3.pt). Default: the one "
                   "inference uses (averaged.pt, else the best, else latest.pt).")
@click.option("--card", "card_file", type=click.Path(dir_okay=False), default=None,
              help="What the model card says of the corpus (YAML: license, datasets, corpus, limits). Default: "
                   "model_card.yaml of the recipe the experiment lies in, when there is one.")
@click.option("--name", default=None, help="The model's name in its card. Default: SYSTEM-RECIPE.")
def export(exp_dir, out_dir, checkpoint, card_file, name) -> None:
    """Write the experiment EXP_DIR as a packaged model in OUT_DIR (replaced if it exists).

    \b
    tsekit export exp/zspex exp/zspex/packaged
    tsekit extract --model exp/zspex/packaged --mix mixture.wav --enroll enrollment.wav -o target.wav

    OUT_DIR holds model.safetensors, config.yaml, README.md (a model card in the Hugging Face hub's
    conventions) and manifest.json (the sha256 of every file; the frozen parts by name and weight hash). A codec
    or vocoder trained by tsekit that the system speaks through is exported with it; published frozen parts
    (Whisper, a published codec or vocoder, a speaker encoder) are named, not copied.
    """
    from tsekit.train.export import export_model

    click.echo(str(export_model(exp_dir, out_dir, checkpoint=checkpoint, card_file=card_file, name=name)), err=True)
