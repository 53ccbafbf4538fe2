"""argparse vocabulary shared by every command's parser (:mod:`.cli`, :mod:`.cli_train`).

Each type checks a value while the arguments are parsed, so a bad number ends the command with
a clear message and exit status 2 before any work starts.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable

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
