"""Clip features and classification on real encoded videos, through the API and the CLI."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import video3d_zoo
from video3d_zoo.cli.commands import main as cli_main
from video3d_zoo.jobs.extract import run_extraction
from video3d_zoo.jobs.extract_plan import parse_shard, plan_jobs
from video3d_zoo.jobs.features import classify_video, extract_features
from video3d_zoo.io import iter_video_clips

from videos import write_video

LABELS = tuple(f"action_{i}" for i in range(5))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = video3d_zoo.create_model("resnet3d_10", num_classes=5, widen_factor=0.125).eval()
    spec = m.config.input_spec.replace(frames=8, crop_size=32, resize=32)
    m.config = m.config.replace(labels=LABELS, input_spec=spec)
    return m


@pytest.fixture(scope="module")
def weights_dir(model, tmp_path_factory):
    return video3d_zoo.save_pretrained(model, tmp_path_factory.mktemp("weights") / "tiny")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    (root / "sub").mkdir()
    return {
        "long": write_video(root / "long.mp4", 30, 64, 48, fps=25).path,
        "short": write_video(root / "short.avi", 5, 48, 64, fps=12, kind="avi").path,
        "exact": write_video(root / "sub" / "exact.mkv", 16, 40, 40, fps=10, kind="mkv").path,
    }


def test_features_match_the_model_on_the_yielded_clips(model, videos):
    result = extract_features(model, videos["long"], batch_size=3)
    clips = list(iter_video_clips(videos["long"], model.config.input_spec))
    assert result.features.shape == (len(clips), model.num_features) == (4, 64)  # 30 frames / 8, last padded
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(torch.stack([c.tensor for c in clips])), pre_logits=True)
    np.testing.assert_allclose(result.features, expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.timestamps[0], [0.0, 8 / 25], atol=1e-6)
    np.testing.assert_allclose(result.timestamps[-1], [24 / 25, 30 / 25], atol=1e-6)
    assert result.model_id == "resnet3d_10" and result.input_spec.crop_size == 32


def test_short_video_gives_one_padded_clip(model, videos):
    result = extract_features(model, videos["short"])
    assert result.features.shape == (1, 64)
    np.testing.assert_allclose(result.timestamps, [[0.0, 5 / 12]], atol=1e-6)


def test_layers(model, videos):
    clips = torch.stack([c.tensor for c in iter_video_clips(videos["exact"], model.config.input_spec)])
    logits = extract_features(model, videos["exact"], layer="logits").features
    stage = extract_features(model, videos["exact"], layer="layer3").features
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(clips).numpy(), rtol=1e-5, atol=1e-5)
        x = model.layer3(model.layer2(model.layer1(model.forward_stem(clips))))
    np.testing.assert_allclose(stage, x.mean(dim=(2, 3, 4)).numpy(), rtol=1e-5, atol=1e-5)
    assert stage.shape == (2, 32)
    with pytest.raises(ValueError, match="layer must be one of"):
        extract_features(model, videos["exact"], layer="layer9")


def test_the_model_input_spec_drives_preprocessing(model, videos):
    old = model.config
    try:
        model.config = old.replace(input_spec=video3d_zoo.INPUT_PRESETS["kenshohara2017"].replace(
            frames=8, crop_size=32, resize=32))
        clip = next(iter_video_clips(videos["exact"], model.config.input_spec)).tensor
        assert clip.max() > 20  # 0-255 minus the ActivityNet mean
        a = extract_features(model, videos["exact"]).features
    finally:
        model.config = old
    b = extract_features(model, videos["exact"]).features
    assert not np.allclose(a, b)


def test_classify_averages_clip_softmax(model, videos):
    prediction = classify_video(model, videos["long"], topk=3)
    logits = extract_features(model, videos["long"], layer="logits").features
    probs = torch.softmax(torch.from_numpy(logits), 1).mean(0).numpy()
    np.testing.assert_allclose(prediction.scores, probs, rtol=1e-6)
    assert prediction.top[0] == (LABELS[int(probs.argmax())], pytest.approx(float(probs.max())))
    assert len(prediction.top) == 3 and prediction.num_clips == 4


def test_cli_extract_equals_api_and_resumes(model, weights_dir, videos, tmp_path, capsys):
    out = tmp_path / "feats"
    root = videos["long"].parent
    assert cli_main(["extract", str(root), "--weights", str(weights_dir), "-o", str(out), "--quiet",
                     "--batch-size", "5"]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz"))
    assert files == ["long.mp4.npz", "short.avi.npz", "sub/exact.mkv.npz"]
    saved = np.load(out / "long.mp4.npz")
    api = extract_features(model, videos["long"])
    np.testing.assert_allclose(saved["features"], api.features, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(saved["timestamps"], api.timestamps)
    assert str(saved["model"]) == "resnet3d_10" and '"crop_size": 32' in str(saved["input_spec"])
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    capsys.readouterr()
    assert cli_main(["extract", str(root), "--weights", str(weights_dir), "-o", str(out), "--quiet"]) == 0
    assert "0 extracted (0 new, 0 recomputed), 3 up to date (skipped)" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    assert cli_main(["extract", str(videos["short"]), "--weights", str(weights_dir), "-o", str(out),
                     "--quiet", "--overwrite"]) == 0
    assert (out / "short.avi.npz").stat().st_mtime_ns != before[out / "short.avi.npz"]


def test_bad_inputs_are_reported_and_skipped(model, videos, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "notes.mp4").write_text("this is not a video")
    good = write_video(bad / "good.mp4", 12, 32, 32).path
    data = good.read_bytes()
    (bad / "truncated.mp4").write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    (out).mkdir()
    (out / "keep.npz").write_bytes(b"user file")
    summary = run_extraction(model, [bad, tmp_path / "missing.mp4"], out, progress=False)
    assert [p.name for p in summary.processed] == ["good.mp4"]
    assert {p.name for p in summary.failed} >= {"empty.mp4", "notes.mp4", "missing.mp4"}
    assert all(str(p) in reason or p.name in reason for p, reason in summary.failed.items())
    assert (out / "keep.npz").read_bytes() == b"user file"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary files left"
    assert cli_main(["extract", str(bad), "--model", "resnet3d_10", "--weights", "x", "-o", str(out)]) == 2


def test_shards_cover_every_video_exactly_once(videos, tmp_path, monkeypatch):
    inputs = [videos["long"].parent]
    everything = {j.source for j in plan_jobs(inputs, tmp_path)}
    parts = [{j.source for j in plan_jobs(inputs, tmp_path, shard=(i, 2))} for i in range(2)]
    assert parts[0] | parts[1] == everything and not parts[0] & parts[1]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert {j.source for j in plan_jobs(inputs, tmp_path)} == parts[1]
    with pytest.raises(ValueError, match="0 <= i < n"):
        parse_shard("2/2")
    with pytest.raises(ValueError, match="i/n"):
        parse_shard("half")


def test_workers_and_list_file_give_the_same_results(model, videos, tmp_path):
    listing = tmp_path / "videos.txt"
    listing.write_text("\n".join(os.path.relpath(p, tmp_path) for p in videos.values()) + "\n")
    a = run_extraction(model, [listing], tmp_path / "a", progress=False, batch_size=3)
    b = run_extraction(model, list(videos.values()), tmp_path / "b", progress=False, workers=2, batch_size=4)
    assert a.ok and b.ok and len(a.processed) == 3
    for name in ("long.mp4.npz", "short.avi.npz", "exact.mkv.npz"):
        np.testing.assert_allclose(np.load(tmp_path / "a" / name)["features"],
                                   np.load(tmp_path / "b" / name)["features"], rtol=1e-5, atol=1e-6)


def test_cli_classify(weights_dir, videos, capsys):
    assert cli_main(["classify", str(videos["long"]), "--weights", str(weights_dir), "--topk", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 clips" in out and sum(label in out for label in LABELS) == 2


def test_cli_fast_path_gives_the_same_prediction(weights_dir, videos, capsys):
    assert cli_main(["classify", str(videos["long"]), "--weights", str(weights_dir), "--json"]) == 0
    plain = capsys.readouterr().out
    assert cli_main(["classify", str(videos["long"]), "--weights", str(weights_dir), "--json", "--fast"]) == 0
    fast = capsys.readouterr().out
    import json

    a, b = json.loads(plain)["top"], json.loads(fast)["top"]
    assert [x["label"] for x in a] == [x["label"] for x in b]
    assert all(abs(x["score"] - y["score"]) < 1e-4 for x, y in zip(a, b))
