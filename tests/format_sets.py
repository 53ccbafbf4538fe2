"""One small synthetic data set written in every published format the readers take.

:func:`write_format_sets` lays the synthetic motion videos (``root/<class>/<video>.mp4`` with
``train.txt`` / ``test.txt``) out again as Kinetics, UCF-101, HMDB-51, ActivityNet v1.3, Moments
in Time and STAIR Actions (links to the same files) and returns, per format, the ``[data]``
settings that read it.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Dict, List, Tuple


def _split(root: Path) -> Dict[str, List[Tuple[str, Path]]]:
    out = {}
    for subset, name in (("train", "train.txt"), ("val", "test.txt")):
        rows = [line.split()[0] for line in (root / name).read_text().splitlines() if line.strip()]
        out[subset] = [(rel.split("/")[0], root / rel) for rel in rows]
    return out


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(src.resolve(), dst)


def _classes(split) -> List[str]:
    return sorted({cls for rows in split.values() for cls, _ in rows})


def kinetics(split, out: Path) -> Dict[str, str]:
    for subset, csv_name in (("train", "train.csv"), ("val", "validate.csv")):
        with open(out / "ann" / csv_name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            for cls, path in split[subset]:
                w.writerow([cls, path.stem, 0, 1, subset])
                _link(path, out / "videos" / f"{path.stem}_000000_000001.mp4")
    return {"format": "kinetics", "root": str(out / "videos"), "annotations": str(out / "ann" / "train.csv"),
            "val_annotations": str(out / "ann" / "validate.csv")}


def ucf101(split, out: Path) -> Dict[str, str]:
    classes = _classes(split)
    (out / "ann" / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)))
    for subset, name in (("train", "trainlist01.txt"), ("val", "testlist01.txt")):
        lines = []
        for cls, path in split[subset]:
            _link(path, out / "videos" / cls / path.name)
            lines.append(f"{cls}/{path.stem}.avi {classes.index(cls) + 1}" if subset == "train" else
                         f"{cls}/{path.stem}.avi")  # listed as .avi, found as the .mp4 copy
        (out / "ann" / name).write_text("\n".join(lines) + "\n")
    return {"format": "ucf101", "root": str(out / "videos"), "annotations": str(out / "ann")}


def hmdb51(split, out: Path) -> Dict[str, str]:
    for cls in _classes(split):
        rows = [f"{p.name} {1 if subset == 'train' else 2}" for subset in ("train", "val") for c, p in split[subset]
                if c == cls]
        (out / "ann" / f"{cls}_test_split1.txt").write_text("\n".join(rows) + "\n")
    for subset in split:
        for cls, path in split[subset]:
            _link(path, out / "videos" / cls / path.name)
    return {"format": "hmdb51", "root": str(out / "videos"), "annotations": str(out / "ann")}


def activitynet(split, out: Path) -> Dict[str, str]:
    classes = _classes(split)
    taxonomy = [{"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None},
                {"nodeId": 1, "nodeName": "Motion", "parentId": 0, "parentName": "Root"}]
    taxonomy += [{"nodeId": 10 + i, "nodeName": c, "parentId": 1, "parentName": "Motion"} for i, c in enumerate(classes)]
    database = {}
    for subset, name in (("train", "training"), ("val", "validation")):
        for cls, path in split[subset]:
            _link(path, out / "videos" / f"v_{path.stem}.mp4")
            database[path.stem] = {"subset": name, "duration": 0.5, "fps": 16.0, "url": "",
                                   "annotations": [{"segment": [0.0, 0.5], "label": cls}]}
    ann = out / "ann" / "activity_net.v1-3.min.json"
    ann.write_text(json.dumps({"version": "VERSION 1.3", "taxonomy": taxonomy, "database": database}, indent=1))
    return {"format": "activitynet", "root": str(out / "videos"), "annotations": str(ann)}


def moments(split, out: Path) -> Dict[str, str]:
    classes = _classes(split)
    (out / "ann" / "moments_categories.txt").write_text("".join(f"{c},{i}\n" for i, c in enumerate(classes)))
    for subset, csv_name, folder in (("train", "trainingSet.csv", "training"), ("val", "validationSet.csv", "validation")):
        lines = []
        for cls, path in split[subset]:
            _link(path, out / "videos" / folder / cls / path.name)
            lines.append(f"{cls}/{path.name},{cls},3,0")
        (out / "ann" / csv_name).write_text("\n".join(lines) + "\n")
    return {"format": "moments", "root": str(out / "videos"), "annotations": str(out / "ann")}


def stair(split, out: Path) -> Dict[str, str]:
    classes = _classes(split)
    rows = "".join(f"{3 * i + 1},{c},x\n" for i, c in enumerate(classes))  # numbers with gaps, as published
    (out / "ann" / "actionlist.csv").write_text("directory,aid,japanese category\n" + rows)
    for subset in ("train", "val"):
        lines = []
        for cls, path in split[subset]:
            _link(path, out / "videos" / cls / path.name)
            lines.append(f"{cls}/{path.name} {classes.index(cls) + 1}")
        (out / "ann" / f"videolist_{subset}.txt").write_text("\n".join(lines) + "\n")
    return {"format": "stair", "root": str(out / "videos"), "annotations": str(out / "ann")}


WRITERS = {"kinetics": kinetics, "ucf101": ucf101, "hmdb51": hmdb51, "activitynet": activitynet,
           "moments": moments, "stair": stair}


def write_format_sets(synthetic_root: Path, out: Path) -> Dict[str, Dict[str, str]]:
    """``{format: data settings}`` for every format, each under ``out/<format>``."""
    split = _split(Path(synthetic_root))
    sets = {}
    for name, writer in WRITERS.items():
        (out / name / "ann").mkdir(parents=True, exist_ok=True)
        sets[name] = writer(split, out / name)
    return sets
