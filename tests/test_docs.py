"""The README is a short landing page; the manual (docs/, built by `make docs`) quotes every command's --help."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from click.testing import CliRunner

from tsekit.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_a_landing_page_whose_links_resolve():
    readme = ROOT / "README.md"
    assert readme.stat().st_size < 8192
    targets = [t for t in re.findall(r"\]\(([^)#]+)", readme.read_text()) if "://" not in t]
    assert any(t.startswith("docs/") for t in targets)
    assert [t for t in targets if not (ROOT / t).exists()] == []


def _mkdocs_hooks():
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "tools" / "mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _help(command: str) -> str:
    result = CliRunner().invoke(cli, [*command.split()[1:], "--help"], prog_name="tsekit", terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def test_command_reference_is_the_help_of_every_command():
    reference = _mkdocs_hooks().command_reference()
    sections = dict(re.findall(r"^#+ `([^`]+)`\n\n```\n(.*?)\n```\n", reference, re.M | re.S))
    # every command a user can reach from `tsekit --help`, group by group
    expected, groups = set(), ["tsekit"]
    while groups:
        group = groups.pop()
        expected.add(group)
        listing = _help(group).partition("\nCommands:\n")[2]
        groups += [f"{group} {name}" for name in re.findall(r"^  (\S+)", listing, re.M)]
    assert set(sections) == expected
    assert {"tsekit score merge", "tsekit data holdout", "tsekit prepare mini-libri2mix"} <= expected
    for command, text in sections.items():
        assert text + "\n" == _help(command), command


def test_table_code_pipes_render_as_on_github():
    hooks = _mkdocs_hooks()
    markdown = "`a\\|b` outside a table\n| `cpu\\|cuda` | a \\| b |\n"
    assert hooks.unescape_table_code_pipes(markdown) == "`a\\|b` outside a table\n| `cpu|cuda` | a \\| b |\n"
