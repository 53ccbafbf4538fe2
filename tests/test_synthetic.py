"""The synthetic motion data set: real decodable mp4s, deterministic, classes differ only in motion."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from video3d_zoo.jobs.synthetic import CLASSES, _Scene, iter_videos, make_synthetic, render_video, video_rng


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return make_synthetic(out, videos_per_class=4, seed=3, size=32, frames=8, test_fraction=0.25)


def test_layout_and_split_lists(small_set):
    classes = (small_set / "classes.txt").read_text().split()
    assert tuple(classes) == CLASSES
    train = (small_set / "train.txt").read_text().split()
    test = (small_set / "test.txt").read_text().split()
    assert len(train) == 8 * 3 and len(test) == 8 * 1
    assert not set(train) & set(test)
    for rel in train + test:
        assert rel.split("/")[0] in CLASSES and (small_set / rel).is_file()
    meta = json.loads((small_set / "synthetic.json").read_text())
    assert meta["seed"] == 3 and meta["videos_per_class"] == 4 and meta["classes"] == list(CLASSES)


def test_videos_decode_with_the_package_decoder(small_set):
    from video3d_zoo.io import probe_video, read_frames

    rel = (small_set / "test.txt").read_text().split()[0]
    video = read_frames(small_set / rel)
    assert tuple(video.frames.shape) == (8, 32, 32, 3)
    info = probe_video(small_set / rel)
    assert info.codec == "h264" and info.num_frames == 8
    # the encoded video is close to the rendered frames (x264 at crf 15)
    label, index = rel.split("/")[0], int(rel.rsplit("_", 1)[1].split(".")[0])
    rendered = render_video(label, video_rng(3, CLASSES.index(label), index), 32, 8)
    err = np.abs(video.frames.numpy().astype(np.float64) - rendered).mean()
    assert err < 12, err


def test_deterministic_and_seed_dependent():
    a = render_video("rotate_cw", video_rng(0, 4, 1), 32, 6)
    b = render_video("rotate_cw", video_rng(0, 4, 1), 32, 6)
    c = render_video("rotate_cw", video_rng(1, 4, 1), 32, 6)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 10


def test_motion_directions():
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    assert _Scene(rng(), "move_right", 64, 8).velocity[0] > 0
    assert _Scene(rng(), "move_left", 64, 8).velocity[0] < 0
    assert _Scene(rng(), "move_up", 64, 8).velocity[1] < 0   # image y points down
    assert _Scene(rng(), "move_down", 64, 8).velocity[1] > 0
    assert _Scene(rng(), "rotate_cw", 64, 8).omega > 0
    assert _Scene(rng(), "rotate_ccw", 64, 8).omega < 0
    assert _Scene(rng(), "zoom_in", 64, 8).zoom > 0
    assert _Scene(rng(), "zoom_out", 64, 8).zoom < 0
    # the object really moves: consecutive frames differ, mostly where the object is
    frames = render_video("move_right", rng(), 32, 4).astype(np.float64)
    assert np.abs(np.diff(frames, axis=0)).mean() > 1.0


def _frame_features(frame: np.ndarray) -> np.ndarray:
    f = frame.astype(np.float64) / 255.0
    grad = np.abs(np.diff(f, axis=0)).mean() + np.abs(np.diff(f, axis=1)).mean()
    return np.concatenate([f.mean((0, 1)), f.std((0, 1)), [grad]])


def _nearest_mean_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    x = (x - x.mean(0)) / x.std(0)
    hits = 0
    for i in range(len(y)):  # leave-one-out nearest class mean
        keep = np.arange(len(y)) != i
        means = np.stack([x[keep & (y == c)].mean(0) for c in range(len(CLASSES))])
        hits += int(np.argmin(((means - x[i]) ** 2).sum(1)) == y[i])
    return hits / len(y)


def test_single_frames_do_not_reveal_the_class():
    """Nearest-class-mean on frame statistics is at chance level (8 classes: 12.5 %).

    Two single frames per video: the middle one (where every class draws positions, angles and
    sizes from the same distributions) and one at a random time.  (The *first* frame would show
    smaller objects for zoom in than for zoom out: any monotone zoom does that.)
    """
    pick = np.random.default_rng(0)
    middle, random_t, labels = [], [], []
    for label, _index, frames in iter_videos(videos_per_class=16, seed=11, size=32, frames=8):
        middle.append(_frame_features(frames[len(frames) // 2]))
        random_t.append(_frame_features(frames[pick.integers(len(frames))]))
        labels.append(CLASSES.index(label))
    y = np.asarray(labels)
    # chance 0.125; the binomial standard deviation at n = 128 is 0.03
    bound = 0.125 + 4.5 * math.sqrt(0.125 * 0.875 / len(y))
    for feats in (middle, random_t):
        accuracy = _nearest_mean_accuracy(np.asarray(feats), y)
        assert accuracy < bound, accuracy


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="videos_per_class"):
        make_synthetic(tmp_path, videos_per_class=0)
    with pytest.raises(ValueError, match="even"):
        make_synthetic(tmp_path, videos_per_class=1, size=33)
    with pytest.raises(ValueError, match="classes"):
        make_synthetic(tmp_path, videos_per_class=1, classes=["jump"])
