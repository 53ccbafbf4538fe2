"""video3d_zoo.io: decoding real encoded videos, clip sampling and preprocessing."""

from __future__ import annotations

import os
import random
import warnings

import numpy as np
import pytest
import torch

from videos import (FORMATS, frame_ids, has_encoder, marker_quadrant, write_audio_only,
                    write_video)
from video3d_zoo.models.config import input_preset
from video3d_zoo.errors import ConfigError, VideoDecodeError
from video3d_zoo.io import (ClipPreprocessor, apply_rotation, center_crop, clip_starts, hflip,
                            iter_frames, iter_video_clips, loop_pad, multiscale_corner_crop,
                            preprocess_clip, probe_video, random_horizontal_flip,
                            random_resized_crop, read_frames, resize_frames, sample_clips,
                            temporal_center_crop, temporal_even_crop, temporal_random_crop)

PRESETS = ["kenshohara2017", "kenshohara2020", "torchvision"]


@pytest.fixture(scope="session")
def make_video(tmp_path_factory):
    """Write (once per session) and return a video with the given properties."""
    root = tmp_path_factory.mktemp("videos")
    cache = {}

    def make(num_frames=20, width=64, height=48, fps=25, kind="mp4", **options):
        key = (num_frames, width, height, str(fps), kind, tuple(sorted(options.items())))
        if key not in cache:
            ext, _, codec = FORMATS[kind]
            if not has_encoder(codec):
                pytest.skip(f"PyAV has no {codec} encoder")
            path = root / f"v{len(cache)}_{kind}.{ext}"
            cache[key] = write_video(path, num_frames, width, height, fps, kind, **options)
        return cache[key]

    return make


def open_fds():
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_probe_and_read_every_container(make_video, kind):
    video = make_video(20, 64, 48, fps=12, kind=kind)
    info = probe_video(video.path)
    assert (info.width, info.height, info.rotation) == (64, 48, 0)
    assert info.fps == pytest.approx(12.0)
    assert info.duration_s == pytest.approx(20 / 12, abs=2e-3)
    assert info.num_frames == 20
    assert info.num_frames_source == ("header" if kind in ("mp4", "avi") else "estimated")
    counted = probe_video(video.path, count_frames=True)
    assert (counted.num_frames, counted.num_frames_source) == (20, "counted")

    decoded = read_frames(video.path)
    assert decoded.frames.dtype == torch.uint8 and decoded.frames.shape == (20, 48, 64, 3)
    assert frame_ids(decoded.frames) == list(range(20))
    assert decoded.timestamps.dtype == torch.float64
    np.testing.assert_allclose(decoded.timestamps.numpy(), np.arange(20) / 12, atol=1e-3)
    assert decoded.fps == pytest.approx(12.0)


@pytest.mark.parametrize("fps", [12, 25, "30000/1001"])
def test_timestamps_follow_the_frame_rate(make_video, fps):
    video = make_video(30, fps=fps)
    decoded = read_frames(video.path)
    rate = float(video.fps)
    assert decoded.fps == pytest.approx(rate)
    np.testing.assert_allclose(decoded.timestamps.numpy(), np.arange(30) / rate, atol=1e-4)
    assert probe_video(video.path).duration_s == pytest.approx(30 / rate, abs=1e-3)


def test_short_side_and_exact_resize(make_video):
    landscape = make_video(6, 320, 240)
    portrait = make_video(6, 96, 128, fps="30000/1001")
    assert read_frames(landscape.path, short_side=112).frames.shape == (6, 112, 149, 3)
    assert read_frames(portrait.path, short_side=112).frames.shape == (6, 149, 112, 3)
    exact = read_frames(landscape.path, size=(128, 171))
    assert exact.frames.shape == (6, 128, 171, 3)
    assert frame_ids(exact.frames) == list(range(6))
    assert marker_quadrant(exact.frames[0]) == "tl"
    with pytest.raises(ValueError):
        read_frames(landscape.path, short_side=112, size=(112, 112))


def test_pyav_resize_agrees_with_torch_resize(make_video):
    video = make_video(6, 320, 240)
    by_pyav = read_frames(video.path, short_side=112).frames.float()
    by_torch = resize_frames(read_frames(video.path).frames, 112).float()
    assert by_torch.shape == by_pyav.shape
    assert (by_pyav - by_torch).abs().mean() < 2.0  # both bilinear; they differ only at edges


