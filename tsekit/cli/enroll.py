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
@click.option(
    "--interferers",
    default=1,
    show_default=True,
    type=int,
    help="Interferer speakers in each positive clip (1: target + 1 talker, 2: target + 2); needs --posneg.",
)
@click.option(
    "--posneg-noise",
    default=None,
    metavar="scp|DIR",
    help="Add noise to both posneg clips: 'scp' draws from DATA/noise1.scp (WHAM! noise of Libri2Mix "
    "mix_both / WHAM! data dirs), DIR from every *.wav under it (e.g. wham_noise/tr); needs --posneg.",
)
@click.option(
    "--posneg-sources",
    type=click.Path(file_okay=False),
    default=None,
    help="Data dir whose clean targets (spk1.scp) the posneg interferers are cut from (default: DATA); a "
    "conversation or absent-target set, which brings its own enroll.scp, needs the set it was built from; "
    "needs --posneg.",
)
@click.option("--snr-min", default=0.0, show_default=True, type=float, help="Lowest posneg noise SNR (dB).")
@click.option("--snr-max", default=10.0, show_default=True, type=float, help="Highest posneg noise SNR (dB).")
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
    interferers: int,
    posneg_noise: str | None,
    posneg_sources: str | None,
    snr_min: float,
    snr_max: float,
) -> None:
    """Write DATA/enroll.scp, DATA/utt2enroll and DATA/spk2enroll (stage 2).

    Without --from-map every row gets another utterance of its target speaker,
    drawn per row from (seed, row): never the target utterance itself, never a
    source of the same mixture. With --from-map the enrollments of a published
    list are used. --posneg adds enroll_pos.scp / enroll_neg.scp: the
    enrollment mixed with --interferers other speakers, each at its own random
    SIR in [--sir-min, --sir-max] dB, and other utterances of those speakers
    alone at the same levels (wavs under DATA/enroll_posneg/, what was used in
    DATA/enroll_posneg.tsv). --posneg-noise adds a noise segment to both clips,
    at a random SNR in [--snr-min, --snr-max] dB below the positive's speech.
    A conversation or absent-target set keeps the enroll.scp it came with;
    --posneg gives it the pos/neg clips, their interferers from --posneg-sources.
    """
    from tsekit.data.enroll import enroll_data_dir

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE

    if from_map is None and given("map_format"):
        raise click.UsageError("--map-format needs --from-map FILE")
    for name in ("interferers", "posneg_noise", "posneg_sources", "snr_min", "snr_max"):
        if not posneg and given(name):
            raise click.UsageError(f"--{name.replace('_', '-')} needs --posneg")
    for name in ("snr_min", "snr_max"):
        if posneg_noise is None and given(name):
            raise click.UsageError(f"--{name.replace('_', '-')} needs --posneg-noise")
    click.echo(
        enroll_data_dir(
            data,
            seed=seed,
            from_map=from_map,
            map_format=map_format,
            posneg=posneg,
            sir_range=(sir_min, sir_max),
            interferers=interferers,
            posneg_noise=posneg_noise,
            snr_range=(snr_min, snr_max),
            posneg_sources=posneg_sources,
        )
    )
