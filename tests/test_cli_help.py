"""Every option of every command says what it does and its default; every command shows one example."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from video3d_zoo.cli.commands import build_parser
from video3d_zoo.version import __version__

PARSER = build_parser()
SUB = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))
COMMANDS = sorted(SUB.choices)


def _rendered_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return parser._get_formatter()._expand_help(action) if action.help else ""


def test_the_walk_sees_the_training_commands():
    assert {"train", "eval", "make-synthetic", "classify", "extract", "info"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help_with_its_default(name):
    parser = SUB.choices[name]
    assert parser.prog == f"video3d-zoo {name}"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        text = _rendered_help(parser, action)
        assert text.strip(), f"{name} {label}: no help"
        if action.default not in (None, False, argparse.SUPPRESS, []):
            assert "default" in text, f"{name} {label}: help does not state its default {action.default!r}"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_ends_with_an_example(name):
    parser = SUB.choices[name]
    assert parser.epilog and parser.epilog.startswith("example:"), name
    assert f"video3d-zoo {name}" in parser.epilog or f"-m video3d_zoo" in parser.epilog, parser.epilog
    assert parser.format_help().rstrip().endswith(parser.epilog.splitlines()[-1].strip())


def test_version():
    result = subprocess.run([sys.executable, "-m", "video3d_zoo", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"video3d-zoo {__version__}"
