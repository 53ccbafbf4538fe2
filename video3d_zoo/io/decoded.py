"""What decoding produces: video metadata, decoded frames, the decode report and the frame buffer.

:class:`VideoInfo` comes from :func:`~video3d_zoo.io.probe_video`, :class:`DecodedVideo` from
:func:`~video3d_zoo.io.read_frames` (which fills a :class:`FrameBuffer`), :class:`DecodedFrame`
from :func:`~video3d_zoo.io.iter_frames`; :class:`DecodeReport` says how decoding went.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np
import torch

from ..errors import VideoDecodeError


@dataclass
class DecodeReport:
    """How decoding went: frames decoded against frames announced, early stops, still images.

    ``frames`` counts decoded source frames (before fps resampling); ``expected`` is the
    container's frame count when it states one for the decoded range (else ``None``);
    ``partial`` says why decoding ended early, when it did (a broken packet, or far fewer
    frames than announced); ``still_image`` marks a picture file or a single-frame stream.
    """

    path: str
    frames: int = 0
    expected: Optional[int] = None
    partial: Optional[str] = None
    still_image: bool = False

    @property
    def complete(self) -> bool:
        return self.partial is None and not self.still_image

    def notes(self) -> list:
        out = []
        if self.partial:
            out.append(f"partial decode: {self.partial}")
        if self.still_image:
            out.append("still image: a single picture, not a video")
        return out

    def to_dict(self) -> dict:
        return {"frames": self.frames, "expected": self.expected, "partial": self.partial,
                "still_image": self.still_image}


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a file.

    ``num_frames_source`` says how ``num_frames`` was obtained: ``"counted"`` (every video
    packet demuxed and counted), ``"header"`` (the container's frame count, exact for MP4 and
    AVI written by common muxers) or ``"estimated"`` (``round(duration_s * fps)``, for
    containers such as Matroska/WebM that store no count).
    """

    path: str
    num_frames: int
    num_frames_source: str
    fps: float
    duration_s: float
    width: int
    height: int
    rotation: int
    codec: str


@dataclass(frozen=True)
class DecodedVideo:
    """Frames (``T x H x W x 3`` uint8 RGB), their timestamps (float64 seconds) and the fps."""

    path: str
    frames: torch.Tensor
    timestamps: torch.Tensor
    fps: float

    def __len__(self) -> int:
        return int(self.frames.shape[0])


class DecodedFrame(NamedTuple):
    """One frame from :func:`iter_frames`: ``H x W x 3`` uint8 RGB, its time and position."""

    image: torch.Tensor
    time_s: float
    index: int


class FrameBuffer:
    """Stacks equally sized frames into one array without a list-then-stack double copy."""

    def __init__(self, capacity: int):
        self.capacity, self.count = max(1, capacity), 0
        self.array: Optional[np.ndarray] = None

    def append(self, image: np.ndarray, name: str) -> None:
        if self.array is None:
            self.array = np.empty((self.capacity, *image.shape), dtype=np.uint8)
        elif image.shape != self.array.shape[1:]:
            raise VideoDecodeError(
                f"{name}: frame size changed mid-stream from {self.array.shape[1:3]} to "
                f"{image.shape[:2]}; pass size=(height, width) to get one size")
        if self.count == len(self.array):
            grown = np.empty((len(self.array) * 3 // 2 + 8, *image.shape), dtype=np.uint8)
            grown[: self.count] = self.array
            self.array = grown
        self.array[self.count] = image
        self.count += 1

    def result(self) -> np.ndarray:
        out = self.array[: self.count]
        # Give back an over-estimated allocation rather than pin it for the tensor's lifetime.
        return out.copy() if self.count < 0.75 * len(self.array) else out