@pytest.mark.parametrize("kind,rotation,quadrant", [
    ("mp4", 90, "tr"), ("mp4", 180, "br"), ("mp4", 270, "bl"), ("mkv", 90, "tr")])
def test_rotation_metadata_gives_upright_frames(make_video, kind, rotation, quadrant):
    video = make_video(8, 64, 48, kind=kind, rotation=rotation)
    info = probe_video(video.path)
    sideways = rotation in (90, 270)
    assert info.rotation == rotation
    assert (info.width, info.height) == ((48, 64) if sideways else (64, 48))
    decoded = read_frames(video.path)
    assert decoded.frames.shape[1:3] == ((64, 48) if sideways else (48, 64))
    assert marker_quadrant(decoded.frames[0]) == quadrant
    assert frame_ids(decoded.frames) == list(range(8))
    # The short side is the upright one: 48 wide x 64 high -> 24 x 32.
    small = read_frames(video.path, short_side=24).frames
    assert small.shape[1:3] == ((32, 24) if sideways else (24, 32))
    assert marker_quadrant(small[0]) == quadrant


def test_apply_rotation_turns_clockwise():
    image = np.array([[1, 2, 3], [4, 5, 6]])[..., None]
    assert apply_rotation(image, 0) is image
    assert apply_rotation(image, 90)[..., 0].tolist() == [[4, 1], [5, 2], [6, 3]]
    assert apply_rotation(image, 180)[..., 0].tolist() == [[6, 5, 4], [3, 2, 1]]
    assert apply_rotation(image, 270)[..., 0].tolist() == [[3, 6], [2, 5], [1, 4]]


def test_fps_resampling_picks_the_nearest_frame(make_video):
    video = make_video(24, fps=12)  # 2.0 s
    down = read_frames(video.path, fps=5)
    assert down.fps == 5.0
    assert frame_ids(down.frames) == [0, 2, 5, 7, 10, 12, 14, 17, 19, 22]
    np.testing.assert_allclose(down.timestamps.numpy(), np.arange(10) / 5, atol=1e-9)
    up = read_frames(video.path, fps=25)
    assert len(up) == 50
    ids = frame_ids(up.frames)
    assert ids[:6] == [0, 0, 1, 1, 2, 2]
    assert ids == [min(23, int(np.floor(k * 12 / 25 + 0.5))) for k in range(50)]


@pytest.mark.parametrize("kind", ["mp4", "mkv"])
def test_time_range_seeks_to_the_right_frames(make_video, kind):
    video = make_video(60, fps=25, kind=kind, gop=12)
    part = read_frames(video.path, start_s=1.0, end_s=1.6)
    assert frame_ids(part.frames) == list(range(25, 40))
    assert part.timestamps[0].item() == pytest.approx(1.0, abs=1e-3)
    assert frame_ids(read_frames(video.path, start_s=0.5).frames) == list(range(13, 60))
    streamed = [f for f in iter_frames(video.path, start_s=1.0, end_s=1.6)]
    assert [f.index for f in streamed] == list(range(15))
    assert frame_ids(torch.stack([f.image for f in streamed])) == list(range(25, 40))
    with pytest.raises(VideoDecodeError, match="time range"):
        read_frames(video.path, start_s=30.0)


def test_iter_frames_streams_and_closes_the_file(make_video):
    video = make_video(30, 96, 128, fps="30000/1001")
    whole = read_frames(video.path, short_side=32)
    before = open_fds()
    with iter_frames(video.path, short_side=32) as frames:
        assert frames.fps == pytest.approx(30000 / 1001)
        got = list(frames)
    assert torch.equal(torch.stack([f.image for f in got]), whole.frames)
    assert [f.time_s for f in got] == whole.timestamps.tolist()
    stopped = iter_frames(video.path)
    next(stopped)
    stopped.close()
    assert open_fds() == before


def test_decoding_on_one_thread_gives_the_same_frames(make_video):
    video = make_video(20, 96, 128)
    whole = read_frames(video.path, short_side=32)
    with iter_frames(video.path, short_side=32, threads=1) as frames:
        assert torch.equal(torch.stack([f.image for f in frames]), whole.frames)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="threads must be a positive integer"):
            iter_frames(video.path, threads=bad)


