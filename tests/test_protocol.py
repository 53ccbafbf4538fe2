"""The clip protocol (io/protocol.py): temporal sampling, spatial crops, decode reports, bad files."""

from __future__ import annotations

import json
import struct

import av
import numpy as np
import pytest
import torch

from videos import write_video
from video3d_zoo.models.config import input_preset
from video3d_zoo.errors import ConfigError, VideoDecodeError
from video3d_zoo.io import ClipPreprocessor, ClipProtocol, crop_at, iter_video_clips, read_frames, video_clips


def _red_ids(tensor: torch.Tensor, spec) -> list:
    """Frame indices written by tests/videos.py, recovered from a preprocessed C x T x H x W clip."""
    red = tensor[0].mean(dim=(1, 2)) * spec.std[0] / (spec.value_scale / 255.0) + spec.mean[0] / (spec.value_scale / 255.0)
    return [round((v - 8) / 16) % 16 for v in red.tolist()]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    return {"long": write_video(root / "long.mp4", 45, 96, 54, 25),
            "mkv": write_video(root / "small.mkv", 8, 32, 24, 25, "mkv"),
            "fast": write_video(root / "fast.mp4", 60, 64, 48, 25, faststart=True)}


def test_num_clips_are_evenly_spaced(videos):
    spec = input_preset("kenshohara2020")
    _, clips, report = video_clips(videos["long"].path, spec, ClipProtocol(num_clips=3))
    assert [int(c.frame_indices[0]) for c in clips] == [0, 14, 29]  # round(linspace(0, 45 - 16, 3))
    assert all(len(c.frame_indices) == 16 for c in clips) and report.complete
    _, one, _ = video_clips(videos["mkv"].path, spec, ClipProtocol(num_clips=5))
    assert len(one) == 1 and one[0].frame_indices.tolist() == [i % 8 for i in range(16)]


def test_three_crops_cover_both_ends_of_the_long_side(videos):
    spec = input_preset("kenshohara2020").replace(resize=60, crop_size=48)
    _, clips, _ = video_clips(videos["long"].path, spec, ClipProtocol(spatial_crops=3))
    assert [c.crop for c in clips[:3]] == ["start", "center", "end"] and len(clips) == 9
    frames = read_frames(videos["long"].path, short_side=60).frames[:16]
    prep = ClipPreprocessor(spec)
    for clip in clips[:3]:
        torch.testing.assert_close(clip.tensor, prep(frames, position=clip.crop), rtol=0, atol=0)
    assert crop_at(frames, 48, "start").shape == crop_at(frames, 48, "end").shape == (16, 48, 48, 3)
    assert not torch.equal(crop_at(frames, 48, "start"), crop_at(frames, 48, "end"))


def test_temporal_stride_keeps_every_kth_frame(videos):
    spec = input_preset("kenshohara2020")
    _, clips, _ = video_clips(videos["long"].path, spec, ClipProtocol(clip_len=8, temporal_stride=2))
    assert _red_ids(clips[0].tensor, spec) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert clips[0].end_s == pytest.approx(16 / 25)


@pytest.mark.parametrize("kwargs,match", [
    ({"spatial_crops": 2}, "spatial_crops"), ({"num_clips": -1}, "num_clips"), ({"fps": float("inf")}, "fps"),
    ({"clip_len": 0}, "clip_len"), ({"last": "loop"}, "last"), ({"temporal_stride": 0}, "temporal_stride"),
])
def test_protocol_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ClipProtocol(**kwargs)


def test_protocol_is_recorded_as_plain_json():
    spec = input_preset("torchvision")
    data = ClipProtocol(fps=15, num_clips=5).to_dict(spec)
    assert data["clip_len"] == 16 and data["stride"] == 16
    assert "5 evenly spaced 16-frame clips per video at 15 fps" in json.loads(json.dumps(data))["description"]


def test_larger_crop_grows_the_resize_and_is_reported():
    prep = ClipPreprocessor("kenshohara2020", crop_size=128)
    assert (prep.resize, prep.spec.resize, prep.spec.crop_size) == (128, 128, 128)
    wide = ClipPreprocessor("torchvision", crop_size=160)
    assert wide.resize == (160, 214) and wide.spec.crop_size == 160
    out = wide(torch.zeros(4, 120, 160, 3, dtype=torch.uint8))
    assert out.shape == (3, 4, 160, 160)


def test_forged_duration_is_refused_before_any_allocation(videos, tmp_path):
    data = bytearray(videos["mkv"].path.read_bytes())
    at = data.find(b"\x44\x89")
    assert at > 0 and data[at + 2] in (0x84, 0x88)
    if data[at + 2] == 0x88:
        data[at + 3:at + 11] = struct.pack(">d", 1e13)
    else:
        data[at + 3:at + 7] = struct.pack(">f", 1e13)
    forged = tmp_path / "forged.mkv"
    forged.write_bytes(bytes(data))
    for attempt in (lambda: list(iter_video_clips(forged, "kenshohara2020")), lambda: read_frames(forged)):
        with pytest.raises(VideoDecodeError, match="corrupt or forged"):
            attempt()


def test_still_image_and_partial_decode_are_reported(videos, tmp_path):
    still = tmp_path / "photo.mp4"
    with av.open(str(still), "w", format="image2") as out:
        stream = out.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 40, 30, "rgb24"
        out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((30, 40, 3), 90, np.uint8), format="rgb24")))
        out.mux(stream.encode())
    stream = iter_video_clips(still, "kenshohara2020")
    assert len(list(stream)) == 1 and stream.report.still_image and not stream.report.complete
    cut = tmp_path / "cut.mp4"
    data = videos["fast"].path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning):
        _, _, report = video_clips(cut, "kenshohara2020")
    assert report.partial and report.frames < 60 and report.expected == 60
    assert "partial decode" in report.notes()[0]
