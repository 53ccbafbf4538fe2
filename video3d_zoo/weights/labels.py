"""Class-name lists shipped with the package (``video3d_zoo/data/labels/*.txt``).

One class a line, in the order of the output units of the heads they belong to.  A manifest entry
names one of these sets (``"labels": "kinetics400"``) instead of repeating hundreds of strings; the
manifest parser resolves the name to the list and checks its length against ``num_classes``.

Where each list comes from, and what was checked, is recorded in every manifest entry's
``labels_source`` (and summarised in :data:`LABEL_SETS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Dict, Tuple


@dataclass(frozen=True)
class LabelSet:
    """A packaged class list: its name (file stem), class count and provenance in one line."""

    name: str
    dataset: str
    num_classes: int
    source: str


LABEL_SETS: Dict[str, LabelSet] = {s.name: s for s in (
    LabelSet("kinetics400", "Kinetics-400", 400,
             "alphabetical; class_names_list of kenshohara/video-classification-3d-cnn-pytorch (the 2017 "
             "release's companion), identical line for line to torchvision 0.29.1 _KINETICS400_CATEGORIES"),
    LabelSet("kinetics700", "Kinetics-700", 700,
             "alphabetical; GluonCV 0.10.5 kinetics700 class list spelled back from its underscored form "
             "(one source only)"),
    LabelSet("ucf101", "UCF-101", 101, "classInd.txt order; GluonCV 0.10.5 ucf101 class list"),
    LabelSet("hmdb51", "HMDB-51", 51, "alphabetical; GluonCV 0.10.5 hmdb51 class list"),
)}


def label_set_names() -> Tuple[str, ...]:
    return tuple(sorted(LABEL_SETS))


@lru_cache(maxsize=None)
def load_label_set(name: str) -> Tuple[str, ...]:
    """The class names of packaged set ``name`` (``KeyError`` for an unknown name)."""
    if name not in LABEL_SETS:
        raise KeyError(f"unknown label set {name!r}; known: {list(label_set_names())}")
    text = (files("video3d_zoo") / "data" / "labels" / f"{name}.txt").read_text(encoding="utf-8")
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    expected = LABEL_SETS[name].num_classes
    if len(labels) != expected or len(set(labels)) != len(labels):
        raise ValueError(f"packaged label set {name!r} is damaged: {len(labels)} names "
                         f"({len(set(labels))} distinct), expected {expected}; reinstall video3d-zoo")
    return labels


__all__ = ["LABEL_SETS", "LabelSet", "label_set_names", "load_label_set"]
