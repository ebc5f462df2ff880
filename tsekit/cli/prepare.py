"""tsekit prepare CORPUS ...: corpus on disk -> Kaldi data dirs (recipe stage 1)."""

import click

from tsekit.cli.prepare_conversations import absent, conversations, mini_conversations
from tsekit.cli.prepare_corpora import libri2mix, libri3mix, wham, wsj0_2mix
from tsekit.cli.prepare_mini import mini_libri2mix


@click.group()
def prepare() -> None:
    """Corpus on disk -> one Kaldi data dir per split (stage 1).

    ROOT is the folder that holds wav8k/ and wav16k/ (and metadata/ for
    LibriMix); OUT/<split>/ is written for each split, atomically.
    conversations, mini-conversations and absent write the conversation
    and absent-target test sets (docs/data.md).
    """


for command in (libri2mix, libri3mix, wsj0_2mix, wham, mini_libri2mix, conversations, mini_conversations, absent):
    prepare.add_command(command)
