"""argparse vocabulary shared by every command's parser (:mod:`.cli`, :mod:`.cli_train`).

Each type checks a value while the arguments are parsed, so a bad number ends the command with
a clear message and exit status 2 before any work starts.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, Dict

#: every data-set layout, once: ``name -> (training reads it, eval reads it)`` (readers in
#: :mod:`video3d_zoo.train.readers` / :mod:`video3d_zoo.train.readers_more`); here so that building
#: the parser does not import the training package (0.07 s on every command)
DATA_FORMATS = {"ucf101": (True, True), "hmdb51": (True, True), "kinetics": (True, True),
                "activitynet": (True, True), "moments": (True, True), "stair": (True, True),
                "merged": (True, False), "folder": (True, True), "list": (False, True),
                "synthetic": (True, False)}
TRAIN_FORMATS = tuple(name for name, (train, _) in DATA_FORMATS.items() if train)
EVAL_FORMATS = tuple(name for name, (_, evaluates) in DATA_FORMATS.items() if evaluates)

MODEL_REF_HELP = ("model: NAME or NAME.TAG (pretrained weights, see list-pretrained), a checkpoint file or "
                  "folder, or hf-hub:ORG/REPO[@REVISION]")


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text!r}")
    return value


positive_int = int_at_least(1)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that states every default: ``(default: X)`` is appended where the text names none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or default == []:
            return text
        return f"{text} (default: %(default)s)"


def finish_subparsers(sub, examples: Dict[str, str]) -> None:
    """Give every subcommand the shared formatter and its one example as the help's epilog."""
    for name, parser in sub.choices.items():
        parser.formatter_class = HelpFormatter
        parser.epilog = f"example:\n  {examples[name]}"


COMMAND_EXAMPLES = {
    "list": "video3d-zoo list 'resnext*' --aliases",
    "demo": "video3d-zoo demo -o demo_out/",
    "train": "video3d-zoo train synthetic_r3d --set data.root=runs/data/synthetic_s0 --set train.epochs=4",
    "eval": "video3d-zoo eval --weights runs/synthetic_r3d/export runs/data/synthetic_s0 --format folder --split test",
    "make-synthetic": "video3d-zoo make-synthetic data/synthetic --videos-per-class 10",
    "list-pretrained": "video3d-zoo list-pretrained 'resnet3d_50*' --verbose",
    "import": "video3d-zoo import ~/Downloads/3D-ResNets/",
    "info": "video3d-zoo info r3d_18 --frames 16 --size 112",
    "convert": "video3d-zoo convert resnet-34-kinetics.pth -o resnet34/",
    "bench": "video3d-zoo bench r3d_18 --batch-size 2 --no-compile",
    "publish": "video3d-zoo publish resnet34/ --repo-id ORG/resnet3d_34.k400_16f --tag k400_16f --dry-run",
    "extract": "video3d-zoo extract videos/ --model resnet3d_10.synthetic_motion -o features/",
    "classify": "video3d-zoo classify video.mp4 --model resnet3d_10.synthetic_motion --topk 3",
    "export": "video3d-zoo export resnet3d_10.synthetic_motion -o model.onnx",
}
"""One example per command, printed at the end of its ``--help``."""
