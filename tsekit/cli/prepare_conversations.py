"""tsekit prepare conversations | mini-conversations | absent: the test sets of issue 30.

Thin wrappers over tsekit.corpora.conversations (imported inside each command, as every prepare command does).
"""

from __future__ import annotations

from collections.abc import Callable

import click

OUT = click.argument("out", type=click.Path(file_okay=False, path_type=str))
SEED = click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same files (bit for bit).")


def _speaker_range(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        low, _, high = value.partition("-")
        return int(low), int(high or low)
    except ValueError:
        raise click.BadParameter(f"give a number or a range such as 2-4, not {value!r}") from None


def conversation_options(command: Callable) -> Callable:
    """The options every conversation command shares (tsekit.corpora.conversations.ConversationOptions)."""
    options = [
        click.option("--recordings", type=click.IntRange(min=1), default=3, show_default=True,
                     help="How many conversations."),
        click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
                     help="About how long each conversation lasts (1-10 for real use; less for tests)."),
        click.option("--speakers", default="2-4", show_default=True, callback=_speaker_range,
                     help="Speakers per conversation: a number or a range (drawn per conversation)."),
        click.option("--overlap", type=click.FloatRange(0, 0.5), default=0.2, show_default=True,
                     help="Share of the speech time in which two speakers talk at once."),
        click.option("--mean-gap", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
                     help="Mean pause between turns that do not overlap, seconds (gamma distributed, shape 2)."),
        click.option("--sample-rate", type=click.Choice(["8000", "16000"]), default="16000", show_default=True,
                     help="Sample rate of the written audio (the speech is resampled if it differs)."),
        SEED,
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _options(recordings: int, minutes: float, speakers: tuple[int, int], overlap: float, mean_gap: float,
             sample_rate: str):  # fmt: skip
    from tsekit.corpora.conversations import ConversationOptions

    options = ConversationOptions(recordings, minutes, speakers, overlap, mean_gap, int(sample_rate))
    options.check()
    return options


@click.command("conversations")
@OUT
@click.option("--speech", "speech", multiple=True, required=True, type=click.Path(file_okay=False, path_type=str),
              help="LibriSpeech-layout folder of the speakers' utterances (flac + trans.txt); repeat for more.")
@click.option("--noise", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Folder of noise wavs under the conversations; none: clean.")
@conversation_options
def conversations(out: str, speech: tuple[str, ...], noise: str | None, seed: int, **options) -> None:
    """Conversations of the --speech speakers -> data dir OUT (audio in OUT/audio/), with rttm and segments."""
    from tsekit.corpora.conversations import make_conversations, read_speech

    click.echo(make_conversations(read_speech(speech), out, _options(**options), noise=noise, seed=seed))


@click.command("mini-conversations")
@click.argument("corpus", type=click.Path(file_okay=False, path_type=str))
@OUT
@click.option("--noise/--no-noise", default=True, show_default=True,
              help="Noise from the corpus's test noise recordings (CORPUS/Noise/tt) under the conversations.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Synthesis processes [default: CPUs].")
@conversation_options
def mini_conversations(corpus: str, out: str, noise: bool, jobs: int | None, seed: int, **options) -> None:
    """Conversations of the mini corpus CORPUS's test speakers -> data dir OUT.

    CORPUS is the folder `tsekit prepare mini-libri2mix` wrote. Its test-clean utterances are used first;
    speakers with too little speech for --minutes get more sentences synthesized with their voices
    (CORPUS/Conversations/, resumable).
    """
    from pathlib import Path

    from tsekit.corpora.conversations import make_conversations, mini_conversation_pool

    settings = _options(**options)
    pool = mini_conversation_pool(corpus, settings, jobs)
    noise_dir = Path(corpus) / "Noise" / "tt" if noise else None
    click.echo(make_conversations(pool, out, settings, noise=noise_dir, seed=seed))


@click.command("absent")
@click.argument("data", type=click.Path(file_okay=False, path_type=str))
@OUT
@SEED
def absent(data: str, out: str, seed: int) -> None:
    """Every mixture of data dir DATA enrolled with a speaker who is not in it -> OUT (utt2present 0)."""
    from tsekit.corpora.conversations import make_absent_set

    click.echo(make_absent_set(data, out, seed=seed))
