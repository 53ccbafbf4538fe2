"""ActivityNet v1.3, Moments in Time, STAIR Actions and merged sets: readers, problems with file and
line, class orders, and the same formats in ``eval``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from format_sets import write_format_sets

from video3d_zoo.cli.argtypes import DATA_FORMATS, EVAL_FORMATS, TRAIN_FORMATS
from video3d_zoo.train import DataError, DataIssues, load_config
from video3d_zoo.train.config_schema import CHOICES
from video3d_zoo.train.eval_splits import SplitRequest, read_eval_split
from video3d_zoo.train.readers_more import read_activitynet, read_moments, read_stair
from video3d_zoo.train.splits import read_split

CLASSES = ["zoom_in", "move_left", "rotate_cw"]


@pytest.fixture()
def sets(tmp_path):
    """Three classes x (2 train + 1 val) empty "videos" (the readers only stat them), in every format."""
    root = tmp_path / "synthetic"
    lists = {"train.txt": [], "test.txt": []}
    for cls in CLASSES:
        for i in range(3):
            (root / cls).mkdir(parents=True, exist_ok=True)
            (root / cls / f"{cls}_{i}.mp4").write_bytes(b"")
            lists["train.txt" if i < 2 else "test.txt"].append(f"{cls}/{cls}_{i}.mp4")
    for name, rows in lists.items():
        (root / name).write_text("\n".join(rows) + "\n")
    return write_format_sets(root, tmp_path / "sets")


def quiet(on_error="skip"):
    return DataIssues(on_error, echo=lambda _text: None)


def section(data):
    return load_config({"data": data}).data


@pytest.mark.parametrize("fmt", ["activitynet", "moments", "stair", "kinetics", "ucf101", "hmdb51"])
def test_each_format_reads_both_splits(sets, fmt):
    train = read_split(section(sets[fmt]), "train", quiet())
    val = read_split(section(sets[fmt]), "val", quiet(), labels=train.labels)
    assert (len(train), len(val)) == (6, 3)
    assert sorted(train.labels) == sorted(CLASSES)
    assert all(Path(item.path).is_file() for item in train.items + val.items)
    assert all(train.labels[item.label] in item.path for item in train.items)


def test_activitynet_leaves_segments_and_problems(sets):
    ann = Path(sets["activitynet"]["annotations"])
    data = json.loads(ann.read_text())
    data["taxonomy"].reverse()  # classes follow taxonomy order, not the alphabet
    key = next(iter(data["database"]))
    data["database"][key]["annotations"].append({"segment": [0.4, 0.1], "label": CLASSES[0]})
    data["database"][key]["annotations"].append({"segment": [0.0, 0.2], "label": "Motion"})  # not a leaf
    data["database"]["gone"] = {"subset": "training", "annotations": [{"segment": [0, 1], "label": CLASSES[1]}]}
    data["database"]["badfps"] = {"subset": "training", "fps": 0, "annotations": [{"segment": [0, 1],
                                                                                     "label": CLASSES[1]}]}
    ann.write_text(json.dumps(data, indent=1))
    issues = quiet()
    videos = read_activitynet(ann, sets["activitynet"]["root"], "train", issues)
    assert videos.labels == [n["nodeName"] for n in data["taxonomy"] if n["nodeName"] in CLASSES]
    assert len(videos) == 6 and all((i.start_s, i.end_s) == (0.0, 0.5) for i in videos.items)
    assert issues.counts == {"malformed_row": 3, "missing_video": 1}
    lines = ann.read_text().splitlines()
    key_line = next(n for n, text in enumerate(lines, 1) if text.strip().startswith(f'"{key}"'))
    assert any(f"{ann}:{key_line}:" in m and "segment" in m for m in issues.messages)
    assert any("gone" in m and "missing video" in m for m in issues.messages)
    with pytest.raises(DataError, match=r"json:\d+: malformed row"):
        read_activitynet(ann, sets["activitynet"]["root"], "train", quiet("fatal"))


def test_moments_rows_and_categories(sets):
    ann = Path(sets["moments"]["annotations"])
    csv_file = ann / "trainingSet.csv"
    csv_file.write_text(csv_file.read_text() + "jumping/x.mp4,jumping,3,0\nzoom_in/nope.mp4,zoom_in,3,0\n")
    issues = quiet()
    videos = read_moments(ann, sets["moments"]["root"], "train", issues)
    assert len(videos) == 6 and videos.labels == sorted(CLASSES)
    assert issues.counts == {"malformed_row": 1, "missing_video": 1}
    assert any(f"{csv_file}:7: malformed row" in m for m in issues.messages)
    assert any(f"{csv_file}:8: missing video" in m for m in issues.messages)
    (ann / "moments_categories.txt").write_text("a,0\nb,2\n")
    with pytest.raises(DataError, match="moments_categories.txt:2: expected '<name>,1'"):
        read_moments(ann, sets["moments"]["root"], "train", quiet())


def test_stair_list_numbers_are_actionlist_positions(sets):
    ann = Path(sets["stair"]["annotations"])
    listing = ann / "videolist_train.txt"
    first = listing.read_text().splitlines()[0]
    listing.write_text(listing.read_text() + first.rsplit(" ", 1)[0] + " 99\n" + "zoom_in/none.mp4 3\n")
    issues = quiet()
    videos = read_stair(ann, sets["stair"]["root"], "train", issues)
    assert videos.labels == sorted(CLASSES)  # actionlist.csv order
    assert len(videos) == 6 and issues.counts == {"malformed_row": 1, "missing_video": 1}
    assert any(f"{listing}:7: malformed row" in m for m in issues.messages)
    (ann / "actionlist.csv").write_text("directory,aid,japanese category\n1,a,x\n2,a,y\n")
    with pytest.raises(DataError, match="listed twice"):
        read_stair(ann, sets["stair"]["root"], "train", quiet())


def test_merged_sets_concatenate_classes_in_merge_order(sets):
    parts = {name: {k: v for k, v in sets[name].items() if k != "format"} for name in ("kinetics", "moments", "stair")}
    data = section({"format": "merged", "merge": ["kinetics", "moments", "stair"], "parts": parts})
    train = read_split(data, "train", quiet())
    k = read_split(section(sets["kinetics"]), "train", quiet())
    assert len(train.labels) == 9 and len(train) == 18
    assert train.labels[:3] == [f"kinetics:{c}" for c in k.labels]  # shared names are kept apart
    assert train.labels[3:6] == [f"moments:{c}" for c in sorted(CLASSES)]
    assert {train.labels[i.label].split(":")[0] for i in train.items[6:12]} == {"moments"}
    val = read_split(data, "val", quiet(), labels=train.labels)
    assert len(val) == 9
    with pytest.raises(Exception, match="data.parts"):
        section({"format": "merged", "merge": ["kinetics", "moments"], "parts": {"kinetics": parts["kinetics"]}})
    with pytest.raises(Exception, match="data.merge"):
        section({"format": "merged", "merge": ["kinetics"], "parts": {"kinetics": parts["kinetics"]}})


@pytest.mark.parametrize("fmt", ["activitynet", "moments", "stair"])
def test_eval_reads_the_same_formats(sets, fmt):
    spec = sets[fmt]
    videos, info = read_eval_split(spec["root"], SplitRequest(fmt, spec["annotations"]), quiet())
    assert len(videos) == 3 and info["split"] == "val" and info["labels_source"]
    with pytest.raises(DataError, match="--split must be train or val"):
        read_eval_split(spec["root"], SplitRequest(fmt, spec["annotations"], split="test"), quiet())


def test_data_formats_are_defined_once():
    assert CHOICES["data.format"] == TRAIN_FORMATS
    assert set(TRAIN_FORMATS) | set(EVAL_FORMATS) == set(DATA_FORMATS)
    assert {"activitynet", "moments", "stair"} <= set(TRAIN_FORMATS) & set(EVAL_FORMATS)
    assert "merged" in TRAIN_FORMATS and "list" in EVAL_FORMATS
