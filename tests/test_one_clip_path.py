"""One preprocessing path: evaluation, extraction and classification feed a model the same clips.

The video is textured and not 4:3 (16:9 and portrait), so a different resize rule (short side vs
exact size), crop offset or value range would show up as different tensors.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

import video3d_zoo
from video3d_zoo.models.config import INPUT_PRESETS
from video3d_zoo.jobs.features import classify_video, extract_features
from video3d_zoo.io import ClipProtocol, video_clips
from video3d_zoo.train.data import ClipSampling
from video3d_zoo.train.videolist import VideoItem, VideoList
from video3d_zoo.train.evaluate import predict_videos


def _textured_video(path, width, height, frames=37, fps=25):
    rng = np.random.default_rng(width * height)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "10"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            base = np.stack([(xx * 3 + i * 7) % 256, (yy * 5 + i * 3) % 256, (xx * yy + i) % 256], -1)
            noise = rng.integers(0, 40, size=base.shape)
            image = np.clip(base + noise, 0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module", params=[(192, 108), (90, 160)], ids=["16x9", "portrait"])
def video(request, tmp_path_factory):
    width, height = request.param
    return _textured_video(tmp_path_factory.mktemp("clip_path") / f"v_{width}x{height}.mp4", width, height)


class _Recorder(torch.nn.Module):
    """A tiny model that keeps every batch it is fed."""

    def __init__(self, preset: str):
        super().__init__()
        torch.manual_seed(0)
        self.net = video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=4).eval()
        self.config = self.net.config.replace(input_spec=INPUT_PRESETS[preset])
        self.feature_info = self.net.feature_info
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.net(x)

    def forward_features(self, x):
        self.seen.append(x.detach().clone())
        return self.net.forward_features(x)

    def forward_head(self, x, pre_logits=False):
        return self.net.forward_head(x, pre_logits=pre_logits)


def _fed(model) -> torch.Tensor:
    batch = torch.cat(model.seen)
    model.seen.clear()
    return batch


@pytest.mark.parametrize("preset", sorted(INPUT_PRESETS))
def test_eval_extract_and_classify_feed_identical_clips(video, preset):
    model = _Recorder(preset)
    spec = model.config.input_spec
    videos = VideoList([VideoItem(str(video), 0, "v")], ["a", "b", "c", "d"])
    result = predict_videos(model, videos, ClipSampling(spec=spec, resize=112), batch_size=4)
    eval_batch = _fed(model)
    features = extract_features(model, video, layer="logits", batch_size=3)
    extract_batch = _fed(model)
    prediction = classify_video(model, video, topk=4, batch_size=5)
    classify_batch = _fed(model)
    expected, _, report = video_clips(video, spec, ClipProtocol())
    assert report.complete and report.frames == 37
    assert eval_batch.shape == (3, 3, 16, spec.crop_size, spec.crop_size)
    torch.testing.assert_close(eval_batch, expected, rtol=0, atol=0)
    torch.testing.assert_close(extract_batch, expected, rtol=0, atol=0)
    torch.testing.assert_close(classify_batch, expected, rtol=0, atol=0)
    # ... and so the per-video scores agree: eval's video probabilities are classify's.
    np.testing.assert_allclose(result.video_probs[0], prediction.scores, rtol=1e-6, atol=1e-7)
    logits = torch.from_numpy(features.features)
    np.testing.assert_allclose(logits.softmax(1).mean(0).numpy(), prediction.scores, rtol=1e-6, atol=1e-7)


def test_torchvision_preset_resizes_exactly_not_by_short_side(video):
    """The bug this path removed: eval resized torchvision clips to short side 128, extract to 128x171."""
    spec = INPUT_PRESETS["torchvision"]
    exact, _, _ = video_clips(video, spec)
    short_side, _, _ = video_clips(video, spec, resize=128)
    assert not torch.equal(exact, short_side)
