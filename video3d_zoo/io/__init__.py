"""Video input: decoding (PyAV), clip sampling and preprocessing for the zoo's models.

>>> from video3d_zoo.models.config import input_preset
>>> from video3d_zoo.io import iter_video_clips
>>> for clip in iter_video_clips("video.mp4", input_preset("kenshohara2020")):  # doctest: +SKIP
...     logits = model(clip.tensor[None])

:func:`iter_video_clips` is the building block for custom pipelines: it decodes the file once,
already resized by PyAV to the spec's resize, streams the frames through a small buffer (so
memory stays bounded for long videos) and yields preprocessed ``C x T x H x W`` clips with
their time span and frame indices.  The pieces it is made of -- :mod:`.decode`,
:mod:`.clips`, :mod:`.transforms` and :mod:`.protocol` -- are public too.
"""

from __future__ import annotations

from .clips import (LAST_POLICIES, ClipIndices, clip_starts, loop_pad, resample_nearest,
                    sample_clips, temporal_center_crop, temporal_even_crop, temporal_random_crop)
from .decode import (VIDEO_EXTENSIONS, DecodedFrame, DecodedVideo, DecodeReport, FrameStream, VideoInfo,
                     apply_rotation, iter_frames, probe_video, read_frames)
from .protocol import ClipProtocol, ClipStream, VideoClip, iter_video_clips, video_clips
from .transforms import (CORNER_POSITIONS, CROP_POSITIONS, MULTISCALE_SCALES, ClipPreprocessor, center_crop,
                         crop_at, hflip, multiscale_corner_crop, normalize_clip, preprocess_clip,
                         random_horizontal_flip, random_resized_crop, resize_frames, resized_shape)

__all__ = [
    "ClipProtocol", "ClipStream", "VideoClip", "iter_video_clips", "video_clips",
    "VideoInfo", "DecodedVideo", "DecodedFrame", "DecodeReport", "FrameStream", "probe_video", "read_frames",
    "iter_frames", "apply_rotation", "resized_shape", "VIDEO_EXTENSIONS",
    "LAST_POLICIES", "ClipIndices", "clip_starts", "sample_clips", "loop_pad", "resample_nearest",
    "temporal_random_crop", "temporal_center_crop", "temporal_even_crop",
    "MULTISCALE_SCALES", "CORNER_POSITIONS", "CROP_POSITIONS", "ClipPreprocessor", "preprocess_clip",
    "normalize_clip", "resize_frames", "center_crop", "crop_at", "multiscale_corner_crop",
    "random_resized_crop", "hflip", "random_horizontal_flip",
]
