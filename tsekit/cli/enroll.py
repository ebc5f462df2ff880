"""tsekit enroll DATA: enrollment lists of a data dir (recipe stage 2)."""

from __future__ import annotations

import click


@click.command()
@click.argument("data", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of every random draw.")
@click.option(
    "--from-map",
    type=click.Path(dir_okay=False),
    default=None,
    help="Import a published enrollment list instead of drawing one.",
)
@click.option(
    "--map-format",
    type=click.Choice(["but", "spex"]),
    default="but",
    show_default=True,
    help="but: BUT SpeakerBeam map_mixture2enrollment; spex: aux.scp with mix.scp/ref.scp beside it.",
)
@click.option("--posneg", is_flag=True, help="Also build noisy positive/negative enrollments.")
@click.option("--sir-min", default=-5.0, show_default=True, type=float, help="Lowest posneg SIR (dB).")
@click.option("--sir-max", default=5.0, show_default=True, type=float, help="Highest posneg SIR (dB).")
@click.pass_context
def enroll(
    ctx: click.Context,
    data: str,
    seed: int,
    from_map: str | None,
    map_format: str,
    posneg: bool,
    sir_min: float,
    sir_max: float,
) -> None:
    """Write DATA/enroll.scp, DATA/utt2enroll and DATA/spk2enroll (stage 2).

    Without --from-map every row gets another utterance of its target speaker,
    drawn per row from (seed, row): never the target utterance itself, never a
    source of the same mixture. With --from-map the enrollments of a published
    list are used. --posneg adds enroll_pos.scp / enroll_neg.scp: the
    enrollment mixed with an interferer at a random SIR in [--sir-min,
    --sir-max] dB, and that interferer alone (wavs under DATA/enroll_posneg/).
    """
    from tsekit.data.enroll import enroll_data_dir

    if from_map is None and ctx.get_parameter_source("map_format") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--map-format needs --from-map FILE")
    click.echo(
        enroll_data_dir(
            data,
            seed=seed,
            from_map=from_map,
            map_format=map_format,
            posneg=posneg,
            sir_range=(sir_min, sir_max),
        )
    )
