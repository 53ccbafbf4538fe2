"""Feature extraction of one video: the zoo's PyAV pipeline against the original approach, side by side.

The original extractor (video-classification-3d-cnn-pytorch) ran ``ffmpeg -i video tmp/image_%05d.jpg``
at native resolution, read the JPEGs back with PIL, resized the short side to 112, centre-cropped
and normalised, then ran the model.  The zoo decodes with PyAV straight to 112-pixel frames.
Printed: the share of wall time the zoo spends decoding/preprocessing, and end-to-end speed of both
routes on the same video and model, measured in the same run.

    python benchmarks/decode_pipeline.py            # 10 s, 320x240, 30 fps H.264; resnet3d_18
    python benchmarks/decode_pipeline.py --tiny     # seconds-long smoke run (CI)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

import video3d_zoo
from video3d_zoo.jobs.features import extract_features
from video3d_zoo.io import iter_video_clips


def write_test_video(path: Path, seconds: float, width: int, height: int, fps: int = 30) -> Path:
    # Smooth colour gradients: JPEG and resize filters barely change them, so features are comparable.
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    background = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in (0.0, 1.0, 2.0)], axis=-1)
    background = ((background + 1) * 127.5).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            image = np.roll(background, shift=3 * i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_textured_video(path: Path, seconds: float, width: int, height: int, fps: int = 30, seed: int = 0) -> Path:
    """A video with the bitrate of real footage: multi-scale texture panning, a moving block, sensor noise.

    libx264 CRF 23 gives about 1.6 Mbit/s at 1280x720 and 0.4 Mbit/s at 640x272 (typical web
    video); smooth synthetic gradients compress 10x smaller and decode unrealistically fast.
    """
    rng = np.random.default_rng(seed)
    texture = np.zeros((height, 2 * width, 3), np.float32)
    for scale in (2, 8, 32):
        cells = rng.standard_normal((height // scale + 2, 2 * width // scale + 2, 3)).astype(np.float32)
        texture += np.kron(cells, np.ones((scale, scale, 1), np.float32))[:height, :2 * width] * (scale / 32) ** 0.5
    texture = ((texture - texture.min()) / (texture.max() - texture.min()) * 255).astype(np.uint8)
    side = max(height // 4, 2)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for i in range(int(seconds * fps)):
            x0 = (4 * i) % width
            image = texture[:, x0:x0 + width].astype(np.int16)
            top, left = height // 3 + int(height / 4 * np.sin(i / 15)), (7 * i) % max(width - side, 1)
            image[top:top + side, left:left + side] = 255 - image[top:top + side, left:left + side]
            image += rng.integers(-8, 9, size=image.shape, dtype=np.int16)
            frame = av.VideoFrame.from_ndarray(np.clip(image, 0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def original_route(model, video: Path, workdir: Path, clip_len: int = 16, batch_size: int = 1) -> np.ndarray:
    """ffmpeg -> JPEG files -> PIL -> Scale(112) -> CenterCrop(112) -> normalise -> model, ``batch_size`` clips
    per forward pass (the original extractor's default was 32)."""
    from PIL import Image

    frames_dir = workdir / "tmp"
    shutil.rmtree(frames_dir, ignore_errors=True)
    frames_dir.mkdir()
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(video), str(frames_dir / "image_%05d.jpg")],
                   check=True)
    spec = model.config.input_spec
    mean = torch.tensor(spec.mean).view(3, 1, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1, 1)
    files = sorted(frames_dir.glob("image_*.jpg"))
    images = []
    for file in files:
        with Image.open(file) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = spec.crop_size / min(w, h)
            im = im.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
            left, top = (im.size[0] - spec.crop_size) // 2, (im.size[1] - spec.crop_size) // 2
            im = im.crop((left, top, left + spec.crop_size, top + spec.crop_size))
            images.append(torch.from_numpy(np.array(im)))
    clips = []
    for start in range(0, len(images) - clip_len + 1, clip_len):
        clip = torch.stack(images[start:start + clip_len]).permute(3, 0, 1, 2).float()
        clips.append((clip / 255.0 * spec.value_scale - mean) / std)
    outputs = []
    for start in range(0, len(clips), batch_size):
        with torch.inference_mode():
            batch = torch.stack(clips[start:start + batch_size])
            outputs.append(model.forward_head(model.forward_features(batch), pre_logits=True))
    shutil.rmtree(frames_dir)
    return torch.cat(outputs).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--model", default="resnet3d_18")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("the original route needs the ffmpeg command (apt-get install ffmpeg)")
    seconds, width, height = (1.0, 64, 48) if args.tiny else (10.0, 320, 240)
    kwargs = {"widen_factor": 0.125} if args.tiny else {}
    model = video3d_zoo.create_model("resnet3d_10" if args.tiny else args.model, **kwargs).eval()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        video = write_test_video(work / "video.mp4", seconds, width, height)
        extract_features(model, video, batch_size=1)  # warm-up: allocator, oneDNN primitives
        start = time.perf_counter()
        clips = list(iter_video_clips(video, model.config.input_spec))
        decode_s = time.perf_counter() - start
        start = time.perf_counter()
        zoo = extract_features(model, video, batch_size=1)
        zoo_s = time.perf_counter() - start
        start = time.perf_counter()
        original = original_route(model, video, work)
        original_s = time.perf_counter() - start
    frames = int(seconds * 30)
    print(f"video: {seconds:.0f} s, {width}x{height}, 30 fps ({frames} frames); model {model.config.architecture}; "
          f"{len(clips)} clips (zoo, last clip loop-padded) vs {len(original)} (original drops it)")
    print(f"zoo decode + preprocess, timed alone: {decode_s:.2f} s ({frames / decode_s:.0f} frames/s), "
          f"about {min(decode_s / zoo_s, 1):.0%} of the zoo's end-to-end {zoo_s:.2f} s")
    print(f"original route (ffmpeg -> JPEG -> PIL): {original_s:.2f} s end to end")
    print(f"speed-up of the zoo pipeline: {original_s / zoo_s:.2f}x "
          f"(per clip: {original_s / max(len(original), 1):.3f} s vs {zoo_s / len(clips):.3f} s)")
    common = min(len(original), len(zoo.features))
    diff = np.abs(original[:common] - zoo.features[:common]).max() / max(np.abs(original).max(), 1e-6)
    print(f"features of shared clips differ by {diff:.2%} of their range (JPEG round trip and resize filters)")


if __name__ == "__main__":
    main()
