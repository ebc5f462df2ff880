"""The ``tsekit`` command: a click group whose subcommands are imported lazily.

Each subcommand lives in its own module and imports torch, numpy and friends
inside its function body, so ``tsekit --help`` and ``tsekit CMD --help`` stay
fast. Errors the user can fix (TsekitError) are printed on one line and exit
with the error's exit_code: 1, or 75 when another process holds the output's
writer lock (tsekit.lock.LockedError).
"""

from __future__ import annotations

import importlib
import sys

import click

from tsekit import TsekitError, __version__

# command name -> "module:attribute" under tsekit.cli
COMMANDS = {
    "prepare": "prepare:prepare",
    "enroll": "enroll:enroll",
    "data": "data:data",
    "score": "score:score",
    "train": "train:train",
    "infer": "infer:infer",
    "extract": "infer:extract",
    "export": "export:export",
    "report": "report:report",
    "tokenize": "tokenize:tokenize",
    "codec": "codec:codec",
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that command is used."""

    def __init__(self, *args, lazy_commands: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_commands:
            module_name, attribute = self.lazy_commands[name].split(":")
            module = importlib.import_module(f"tsekit.cli.{module_name}")
            return getattr(module, attribute)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing help strings would import every command module; the short
        # descriptions are kept here instead.
        rows = [(name, COMMAND_HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


COMMAND_HELP = {
    "prepare": "Corpus on disk -> Kaldi data dirs (stage 1); synthesize the mini corpus.",
    "enroll": "Enrollment lists: enroll.scp, spk2enroll, noisy pos/neg enrollments (stage 2).",
    "data": "Validate, split, subset and hold out parts of Kaldi data dirs.",
    "score": "Metrics of estimates against references: SI-SDR(i), PESQ, STOI, DNSMOS, WER, ... (stage 7).",
    "train": "Train a system from an experiment config (stages 4-5).",
    "infer": "Extract the target speaker of every row of a data dir with a trained experiment (stage 6).",
    "extract": "Extract the enrolled speaker from one mixture file with a trained experiment or packaged model.",
    "export": "A trained experiment as a packaged model: safetensors weights, config, model card, manifest (stage 9).",
    "report": "Results page to listen to and look at: scores, plots, audio, spectrograms, commands (stage 8).",
    "codec": "Train the toolkit's own codec or mel vocoder; resynthesise a data dir's targets through one (stage 3).",
    "tokenize": "Codec tokens of the mixtures, targets and enrollments of a data dir (stage 3).",
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tsekit")
def cli() -> None:
    """tsekit: target speaker extraction toolkit.

    Recipes live in egs/<corpus>/run.sh; every stage there calls one of the
    commands below. Run `tsekit COMMAND --help` for the options of each.
    """


def main() -> None:
    try:
        status = cli.main(standalone_mode=False)
    except TsekitError as err:
        click.echo(f"tsekit: error: {err}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("tsekit: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    # --help and --version end here with status 0; commands return None
    sys.exit(status if isinstance(status, int) else 0)
