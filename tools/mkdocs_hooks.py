"""MkDocs hooks (mkdocs.yml `hooks:`).

The command reference is tsekit's own `--help`: on docs/commands.md, the line
HELP_MARKER is replaced by the `--help` text of `tsekit` and of every command
under it, each verbatim in a code block, so the page cannot drift from the
command line. And a pipe inside code in a table cell renders as GitHub renders it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import click

from tsekit.cli import cli

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

HELP_MARKER = "<!-- tsekit --help of every command -->"
# the width `--help` wraps at in an 80-column terminal (click's default cap)
TERMINAL_WIDTH = 80
CODE_SPAN = re.compile(r"`[^`\n]*`")


def command_reference() -> str:
    """Markdown of the `--help` of `tsekit` and each of its (sub)commands, depth first, sorted by name."""
    sections: list[str] = []

    def visit(command: click.Command, path: list[str], parent: click.Context | None) -> None:
        ctx = command.make_context(path[-1], [], parent=parent, resilient_parsing=True,
                                   terminal_width=TERMINAL_WIDTH)
        heading = "##" if len(path) <= 2 else "###"
        sections.append(f"{heading} `{' '.join(path)}`\n\n```\n{command.get_help(ctx)}\n```\n")
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                visit(command.get_command(ctx, name), [*path, name], ctx)

    visit(cli, ["tsekit"], None)
    return "\n".join(sections)


def unescape_table_code_pipes(markdown: str) -> str:
    """`a\\|b` -> `a|b` in the code spans of table rows.

    GitHub needs the backslash there to keep the cell whole; Python-Markdown keeps
    pipes inside code spans in their cell by itself and would print it.
    """
    lines = markdown.split("\n")
    return "\n".join(CODE_SPAN.sub(lambda code: code.group(0).replace("\\|", "|"), line)
                     if line.startswith("|") else line for line in lines)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if HELP_MARKER in markdown:
        markdown = markdown.replace(HELP_MARKER, command_reference())
    return unescape_table_code_pipes(markdown)
