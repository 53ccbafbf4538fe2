"""Catalogue: a video whose header lies about its length (a 1e13 ms Matroska duration) is
reported and skipped by every path that reads videos - classify, extract, eval and training -
and never makes decoding allocate for the claimed length."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from videos import write_video
from video3d_zoo.cli import commands as cli
from video3d_zoo.models.config import input_preset
from video3d_zoo.train.data import ClipSampling, TrainClips
from video3d_zoo.train.videolist import VideoItem, VideoList

MODEL = "resnet3d_10.synthetic_motion"


def _forge(path, dest):
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89")  # Matroska Duration element
    if data[at + 2] == 0x88:
        data[at + 3:at + 11] = struct.pack(">d", 1e13)
    else:
        data[at + 3:at + 7] = struct.pack(">f", 1e13)
    dest.write_bytes(bytes(data))
    return dest


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lying")
    for cls in ("move_up", "move_down"):
        (root / cls).mkdir()
        for i in range(2):
            write_video(root / cls / f"{cls}_{i}.mp4", 20, 48, 48, 16)
    source = write_video(root / "small.mkv", 8, 48, 48, 16, "mkv").path
    forged = _forge(source, root / "move_up" / "liar.mkv")
    source.unlink()
    assert forged.stat().st_size < 4096
    return root, forged


def test_classify_refuses_the_lying_file(data, capsys):
    _root, forged = data
    assert cli.main(["classify", str(forged), "--model", MODEL]) == 2
    err = capsys.readouterr().err
    assert "corrupt or forged" in err and "Traceback" not in err


def test_extract_reports_it_and_writes_the_others(data, tmp_path, capsys):
    root, _forged = data
    out = tmp_path / "features"
    assert cli.main(["extract", str(root), "-o", str(out), "--model", MODEL, "--quiet"]) == 1
    text = capsys.readouterr()
    assert "liar.mkv" in text.out + text.err and "corrupt or forged" in text.out + text.err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz"))
    assert written == ["move_down/move_down_0.mp4.npz", "move_down/move_down_1.mp4.npz",
                       "move_up/move_up_0.mp4.npz", "move_up/move_up_1.mp4.npz"]


def test_eval_skips_and_counts_it(data, capsys):
    root, forged = data
    code = cli.main(["eval", "--model", MODEL, str(root), "--split", "all", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["num_videos"] == 4 and report["videos"]["skipped"] == 1
    assert "liar.mkv" in json.dumps(report["skipped_videos"])


def test_training_replaces_it_and_reports_it(data):
    root, forged = data
    spec = input_preset("kenshohara2020").replace(crop_size=48, resize=48)
    videos = VideoList([VideoItem(str(forged), 0, "liar"), VideoItem(str(root / "move_up" / "move_up_0.mp4"), 0, "ok")],
                       ["move_up"])
    sample = TrainClips(videos, ClipSampling(spec=spec, resize=48, train_crop="center", hflip=False))[0]
    assert sample["clip"].shape == (3, 16, 48, 48) and np.isfinite(sample["clip"].numpy()).all()
    assert len(sample["errors"]) == 1 and "corrupt or forged" in sample["errors"][0][1]
