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


# Options of the same name that are other facts in one command, with their reason.
DIFFERENT_FACTS = {
    ("make-synthetic", "--frames"): "frames of each video written, not a clip's length",
    ("make-synthetic", "--size"): "side of the videos written, not a crop",
    ("make-synthetic", "--fps"): "frame rate of the videos written, not a resampling rate",
    ("make-synthetic", "--seed"): "the training set's seed (0)",
    ("demo", "--seed"): "fresh videos, unlike the training set's seed 0",
    ("export", "--format"): "a file format (eval's --format is a data-set layout)",
    ("eval", "--format"): "a data-set layout (export's --format is a file format)",
}


def _options():
    """``option string -> [(command, action)]`` over every command."""
    found = {}
    for name in COMMANDS:
        for action in SUB.choices[name]._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    found.setdefault(option, []).append((name, action))
    return found


def test_options_shared_by_commands_have_one_type_and_default():
    from video3d_zoo.cli.argtypes import SHARED_OPTIONS

    for option, uses in _options().items():
        uses = [(name, a) for name, a in uses if (name, option) not in DIFFERENT_FACTS]
        kinds = {(type(a).__name__, repr(a.default), a.type, tuple(a.choices or ())) for _, a in uses}
        assert len(kinds) <= 1, f"{option} differs between {[name for name, _ in uses]}: {kinds}"
        shared = SHARED_OPTIONS.get(option)
        if shared is not None and uses:
            _, action = uses[0]
            assert action.default == shared.get("default", False if shared.get("action") else None), option
            assert action.type is shared.get("type"), option
    used = _options()
    for option in ("--batch-size", "--device", "--clip-len", "--workers", "--fps", "--precision"):
        assert len(used[option]) >= 2 and option in SHARED_OPTIONS, option
    assert {n for n, a in used["--batch-size"]} >= {"extract", "classify", "eval", "bench"}


def test_every_number_option_has_an_upper_bound():
    for option, uses in _options().items():
        for name, action in uses:
            if action.type in (None, str) or action.choices:
                continue
            with pytest.raises(argparse.ArgumentTypeError, match="<=|between"):
                action.type(str(10**12))  # far past any bound


@pytest.mark.parametrize("argv", [["extract", "v.mp4", "-o", "out", "--batch-size", "0"],
                                  ["eval", "--model", "m", "data", "--batch-size", "0"],
                                  ["classify", "v.mp4", "--last", "middle"],
                                  ["info"]])
def test_a_bad_value_is_one_error_line_without_the_usage_block(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith(f"video3d-zoo {argv[0]}: error: "), err
