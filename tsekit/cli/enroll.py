"""tsekit enroll DATA: enrollment lists of a data dir (recipe stage 2), or enrollments cut from the speakers' own
solo speech in a conversation (--solo)."""

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
@click.option("--solo", is_flag=True,
              help="Cut each row's enrollment from its speaker's solo turns in its own recording (RTTM).")
@click.option("--rttm", type=click.Path(dir_okay=False), default=None,
              help="--solo: who speaks when (RTTM, or tsekit's segments) [default: DATA/rttm, else DATA/segments].")
@click.option("--wav", type=click.Path(dir_okay=False), default=None,
              help="--solo: one recording; DATA is then the data dir to write for it (needs --rttm).")
@click.option("--recording", default=None, help="--wav: its id in the RTTM [default: the file name's stem].")
@click.option("--speaker", "speakers", multiple=True, help="--solo: only this speaker (repeat for more).")
@click.option("--seconds", default=5.0, show_default=True, type=float,
              help="--solo: enrollment length: the longest solo stretches, joined up to this.")
@click.option("--min-seconds", default=2.0, show_default=True, type=float,
              help="--solo: refuse a speaker with less solo speech than this (stretches of 0.5 s or more).")
@click.option("--margin", default=0.25, show_default=True, type=float,
              help="--solo: seconds kept from other speakers' turns.")
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
    solo: bool,
    rttm: str | None,
    wav: str | None,
    recording: str | None,
    speakers: tuple[str, ...],
    seconds: float,
    min_seconds: float,
    margin: float,
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

    --solo enrolls the rows of a conversation data dir (utt2reco) from their
    speakers' own solo speech in the recording: where the RTTM has the speaker
    and no one else within --margin, the longest such stretches joined up to
    --seconds, into DATA/enroll_solo/<row>.wav, enroll.scp and utt2enroll (what
    was cut). With --wav REC --rttm FILE, DATA is written as a data dir of that
    one recording, a row <spk>-<rec> per speaker, ready for `tsekit infer`. A
    speaker with less than --min-seconds alone is an error, and nothing is
    written.
    """
    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE

    def flag(name: str) -> str:
        return next(p.opts[0] for p in ctx.command.params if p.name == name)

    if solo:
        for name in ("seed", "from_map", "map_format", "posneg", "interferers", "posneg_noise", "posneg_sources",
                     "sir_min", "sir_max", "snr_min", "snr_max"):
            if given(name):
                raise click.UsageError(f"{flag(name)} does not go with --solo")
        if wav is not None and rttm is None:
            raise click.UsageError("--wav needs --rttm FILE")
        if recording is not None and wav is None:
            raise click.UsageError("--recording needs --wav")
        from tsekit.data.solo import SoloOptions, enroll_from_solo, enroll_recording

        options = SoloOptions(seconds, min_seconds, margin)
        if wav is not None:
            click.echo(enroll_recording(wav, rttm, data, recording, speakers, options))
        else:
            click.echo(enroll_from_solo(data, rttm, speakers, options))
        return
    for name in ("rttm", "wav", "recording", "speakers", "seconds", "min_seconds", "margin"):
        if given(name):
            raise click.UsageError(f"{flag(name)} needs --solo")

    from tsekit.data.enroll import enroll_data_dir

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
