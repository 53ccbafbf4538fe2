"""Write small real videos with PyAV for the I/O tests, and read back which frame is which.

Every frame is a flat colour that encodes its index (red = 16 * (i % 16) + 8, green =
16 * (i // 16 % 16) + 8), which survives lossy codecs, chroma subsampling and resizing; the
top-left quadrant additionally carries a blue marker so orientation can be checked.
:func:`frame_ids` recovers the indices from decoded frames.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import av
import numpy as np
import torch

# kind -> (file extension, FFmpeg muxer, encoder).
FORMATS = {
    "mp4": ("mp4", "mp4", "libx264"),
    "avi": ("avi", "avi", "mpeg4"),
    "mkv": ("mkv", "matroska", "libx264"),
    "vp8": ("webm", "webm", "libvpx"),
    "vp9": ("webm", "webm", "libvpx-vp9"),
    "ts": ("ts", "mpegts", "libx264"),  # MPEG transport stream, as cameras and broadcast write
}
_CODEC_OPTIONS = {
    "libx264": {"preset": "ultrafast", "crf": "12"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8", "crf": "4", "b": "2M"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "4", "b": "2M"},
}


@dataclass(frozen=True)
class WrittenVideo:
    path: Path
    num_frames: int
    fps: fractions.Fraction
    width: int
    height: int
    rotation: int  # clockwise degrees a player applies (0 when none was written)
    kind: str


def has_encoder(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # PyAV built without this encoder
        return False
    return True


def frame_image(index: int, height: int, width: int, marker: bool = True) -> np.ndarray:
    """The RGB picture of frame ``index``: its colour code plus the top-left blue marker."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = 16 * (index % 16) + 8
    image[..., 1] = 16 * (index // 16 % 16) + 8
    if marker:
        image[: height // 2, : width // 2, 2] = 255
    return image


def frame_ids(frames: Union[torch.Tensor, np.ndarray]) -> list:
    """Recover the frame indices from ``... x H x W x 3`` frames written by :func:`write_video`."""
    frames = frames.numpy() if torch.is_tensor(frames) else np.asarray(frames)
    frames = frames.reshape(-1, *frames.shape[-3:])
    # The median over pixels ignores the marker quadrant and the edge ringing it causes.
    red = np.median(frames[..., 0].reshape(len(frames), -1), axis=1)
    green = np.median(frames[..., 1].reshape(len(frames), -1), axis=1)
    low = np.clip(np.round((red - 8) / 16), 0, 15).astype(int)
    high = np.clip(np.round((green - 8) / 16), 0, 15).astype(int)
    return (low + 16 * high).tolist()


def marker_quadrant(frame: Union[torch.Tensor, np.ndarray]) -> str:
    """Which quadrant (tl, tr, bl, br) of an ``H x W x 3`` frame holds the blue marker."""
    frame = frame.numpy() if torch.is_tensor(frame) else np.asarray(frame)
    h, w = frame.shape[0] // 2, frame.shape[1] // 2
    blue = frame[..., 2].astype(float)
    means = {"tl": blue[:h, :w].mean(), "tr": blue[:h, w:].mean(),
             "bl": blue[h:, :w].mean(), "br": blue[h:, w:].mean()}
    return max(means, key=means.get)


def write_video(path: Union[str, Path], num_frames: int, width: int = 64, height: int = 48,
                fps: Union[int, str, fractions.Fraction] = 25, kind: str = "mp4",
                rotation: int = 0, gop: Optional[int] = None, faststart: bool = False,
                with_audio: bool = False) -> WrittenVideo:
    """Encode ``num_frames`` coded frames of ``width x height`` to ``path``.

    ``rotation`` (clockwise, as players apply it) is stored as a display matrix, so a
    correct reader returns frames rotated by it.  ``faststart`` moves the MP4 index to the
    front (a file cut short is then still partly decodable).
    """
    _, fmt, codec = FORMATS[kind]
    rate = fractions.Fraction(fps)
    container_options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=fmt, container_options=container_options) as out:
        stream = out.add_stream(codec, rate=rate, options=dict(_CODEC_OPTIONS.get(codec, {})))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "mpeg4":
            stream.bit_rate = 4_000_000
        if gop:
            stream.gop_size = gop
        if rotation:
            # PyAV takes FFmpeg's counter-clockwise angle; players rotate clockwise by -angle.
            stream.set_display_rotation(-rotation)
        audio = _add_audio(out) if with_audio else None
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, height, width), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if audio is not None:
            _write_silence(out, audio, float(num_frames / rate))
    return WrittenVideo(Path(path), num_frames, rate, width, height, rotation % 360, kind)


def _add_audio(container):
    stream = container.add_stream("aac", rate=16000)
    stream.layout = "mono"
    return stream


def _write_silence(container, stream, seconds: float) -> None:
    samples = max(1024, int(seconds * stream.rate))
    frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), dtype=np.float32),
                                       format="fltp", layout="mono")
    frame.rate = stream.rate
    container.mux(stream.encode(frame))
    container.mux(stream.encode())


def write_audio_only(path: Union[str, Path], seconds: float = 0.5) -> Path:
    """An MP4 (M4A) holding one AAC audio stream and no video."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = _add_audio(out)
        _write_silence(out, stream, seconds)
    return Path(path)
