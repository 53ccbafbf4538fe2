"""Model cards tell the truth: how the weights were made, the class names, a usage line that works."""

from __future__ import annotations

import json

import pytest
import torch

import video3d_zoo
from video3d_zoo.weights.manifest import dumps
from video3d_zoo.weights.publish import publish_folder
from video3d_zoo.weights.loading import save_pretrained

LABELS = ("left", "right", "zoom")


@pytest.fixture
def empty_manifest(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text(dumps({"schema_version": 1, "entries": []}), encoding="utf-8")
    return path


def _trained_export(tmp_path):
    """A folder as a training run's export leaves it: weights with labels, and metrics.json."""
    torch.manual_seed(0)
    model = video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=3)
    folder = save_pretrained(model, tmp_path / "export", model.config.replace(labels=LABELS, tag="mine_16f"))
    metrics = {"evaluated_on": "test (12 videos, every non-overlapping 16-frame clip, centre crop 112)",
               "video_top1": 0.75, "video_top5": 1.0, "clip_top1": 0.7, "epochs": 3, "global_steps": 9,
               "weights": "last", "best": None, "train_time_s": 10.0, "processes": 1, "train_videos": 36,
               "data_issues": {}, "config": {"source": "synthetic_r3d", "data": {"format": "synthetic",
                                                                                   "root": "runs/data/s0"},
                                                         "model": {"name": "resnet3d_10", "pretrained": None}}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_card_of_a_self_trained_export(tmp_path, empty_manifest):
    folder = _trained_export(tmp_path)
    entry = publish_folder(folder, "org/mine", dry_run=True, manifest=empty_manifest, card_dir=folder)
    card = (folder / "README.md").read_text()
    assert "numerically identical" not in card and "Converted from" not in card
    assert "Trained with video3d_zoo" in card and "synthetic_r3d" in card and "36 training videos" in card
    assert "| video_top1 | 0.7500 |" in card and "test (12 videos" in card
    assert "3: `left`, `right`, `zoom`" in card and "unknown" not in card.split("## Accuracy")[0]
    assert 'video3d_zoo.load_model("hf-hub:org/mine")' in card and "--model hf-hub:org/mine" in card
    assert "create_model(" not in card, "not in the manifest: no name to create it by"
    assert "Kinetics weights" not in card, "the architecture's description, not claims about other weights"
    assert "trained from scratch" in card
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["config"]["model"]["pretrained"] = "synthetic_motion"
    (folder / "metrics.json").write_text(json.dumps(metrics))
    publish_folder(folder, "org/mine", dry_run=True, manifest=empty_manifest, card_dir=folder)
    card = (folder / "README.md").read_text()
    assert "fine-tuned from the `synthetic_motion` weights of `resnet3d_10`" in card and "scratch" not in card
    # the printed entry carries the run's numbers (percent), with the protocol metrics.json states
    video = {(a["level"], a["metric"]): a for a in entry["accuracy"]}
    assert video["video", "top1"]["value"] == 75.0 and video["clip", "top1"]["value"] == 70.0
    assert video["video", "top1"]["split"].startswith("test (12 videos") and ("clip", "top5") not in video
    assert "| synthetic data at runs/data/s0 | test (12 videos" in card


def test_card_of_a_converted_original(tmp_path):
    model = video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=7)
    folder = save_pretrained(model, tmp_path / "converted")
    entry = {"model": "resnet3d_10", "tag": "tiny_16f", "default": True, "arch_kwargs": {"widen_factor": 0.125},
             "dataset": {"name": "Tiny-7", "pretrained_on": None}, "num_classes": 7, "labels": None,
             "labels_source": "no verified list", "input_spec": model.config.input_spec.to_dict(),
             "accuracy": [], "params": sum(p.numel() for p in model.parameters()), "gmacs": 0.1,
             "upstream": {"release": "kenshohara2020", "file": "r3d10_tiny.pth", "url": None, "sha256": None,
                          "layout": "kenshohara2020"}, "license": "MIT", "hub": None}
    manifest = tmp_path / "m.json"
    manifest.write_text(dumps({"schema_version": 1, "entries": [entry]}), encoding="utf-8")
    publish_folder(folder, "org/tiny", tag="tiny_16f", dry_run=True, manifest=manifest, card_dir=folder)
    card = (folder / "README.md").read_text()
    assert "Converted from `r3d10_tiny.pth`" in card and "numerically identical" in card
    assert "| classes | 7 (Tiny-7) |" in card
    assert 'load_model("hf-hub:org/tiny")' in card and "create_model('resnet3d_10', pretrained='tiny_16f')" in card
