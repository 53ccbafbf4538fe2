"""argparse vocabulary shared by every command's parser (:mod:`.cli`, :mod:`.cli_train`).

Each type checks a value while the arguments are parsed, so a bad number ends the command with
one line and exit status 2 before any work starts.  Every number has an upper bound
(:mod:`video3d_zoo.limits`), and the options several commands take are defined once here
(:data:`SHARED_OPTIONS`, added with :func:`add_shared`).
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Any, Callable, Dict, Optional

from .. import limits

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


def _number_error(kind: str, low, high, text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"expected {kind} >= {low} and <= {high}, got {text!r}")


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An integer from ``low`` to ``high`` (the bounds are in :mod:`video3d_zoo.limits`)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _number_error("an integer", low, high, text) from None
        if not low <= value <= high:
            raise _number_error("an integer", low, high, text)
        return value

    parse.__name__ = f"integer from {low} to {high}"
    return parse


def float_up_to(high: float) -> Callable[[str], float]:
    """A finite number > 0 and at most ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a finite number > 0 and <= {high:g}, got {text!r}") from None
        if not math.isfinite(value) or not 0 < value <= high:
            raise argparse.ArgumentTypeError(f"expected a finite number > 0 and <= {high:g}, got {text!r}")
        return value

    parse.__name__ = f"number in (0, {high:g}]"
    return parse


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text!r}")
    return value


def up_to_cores(text: str) -> int:
    """An integer from 0 to :data:`~video3d_zoo.limits.WORKERS_PER_CORE` per CPU core (processes, threads)."""
    try:  # the core count is read when the value is parsed
        return int_in(0, limits.max_workers())(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} ({limits.WORKERS_PER_CORE} per CPU core; this machine has "
                                         f"{os.cpu_count()})") from None

#: Options several commands take, each defined once with its one type, bound and default:
#: ``add_shared(parser, "--batch-size", ...)`` adds them (``tests/test_cli_help.py`` checks that no
#: command defines one of them on its own).
SHARED_OPTIONS: Dict[str, Dict[str, Any]] = {
    "--batch-size": dict(type=int_in(1, limits.MAX_BATCH), default=8, metavar="N",
                         help=f"clips per forward pass, 1 to {limits.MAX_BATCH} (and the batch must fit in half "
                              "the free memory)"),
    "--device": dict(default="auto", help="cpu, cuda, cuda:1, mps, or auto: the first GPU if there is one, "
                                          "else the CPU"),
    "--precision": dict(choices=("fp32", "bf16", "fp16", "auto"), default="fp32",
                        help="reduced precision where the device supports it (outputs stay float32); auto: bf16 "
                             "where the device runs it natively (AMX / AVX-512-BF16 CPUs, GPUs of compute "
                             "capability 8.0+), else fp32 - features within ~1%% of fp32 (docs/performance.md)"),
    "--fast": dict(action=argparse.BooleanOptionalAction, default=True,
                   help="fold BatchNorm into the convolutions and use channels_last_3d: exact up to float32 "
                        "rounding, 1.3-1.9x faster; --no-fast runs the model as loaded"),
    "--compile": dict(action="store_true",
                      help="also compile with freezing; on the CPU the compiled model is cached across runs "
                           "(the first run of a model, batch size and precision builds it, in another process while "
                           "extract's first batches run eagerly)"),
    "--clip-len": dict(type=int_in(1, limits.MAX_FRAMES), default=None, metavar="T",
                       help=f"frames per clip, 1 to {limits.MAX_FRAMES} (default: the weights' frames)"),
    "--stride": dict(type=int_in(1, limits.MAX_STRIDE), default=None,
                     help=f"frames between clip starts, 1 to {limits.MAX_STRIDE} (default: the clip length)"),
    "--last": dict(choices=("pad", "drop", "shift"), default="pad",
                   help="trailing partial clip: loop-pad it, drop it, or end-align a full clip"),
    "--fps": dict(type=float_up_to(limits.MAX_FPS), default=None,
                  help=f"resample the videos to this frame rate first, above 0 and at most {limits.MAX_FPS:g}"),
    "--workers": dict(type=up_to_cores, default=0, metavar="N",
                      help=f"decoding processes, 0 to {limits.WORKERS_PER_CORE} per CPU core (0: decode in "
                           "this process)"),
    "--topk": dict(type=int_in(1, limits.MAX_CLASSES), default=5, metavar="K", help="predictions per video"),
    "--frames": dict(type=int_in(1, limits.MAX_FRAMES), default=None, metavar="T",
                     help=f"clip length in frames, 1 to {limits.MAX_FRAMES} (default: the weights' or the "
                          "model's input frames)"),
    "--size": dict(type=int_in(1, limits.MAX_SIDE), default=None, metavar="PIXELS",
                   help=f"clip height and width in pixels, 1 to {limits.MAX_SIDE} (default: the weights' or the "
                        "model's crop size)"),
}


def add_shared(parser, *names: str, **changes: Any) -> None:
    """Add the shared options ``names`` to ``parser`` (or an argument group).  ``changes`` may only add
    ``help`` wording or ``required``: a type, bound or default stays the one in :data:`SHARED_OPTIONS`."""
    if set(changes) - {"help", "required"}:
        raise ValueError(f"shared options keep their type and default; cannot change {sorted(changes)}")
    for name in names:
        parser.add_argument(name, **{**SHARED_OPTIONS[name], **changes})


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
