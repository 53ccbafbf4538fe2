"""Wording shared by printed messages: a count with its noun in the right number ("1 clip", "2 clips")."""

from __future__ import annotations

from typing import Optional

# nouns whose plural is not the singular + "s"
_IRREGULAR = {"entry": "entries", "epoch": "epochs", "series": "series"}


def plural(word: str) -> str:
    """The plural of a (last) word: ``"clip"`` -> ``"clips"``, ``"still image"`` -> ``"still images"``."""
    head, _, last = word.rpartition(" ")
    last = _IRREGULAR.get(last, last + ("es" if last.endswith(("s", "x", "ch", "sh")) else "s"))
    return f"{head} {last}" if head else last


def count(n: float, noun: str, many: Optional[str] = None) -> str:
    """``n`` and ``noun`` in agreement: ``count(1, "clip")`` -> ``"1 clip"``, ``count(3, "video")`` -> ``"3 videos"``.

    ``many`` gives the plural where :func:`plural` would not guess it; a count of exactly 1 takes
    the singular, every other number (0, 2, 1.5) the plural.
    """
    return f"{n} {noun if n == 1 else (many or plural(noun))}"
