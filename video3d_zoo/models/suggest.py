"""Close names for an unknown model name, ranked by how closely the name's parts match.

Model names are made of ``_``-separated parts (``resnet3d_18``, ``resnet50_3d``).  A misspelt
name usually keeps most parts and gets one wrong (``resnet3d_19``, ``resnet50_3dd``), so each part
of the query is matched to its best part of a candidate: numbers by how near they are (19 is
next to 18, far from 101), other parts by :class:`difflib.SequenceMatcher`.  The part scores are
summed and divided by the larger part count, so extra parts (``preact_`` in front) cost.  Names
written without their separators (``r2plus1d18``) are caught by comparing the joined names too,
at a discount so that a right part structure ranks first.
"""

from __future__ import annotations

import difflib
from typing import Iterable, List, Tuple

#: a suggestion must score at least this (1.0 is the name itself)
MIN_SCORE = 0.45
#: weight of the joined-name comparison against the part-by-part one
JOINED_WEIGHT = 0.8


def _part_similarity(a: str, b: str) -> float:
    if a == b:
        return 1.0
    if a.isdigit() and b.isdigit():
        return 1.0 / (1.0 + abs(int(a) - int(b)))
    return difflib.SequenceMatcher(None, a, b).ratio()


def name_score(query: str, candidate: str) -> float:
    """How close ``candidate`` is to ``query``: 1.0 for the same name, 0.0 for nothing in common."""
    wanted = [p for p in query.lower().split("_") if p]
    parts = [p for p in candidate.lower().split("_") if p]
    if not wanted or not parts:
        return 0.0
    total = sum(max(_part_similarity(w, p) for p in parts) for w in wanted)
    joined = difflib.SequenceMatcher(None, "".join(wanted), "".join(parts)).ratio()
    return max(total / max(len(wanted), len(parts)), JOINED_WEIGHT * joined)


def suggest_names(query: str, names: Iterable[str], limit: int = 8) -> List[str]:
    """The ``limit`` names closest to ``query`` (best first; ties go to the closer whole name)."""
    scored: List[Tuple[float, float, str]] = []
    for name in names:
        score = name_score(query, name)
        if score >= MIN_SCORE:
            whole = difflib.SequenceMatcher(None, query.lower(), name.lower()).ratio()
            scored.append((-score, -whole, name))
    return [name for _, _, name in sorted(scored)[:limit]]


__all__ = ["name_score", "suggest_names"]