# ---------------------------------------------------------------- bad inputs


def _bad_inputs(root, make_video):
    good = make_video(40, kind="mp4").path.read_bytes()
    files = {
        "missing": (root / "missing.mp4", "no such file"),
        "empty": (root / "empty.mp4", "empty"),
        "directory": (root / "folder.mp4", "not a regular file"),
        "text": (root / "notes.txt", "not a video"),
        "text_as_mp4": (root / "notes.mp4", "cannot be opened"),
        "random_bytes": (root / "noise.avi", "cannot be opened"),
        "truncated_mp4": (root / "cut.mp4", "cannot be opened"),
        "audio_only": (root / "sound.m4a", "no video stream"),
    }
    files["empty"][0].write_bytes(b"")
    files["directory"][0].mkdir()
    files["text"][0].write_text("just some text\n" * 40)
    files["text_as_mp4"][0].write_text("just some text\n" * 40)
    files["random_bytes"][0].write_bytes(np.random.default_rng(0).bytes(4096))
    files["truncated_mp4"][0].write_bytes(good[: len(good) // 2])  # index (moov) is at the end
    write_audio_only(files["audio_only"][0])
    return files


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, make_video):
    return _bad_inputs(tmp_path_factory.mktemp("bad"), make_video)


BAD = ["missing", "empty", "directory", "text", "text_as_mp4", "random_bytes", "truncated_mp4",
       "audio_only"]


@pytest.mark.parametrize("name", BAD)
@pytest.mark.parametrize("reader", ["probe_video", "read_frames", "iter_frames", "clips"])
def test_bad_inputs_raise_video_decode_error(bad_inputs, name, reader):
    path, reason = bad_inputs[name]
    calls = {
        "probe_video": lambda: probe_video(path),
        "read_frames": lambda: read_frames(path, short_side=32),
        "iter_frames": lambda: list(iter_frames(path)),
        "clips": lambda: list(iter_video_clips(path, "kenshohara2020")),
    }
    before = open_fds()
    with pytest.raises(VideoDecodeError) as caught:
        calls[reader]()
    assert str(path) in str(caught.value) and reason in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert open_fds() == before


@pytest.mark.parametrize("kind,faststart", [("mp4", True), ("mkv", False)])
def test_truncated_video_returns_the_decodable_frames(make_video, tmp_path, kind, faststart):
    video = make_video(40, kind=kind, faststart=faststart)
    data = video.path.read_bytes()
    cut = tmp_path / f"cut.{FORMATS[kind][0]}"
    cut.write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = read_frames(cut)
    ids = frame_ids(decoded.frames)
    assert 0 < len(ids) < 40 and ids == list(range(len(ids)))
    if kind == "mp4":  # the header still announces 40 frames
        assert any("truncated" in str(w.message) and str(cut) in str(w.message) for w in caught)


# ---------------------------------------------------------------- clip sampling


@pytest.mark.parametrize("num_frames,stride,last,expected", [
    (40, 16, "pad", [0, 16, 32]),
    (40, 16, "drop", [0, 16]),
    (40, 16, "shift", [0, 16, 24]),
    (32, 16, "pad", [0, 16]),
    (32, 16, "shift", [0, 16]),
    (17, 16, "pad", [0, 16]),
    (17, 16, "shift", [0, 1]),
    (16, 16, "pad", [0]),
    (5, 16, "drop", [0]),
    (5, 16, "shift", [0]),
    (24, 8, "pad", [0, 8, 16]),
    (24, 8, "shift", [0, 8]),
    (30, 8, "drop", [0, 8]),
    (30, 8, "shift", [0, 8, 14]),
    (40, 20, "pad", [0, 20]),
    (50, 20, "pad", [0, 20, 40]),
])
def test_clip_starts(num_frames, stride, last, expected):
    assert clip_starts(num_frames, 16, stride, last) == expected


def _original_sliding_window(num_frames, size, stride):
    """The 2020 code's SlidingWindow(size, stride) applied to range(num_frames), as starts."""
    out = []
    for begin in range(0, num_frames, stride):
        sample = list(range(begin, min(num_frames, begin + size)))
        out.append(begin)
        if len(sample) < size:
            break
    return out


@pytest.mark.parametrize("stride", [4, 8, 16, 20])
def test_pad_policy_matches_the_original_sliding_window(stride):
    for num_frames in range(1, 80):
        assert clip_starts(num_frames, 16, stride, "pad") == \
            _original_sliding_window(num_frames, 16, stride), num_frames


@pytest.mark.parametrize("last", ["pad", "drop", "shift"])
def test_short_videos_give_one_loop_padded_clip(last):
    for num_frames in range(1, 17):
        clips = sample_clips(num_frames, 16, 16, last)
        assert len(clips) == 1
        assert clips[0].indices.tolist() == [i % num_frames for i in range(16)]
        assert clips[0].num_real == num_frames and clips[0].padded == (num_frames < 16)


def test_loop_padding_and_clip_times():
    assert loop_pad([3, 4, 5], 8).tolist() == [3, 4, 5, 3, 4, 5, 3, 4]
    times = np.arange(40) / 25.0
    clips = sample_clips(40, 16, 16, "pad", timestamps=times)
    assert [c.indices.tolist() for c in clips[:2]] == [list(range(16)), list(range(16, 32))]
    assert clips[2].indices.tolist() == list(range(32, 40)) * 2
    spans = [(c.start_s, c.end_s) for c in clips]
    np.testing.assert_allclose(spans, [(0.0, 0.64), (0.64, 1.28), (1.28, 1.6)])
    shifted = sample_clips(40, 16, 16, "shift", timestamps=torch.tensor(times), fps=25)
    assert (shifted[2].start_s, shifted[2].end_s) == pytest.approx((0.96, 1.6))
    assert shifted[2].indices.tolist() == list(range(24, 40))
    with pytest.raises(ValueError):
        sample_clips(0)
    with pytest.raises(ValueError):
        clip_starts(40, last="wrap")


def test_temporal_random_crop_matches_the_original_range():
    rng = random.Random(0)
    starts = {int(temporal_random_crop(40, 16, rng)[0]) for _ in range(3000)}
    assert starts == set(range(0, 24))  # 40 - 16 - 1 = 23 is the largest start; 24 never
    for _ in range(20):
        assert temporal_random_crop(17, 16, rng).tolist() == list(range(16))
    assert temporal_random_crop(10, 16, rng).tolist() == list(range(10)) + list(range(6))
    clip = temporal_random_crop(100, 16, torch.Generator().manual_seed(3))
    assert clip.tolist() == list(range(clip[0], clip[0] + 16))
    again = temporal_random_crop(100, 16, torch.Generator().manual_seed(3))
    assert clip.tolist() == again.tolist()
    assert temporal_random_crop(100, 16, np.random.default_rng(1)).shape == (16,)


def test_temporal_center_and_even_crops():
    assert temporal_center_crop(40, 16).tolist() == list(range(12, 28))
    assert temporal_center_crop(5, 16).tolist() == [i % 5 for i in range(16)]
    assert [c[0] for c in temporal_even_crop(100, 16, 3)] == [0, 42, 84]
    assert all(len(c) == 16 for c in temporal_even_crop(100, 16, 3))
    assert [c[0] for c in temporal_even_crop(20, 16, 3)] == [0, 2, 4]
    short = temporal_even_crop(10, 16, 3)
    assert len(short) == 1 and short[0].tolist() == list(range(10)) + list(range(6))
    assert temporal_even_crop(40, 16, 1)[0].tolist() == list(range(12, 28))


# ---------------------------------------------------------------- transforms


def _expected_value(spec, pixel):
    return [(pixel * spec.value_scale / 255.0 - m) / s for m, s in zip(spec.mean, spec.std)]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("pixel", [0, 128, 255])
def test_flat_frame_normalises_to_the_preset_value(preset, pixel):
    spec = input_preset(preset)
    frames = torch.full((16, 240, 320, 3), pixel, dtype=torch.uint8)
    out = preprocess_clip(frames, spec)
    assert out.dtype == torch.float32 and out.shape == (3, 16, 112, 112)
    expected = torch.tensor(_expected_value(spec, pixel), dtype=torch.float32)
    torch.testing.assert_close(out, expected.view(3, 1, 1, 1).expand_as(out), rtol=1e-6, atol=1e-5)


def test_preset_value_ranges():
    grey = torch.full((1, 4, 4, 3), 128, dtype=torch.uint8)
    v2017 = preprocess_clip(grey, "kenshohara2017")[:, 0, 0, 0]
    torch.testing.assert_close(v2017, torch.tensor([128 - 114.7748, 128 - 107.7354, 128 - 99.4750]),
                               rtol=0, atol=1e-4, check_dtype=False)
    v2020 = preprocess_clip(grey, "kenshohara2020")[:, 0, 0, 0]
    assert v2020[0].item() == pytest.approx((128 / 255 - 0.4345) / 0.2768, abs=1e-5)
    white = torch.full((1, 4, 4, 3), 255, dtype=torch.uint8)
    saturated = preprocess_clip(white, "kenshohara2017")[0, 0, 0, 0].item()
    assert saturated == pytest.approx(255 - 114.7748, abs=1e-4)


def test_center_crop_offsets_and_resize_shapes():
    rows = torch.arange(130).view(1, 130, 1, 1).expand(2, 130, 149, 1)
    cols = torch.arange(149).view(1, 1, 149, 1).expand(2, 130, 149, 1)
    frames = torch.cat([rows, cols, torch.zeros_like(rows)], -1).to(torch.uint8)
    crop = center_crop(frames, 112)
    # round((130 - 112) / 2) = 9 and round((149 - 112) / 2) = round(18.5) = 18, as torchvision.
    assert crop[0, :, 0, 0].tolist() == list(range(9, 121))
    assert crop[0, 0, :, 1].tolist() == list(range(18, 130))
    raw = ClipPreprocessor("kenshohara2017", mean=(0.0, 0.0, 0.0), resize=None)(frames)
    assert raw.shape == (3, 2, 112, 112)
    assert raw[1, 0, 0].tolist() == [float(v) for v in range(18, 130)]
    big = torch.zeros((2, 240, 320, 3), dtype=torch.uint8)
    assert resize_frames(big, 112).shape == (2, 112, 149, 3)
    assert resize_frames(big, (128, 171)).shape == (2, 128, 171, 3)
    assert resize_frames(big[:, :, :180], 112).shape == (2, 149, 112, 3)
    with pytest.raises(ValueError):
        center_crop(big[:, :100], 112)


def test_clip_preprocessor_overrides_and_batches():
    frames = torch.randint(0, 256, (3, 8, 120, 160, 3), dtype=torch.uint8)
    prep = ClipPreprocessor("torchvision")
    batch = prep(frames)
    assert batch.shape == (3, 3, 8, 112, 112)
    torch.testing.assert_close(batch[1], prep(frames[1]))
    full = ClipPreprocessor("kenshohara2020", crop_size=None)(frames[0])
    assert full.shape == (3, 8, 112, 149)
    shifted = ClipPreprocessor("kenshohara2020", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    expected = center_crop(resize_frames(frames[0], 112), 112).permute(3, 0, 1, 2) / 255.0
    torch.testing.assert_close(shifted(frames[0]), expected)
    with pytest.raises(TypeError):
        ClipPreprocessor("kenshohara2020", colour="red")


def _coordinate_frames(t=2, height=80, width=100):
    rows = torch.arange(height).view(1, height, 1, 1).expand(t, height, width, 1)
    cols = torch.arange(width).view(1, 1, width, 1).expand(t, height, width, 1)
    return torch.cat([rows, cols, torch.zeros_like(rows)], -1).to(torch.uint8)


@pytest.mark.parametrize("position,corner", [
    ("c", (20, 30)), ("tl", (0, 0)), ("tr", (0, 60)), ("bl", (40, 0)), ("br", (40, 60))])
def test_multiscale_corner_crop_positions(position, corner):
    frames = _coordinate_frames()
    out = multiscale_corner_crop(frames, 40, scales=0.5, position=position)
    assert out.shape == (2, 40, 40, 3)  # side int(80 * 0.5) = 40, so no resize here
    assert (out[0, 0, 0, 0].item(), out[0, 0, 0, 1].item()) == corner
    assert torch.equal(out[0], out[1])
    assert multiscale_corner_crop(frames, 16, scales=0.5, position=position).shape == (2, 16, 16, 3)


def test_random_crops_draw_once_per_clip():
    frames = _coordinate_frames(t=3)
    seen = set()
    rng = random.Random(0)
    for _ in range(200):
        out = multiscale_corner_crop(frames, 24, rng=rng)
        assert out.shape == (3, 24, 24, 3) and torch.equal(out[0], out[2])
        seen.add((out[0, 0, 0, 0].item(), out[0, 0, 0, 1].item()))
    assert len(seen) >= 15  # 5 scales x 5 positions (some coincide at scale 1)
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    crop_a = random_resized_crop(frames, 32, rng=gen_a)
    assert crop_a.shape == (3, 32, 32, 3) and torch.equal(crop_a[0], crop_a[1])
    assert torch.equal(crop_a, random_resized_crop(frames, 32, rng=gen_b))
    assert torch.equal(hflip(frames)[:, :, 0], frames[:, :, -1])
    assert torch.equal(random_horizontal_flip(frames, p=1.0), hflip(frames))
    assert random_horizontal_flip(frames, p=0.0) is frames
    flips = [random_horizontal_flip(frames, rng=rng) is not frames for _ in range(400)]
    assert 150 < sum(flips) < 250


# ---------------------------------------------------------------- iter_video_clips


def test_iter_video_clips_matches_decode_then_preprocess(make_video):
    video = make_video(40, 320, 240, fps=25)
    spec = input_preset("kenshohara2020")
    clips = list(iter_video_clips(video.path, spec))
    assert [c.frame_indices.tolist()[0] for c in clips] == [0, 16, 32]
    assert clips[2].frame_indices.tolist() == list(range(32, 40)) * 2
    np.testing.assert_allclose([(c.start_s, c.end_s) for c in clips],
                               [(0.0, 0.64), (0.64, 1.28), (1.28, 1.6)], atol=1e-9)
    decoded = read_frames(video.path, short_side=112)
    for clip in clips:
        assert clip.tensor.shape == (3, 16, 112, 112) and clip.tensor.dtype == torch.float32
        expected = preprocess_clip(decoded.frames[torch.from_numpy(clip.frame_indices)], spec)
        torch.testing.assert_close(clip.tensor, expected, rtol=0, atol=0)
    # Frame identity survives the whole pipeline: undo the normalisation of the red channel.
    red = clips[1].tensor[0, :, 50, 50] * spec.std[0] + spec.mean[0]
    assert [round((v * 255 - 8) / 16) for v in red.tolist()] == list(range(16))


@pytest.mark.parametrize("stride,last", [(16, "pad"), (16, "drop"), (16, "shift"), (8, "pad"),
                                         (8, "shift"), (24, "pad"), (5, "shift")])
def test_streamed_clips_match_sample_clips(make_video, stride, last):
    video = make_video(45, 64, 48, fps=30)
    clips = list(iter_video_clips(video.path, "kenshohara2017", stride=stride, last=last,
                                  crop_size=None))
    expected = sample_clips(45, 16, stride, last, timestamps=np.arange(45) / 30, fps=30)
    assert [c.frame_indices.tolist() for c in clips] == [c.indices.tolist() for c in expected]
    np.testing.assert_allclose([c.end_s for c in clips], [c.end_s for c in expected], atol=1e-6)
    for clip in clips:
        red = clip.tensor[0, :, 40, 100] + 114.7748
        assert [round((v - 8) / 16) % 16 for v in red.tolist()] == [i % 16 for i in clip.frame_indices]


def test_iter_video_clips_short_video_and_options(make_video):
    short = make_video(5, 320, 240, fps=25)
    clips = list(iter_video_clips(short.path, "torchvision"))
    assert len(clips) == 1
    assert clips[0].frame_indices.tolist() == [i % 5 for i in range(16)]
    assert clips[0].tensor.shape == (3, 16, 112, 112)
    assert (clips[0].start_s, clips[0].end_s) == pytest.approx((0.0, 0.2))
    video = make_video(40, 320, 240, fps=25)
    resampled = list(iter_video_clips(video.path, "kenshohara2020", fps=12.5))
    assert len(resampled) == 2 and resampled[1].end_s == pytest.approx(1.6)
    eight = list(iter_video_clips(video.path, "kenshohara2020", clip_len=8, crop_size=64))
    assert len(eight) == 5 and eight[0].tensor.shape == (3, 8, 64, 64)
    before = open_fds()
    stream = iter_video_clips(video.path, "kenshohara2020")
    next(stream)
    stream.close()
    assert open_fds() == before
    with pytest.raises(ValueError):
        iter_video_clips(video.path, "kenshohara2020", last="loop")

