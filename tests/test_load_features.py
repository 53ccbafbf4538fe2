"""A feature folder loads back: per-video features, clip times, the video's metadata, a stacked form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import video3d_zoo
from video3d_zoo.errors import DataError
from video3d_zoo.jobs.extract import run_extraction

from videos import write_video


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = video3d_zoo.create_model("resnet3d_10", num_classes=3, widen_factor=0.125).eval()
    m.config = m.config.replace(input_spec=m.config.input_spec.replace(frames=8, crop_size=32, resize=32))
    return m


@pytest.fixture(scope="module")
def extracted(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    (root / "b").mkdir()
    write_video(root / "a.mp4", 20, 64, 48, fps=20)
    write_video(root / "b" / "portrait.mp4", 9, 64, 48, fps=12, rotation=90)
    out = tmp_path_factory.mktemp("features")
    summary = run_extraction(model, [root], out, progress=False, batch_size=4)
    assert summary.ok
    return out


def test_the_folder_loads_with_features_times_and_provenance(extracted, model):
    features = video3d_zoo.load_features(extracted)
    assert [v.name for v in features] == ["a.mp4", "b/portrait.mp4"] and not features.skipped
    a, portrait = features
    assert a.features.shape == (3, model.num_features) and a.timestamps.shape == (3, 2)  # 20 frames / 8
    np.testing.assert_allclose(a.timestamps[0], [0.0, 8 / 20], atol=1e-6)
    assert a.provenance["model"] == "resnet3d_10" and a.provenance["layer"] == "pooled"
    assert a.provenance["clip_protocol"]["clip_len"] == 8 and a.video.endswith("a.mp4")
    # the video as a player shows it: size, frame rate, frames, rotation
    assert {k: a.info[k] for k in ("width", "height", "num_frames", "rotation")} == \
        {"width": 64, "height": 48, "num_frames": 20, "rotation": 0}
    assert a.info["fps"] == pytest.approx(20.0)
    assert (portrait.info["width"], portrait.info["height"], portrait.info["rotation"]) == (48, 64, 90)
    assert portrait.info["num_frames"] == 9 and portrait.info["fps"] == pytest.approx(12.0)
    assert repr(features) == f"FeatureSet({str(extracted)!r}: 2 videos, 5 clips)"


def test_stack_gives_one_row_per_clip_with_its_video_and_times(extracted):
    features = video3d_zoo.load_features(extracted)
    X, video_index, times, names = features.stack()
    assert X.shape == (5, features[0].features.shape[1]) and X.dtype == np.float32
    assert video_index.tolist() == [0, 0, 0, 1, 1] and names == ("a.mp4", "b/portrait.mp4")
    np.testing.assert_array_equal(X[3:], features[1].features)
    np.testing.assert_array_equal(times[:3], features[0].timestamps)
    pooled, pooled_names = features.mean()
    np.testing.assert_allclose(pooled[1], features[1].features.mean(axis=0), rtol=1e-6)
    assert pooled.shape == (2, X.shape[1]) and pooled_names == names


def test_bad_files_are_reported_not_a_traceback(extracted, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.mp4.npz").write_bytes((extracted / "a.mp4.npz").read_bytes())
    (folder / "corrupt.npz").write_bytes((extracted / "a.mp4.npz").read_bytes()[:200])
    np.savez(folder / "foreign.npz", weights=np.ones(3))
    features = video3d_zoo.load_features(folder)
    assert [v.name for v in features] == ["a.mp4"]
    assert set(p.name for p in features.skipped) == {"corrupt.npz", "foreign.npz"}
    assert "not a video3d_zoo feature file (no features / timestamps; it holds weights)" in \
        features.skipped[folder / "foreign.npz"]
    assert "unreadable feature file" in features.skipped[folder / "corrupt.npz"]
    assert "2 files skipped" in repr(features)
    with pytest.raises(DataError, match="corrupt.npz: unreadable"):
        video3d_zoo.load_features(folder, strict=True)
    with pytest.raises(DataError, match="no such folder"):
        video3d_zoo.load_features(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .npz feature files"):
        video3d_zoo.load_features(tmp_path / "empty")


def test_stacking_features_of_two_models_is_refused(extracted, tmp_path):
    folder = tmp_path / "two_runs"
    folder.mkdir()
    (folder / "a.mp4.npz").write_bytes((extracted / "a.mp4.npz").read_bytes())
    with np.load(extracted / "b" / "portrait.mp4.npz") as data:
        other = {k: data[k] for k in data.files}
    other["layer"] = np.asarray("layer4")
    np.savez(folder / "other.npz", **other)
    features = video3d_zoo.load_features(folder)
    assert len(features) == 2
    with pytest.raises(DataError, match="different models / layers"):
        features.stack()
    assert video3d_zoo.load_features(folder / "other.npz")[0].provenance["layer"] == "layer4"  # one file
