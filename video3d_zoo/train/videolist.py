"""What a split is: :class:`VideoItem`, :class:`VideoList`, and :class:`DataIssues`, the problem report.

Problems with single videos are reported through :class:`DataIssues` with file and line: a
malformed annotation row, a missing video, an undecodable video.  With ``on_error="skip"`` each
one is printed, skipped and counted (:meth:`DataIssues.summary`); with ``"fatal"`` the first one
raises :class:`~video3d_zoo.errors.DataError`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import DataError


# -- problem reporting -------------------------------------------------------------------------
@dataclass
class DataIssues:
    """Collects malformed rows, missing and undecodable videos; fatal or skip-and-count."""

    on_error: str = "skip"
    echo: Optional[Callable[[str], None]] = None
    counts: Dict[str, int] = field(default_factory=dict)
    messages: List[str] = field(default_factory=list)
    max_messages: int = 1000

    KINDS = ("malformed_row", "missing_video", "undecodable_video", "duplicate_video", "non_finite_logits",
             "partial_decode", "still_image")

    def report(self, kind: str, where: str, message: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown data issue kind {kind!r}")  # a bug in the caller, not bad data
        text = f"{where}: {kind.replace('_', ' ')}: {message}"
        if self.on_error == "fatal":
            raise DataError(text + "  (on_error = \"fatal\"; use \"skip\" to skip and count such problems)")
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.messages) < self.max_messages:
            self.messages.append(text)
        (self.echo or _stderr)(f"skipped: {text}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "no data problems"
        parts = [f"{n} {kind.replace('_', ' ')}{'s' if n != 1 else ''}" for kind, n in sorted(self.counts.items())]
        return "skipped " + ", ".join(parts)

    def to_dict(self) -> Dict[str, object]:
        return {"counts": dict(self.counts), "messages": list(self.messages)}


def _stderr(text: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(text, file=sys.stderr)


@dataclass(frozen=True)
class VideoItem:
    """One video of a split: ``path``, integer ``label``, an id, an optional time range, origin."""

    path: str
    label: int
    video_id: str
    start_s: Optional[float] = None
    end_s: Optional[float] = None
    where: str = ""


@dataclass
class VideoList:
    """The videos of a split, its class names, and where they came from.

    ``files`` are the annotation files read; ``listed`` counts the split's rows (video entries,
    malformed ones included); ``matched`` pairs each listed path found only as a transcoded copy
    with the file used.
    """

    items: List[VideoItem]
    labels: List[str]
    name: str = ""
    files: List[str] = field(default_factory=list)
    listed: Optional[int] = None
    matched: List[Tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)
