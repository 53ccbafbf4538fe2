"""Synthetic motion data set: classes that differ *only* in how things move.

:func:`make_synthetic` writes real H.264 mp4 files (PyAV) in the folder-per-class layout::

    OUT_DIR/
      classes.txt            class names, one per line, in label order
      train.txt, test.txt    split lists: one ``class/file.mp4`` path per line
      synthetic.json         the generator's parameters (seed, sizes, classes, version)
      move_right/move_right_s0_0000.mp4 ...

Every video shows two or three random textured objects (random blobs, each with its own
bright texture) on a random, dimmer textured background.  The eight classes are eight motions,
made by all objects of a video together: translation right / left / up / down, rotation
clockwise / counter-clockwise (each object about its own centre), zoom in / out.  A frame
taken at a random time reveals nothing about the class:

* textures, colours, shapes, object counts and sizes are drawn from the same distributions
  for every class;
* translation wraps around the frame edges (the image is a torus), so object positions are
  uniform in *every* frame whatever the direction; rotating and zooming objects sit at uniform
  random positions too;
* object angles are uniform in every frame (random start angles for every class);
* object sizes are drawn (log-uniform) at the middle frame for every class, so zoom in and zoom
  out give the same size distribution over a video, mirrored in time.  (Any monotone zoom makes
  the *first* frame's sizes depend on the direction; the middle frame's do not.)

Horizontal flipping swaps ``move_left``/``move_right`` and ``rotate_cw``/``rotate_ccw``, so
training on this data set must not use flip augmentation (the synthetic recipes turn it off).
Generation is deterministic: the video ``(class c, index i)`` depends only on ``(seed, c, i)``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, InputShapeError

CLASSES: Tuple[str, ...] = ("move_right", "move_left", "move_up", "move_down",
                            "rotate_cw", "rotate_ccw", "zoom_in", "zoom_out")
GENERATOR_VERSION = 1

# Motion magnitudes, per frame, relative to a 64-pixel frame (scaled with ``size``).
SPEED_PX = (1.5, 2.5)            # translation, pixels per frame at size 64
OMEGA_DEG = (8.0, 14.0)          # rotation, degrees per frame
ZOOM_RATE = (0.03, 0.042)        # zoom, change of log(radius) per frame
RADIUS_FRAC = (0.12, 0.18)       # object radius at the middle frame, fraction of the frame side
OBJECTS = (2, 3)                 # objects per video (inclusive range), all making the class's motion
SHAPE_AMPLITUDES = (0.05, 0.35, 0.15, 0.08, 0.04)   # max. radial harmonics 1-5 of the outlines
# Value ranges: dim backgrounds, bright objects.  A consistent contrast polarity lets a small
# network learn motion quickly (with objects and backgrounds from one distribution it mostly
# memorises appearance); it is the same for every class, so it tells nothing about the class.
BACKGROUND_RANGE = (0.0, 0.45)
OBJECT_RANGE = (0.55, 1.0)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled ``cells x cells`` Gaussian noise, ``size x size``, zero-mean unit-ish."""
    grid = rng.standard_normal((cells + 1, cells + 1))
    pos = np.linspace(0, cells, size, endpoint=False)
    i0 = np.floor(pos).astype(int)
    f = pos - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def random_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random colour texture, ``size x size x 3`` float32 in [0, 1].

    Mixture of smooth noise at two scales, a random oriented grating and fine noise, mapped
    through a random three-colour palette.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    fields = []
    for _ in range(2):
        angle = rng.uniform(0, math.pi)
        freq = rng.uniform(2.0, 7.0)
        grating = np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle))
                         + rng.uniform(0, 2 * math.pi))
        field = (rng.uniform(0.3, 1.0) * _smooth_noise(rng, size, int(rng.integers(2, 5)))
                 + rng.uniform(0.2, 0.8) * _smooth_noise(rng, size, int(rng.integers(6, 12)))
                 + rng.uniform(0.0, 0.9) * grating
                 + 0.15 * rng.standard_normal((size, size)))
        fields.append(np.tanh(field))
    palette = rng.uniform(0.0, 1.0, size=(3, 3))
    w0 = (fields[0] + 1) / 2
    w1 = (fields[1] + 1) / 2
    img = (palette[0] * (w0 * w1)[..., None] + palette[1] * ((1 - w0) * w1)[..., None]
           + palette[2] * (1 - w1)[..., None])
    return np.clip(img, 0, 1).astype(np.float32)


def _bilinear(tex: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    n = tex.shape[0]
    r = np.clip(r, 0, n - 1.001)
    c = np.clip(c, 0, n - 1.001)
    r0, c0 = np.floor(r).astype(int), np.floor(c).astype(int)
    fr, fc = (r - r0)[..., None], (c - c0)[..., None]
    top = tex[r0, c0] * (1 - fc) + tex[r0, c0 + 1] * fc
    bottom = tex[r0 + 1, c0] * (1 - fc) + tex[r0 + 1, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


class _Object:
    """One textured blob: texture, radial shape, centre / angle / radius at the middle frame."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        lo, hi = OBJECT_RANGE
        self.texture = (lo + (hi - lo) * random_texture(rng, 64)).astype(np.float32)
        # radial shape r(phi) = 1 + sum_k a_k cos(k phi + p_k): an asymmetric random blob
        self.ks = np.arange(1, 6)
        self.amps = rng.uniform(0, 1, size=5) * np.asarray(SHAPE_AMPLITUDES)
        self.phases = rng.uniform(0, 2 * math.pi, size=5)
        self.center = rng.uniform(0, size, size=2)            # (x, y), uniform on the torus
        self.angle = rng.uniform(0, 2 * math.pi)
        self.radius = math.exp(rng.uniform(math.log(RADIUS_FRAC[0]), math.log(RADIUS_FRAC[1]))) * size

    def draw(self, frame: np.ndarray, xx: np.ndarray, yy: np.ndarray, size: int, shift: np.ndarray,
             turn: float, zoom: float) -> np.ndarray:
        cx, cy = self.center + shift
        theta = self.angle + turn
        radius = self.radius * zoom
        # toroidal offsets from the object centre, in object units
        dx = (np.mod(xx - cx + size / 2, size) - size / 2) / radius
        dy = (np.mod(yy - cy + size / 2, size) - size / 2) / radius
        cos, sin = math.cos(theta), math.sin(theta)
        u = cos * dx + sin * dy
        v = -sin * dx + cos * dy
        rho = np.sqrt(u * u + v * v)
        phi = np.arctan2(v, u)
        boundary = 1.0 + (self.amps * np.cos(self.ks * phi[..., None] + self.phases)).sum(-1)
        depth = (boundary - rho) * radius          # pixels inside the outline
        alpha = np.clip(depth + 0.5, 0.0, 1.0)[..., None]
        if not (alpha > 0).any():
            return frame
        n = self.texture.shape[0]
        obj = _bilinear(self.texture, (v + 1.5) / 3.0 * (n - 1), (u + 1.5) / 3.0 * (n - 1))
        return frame * (1 - alpha) + obj * alpha


class _Scene:
    """One video's random content: background, objects, and the class's motion parameters.

    All objects of a video make the same motion (each turns or zooms about its own centre),
    with one random speed per video.
    """

    def __init__(self, rng: np.random.Generator, label: str, size: int, frames: int) -> None:
        self.size, self.frames, self.label = size, frames, label
        lo, hi = BACKGROUND_RANGE
        self.background = (lo + (hi - lo) * random_texture(rng, size)).astype(np.float32)
        count = int(rng.integers(OBJECTS[0], OBJECTS[1] + 1))
        self.objects = [_Object(rng, size) for _ in range(count)]
        scale = size / 64.0
        self.velocity = np.zeros(2)
        self.omega = 0.0
        self.zoom = 0.0
        speed = rng.uniform(*SPEED_PX) * scale
        omega = math.radians(rng.uniform(*OMEGA_DEG))
        zoom = rng.uniform(*ZOOM_RATE)
        motion = {
            "move_right": ("v", (speed, 0.0)), "move_left": ("v", (-speed, 0.0)),
            "move_up": ("v", (0.0, -speed)), "move_down": ("v", (0.0, speed)),
            # image y points down, so a positive angle turns x towards y: clockwise on screen
            "rotate_cw": ("w", omega), "rotate_ccw": ("w", -omega),
            "zoom_in": ("z", zoom), "zoom_out": ("z", -zoom),
        }
        if label not in motion:
            raise ConfigError(f"unknown synthetic class {label!r}; known: {list(CLASSES)}")
        kind, value = motion[label]
        if kind == "v":
            self.velocity = np.asarray(value)
        elif kind == "w":
            self.omega = float(value)
        else:
            self.zoom = float(value)
        self.noise_seed = int(rng.integers(2 ** 31))

    def render(self, t: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        dt = t - (self.frames - 1) / 2.0
        shift = self.velocity * dt
        turn = self.omega * dt
        zoom = math.exp(self.zoom * dt)
        frame = self.background
        for obj in self.objects:
            frame = obj.draw(frame, xx, yy, self.size, shift, turn, zoom)
        return frame


def render_video(label: str, rng: np.random.Generator, size: int = 64, frames: int = 32) -> np.ndarray:
    """Frames (``frames x size x size x 3`` uint8 RGB) of one synthetic video of class ``label``."""
    scene = _Scene(rng, label, size, frames)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    noise = np.random.default_rng(scene.noise_seed)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        frame = scene.render(t, yy, xx) + noise.normal(0.0, 0.01, size=(size, size, 3))
        out[t] = np.clip(np.round(frame * 255.0), 0, 255).astype(np.uint8)
    return out


def write_mp4(path: Union[str, Path], frames: np.ndarray, fps: int = 16, crf: int = 15) -> None:
    """Encode ``T x H x W x 3`` uint8 RGB frames as H.264 (yuv420p) with PyAV; atomic."""
    import av

    from ..fileio import atomic_path

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputShapeError(f"expected T x H x W x 3 uint8 frames, got {frames.shape} {frames.dtype}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise InputShapeError(f"H.264 yuv420p needs even frame sizes, got {width}x{height}")
    target = Path(path)
    with atomic_path(target) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps))
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def video_rng(seed: int, class_index: int, index: int) -> np.random.Generator:
    """The random generator of video ``index`` of class ``class_index`` (order-independent)."""
    return np.random.default_rng([int(seed), GENERATOR_VERSION, int(class_index), int(index)])


def iter_videos(videos_per_class: int, seed: int, size: int = 64, frames: int = 32,
                classes: Sequence[str] = CLASSES) -> Iterator[Tuple[str, int, np.ndarray]]:
    """Yield ``(class name, index, frames)`` for every video, classes interleaved."""
    for index in range(videos_per_class):
        for ci, label in enumerate(classes):
            class_index = CLASSES.index(label) if label in CLASSES else ci
            yield label, index, render_video(label, video_rng(seed, class_index, index), size, frames)


def _check_arguments(classes: Optional[Sequence[str]], videos_per_class: int, size: int, frames: int,
                     test_fraction: float) -> Tuple[str, ...]:
    """The classes to write (default: all); a bad argument is a :class:`~video3d_zoo.errors.ConfigError`."""
    classes = tuple(classes) if classes is not None else CLASSES
    unknown = [c for c in classes if c not in CLASSES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ConfigError(f"classes must be distinct names from {list(CLASSES)}, got {list(classes)}")
    if isinstance(videos_per_class, bool) or not isinstance(videos_per_class, int) or videos_per_class < 1:
        raise ConfigError(f"videos_per_class must be a positive integer, got {videos_per_class!r}")
    if size < 16 or size % 2:
        raise ConfigError(f"size must be an even number >= 16, got {size!r}")
    if frames < 2:
        raise ConfigError(f"frames must be >= 2, got {frames!r}")
    if not 0.0 <= test_fraction <= 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1], got {test_fraction!r}")
    return classes


def _write_index(out: Path, classes: Sequence[str], splits: Dict[str, List[str]], meta: dict) -> None:
    """``classes.txt``, the split lists and, last (it marks a complete data set), ``synthetic.json``."""
    from ..fileio import write_json_atomic, write_text_atomic

    write_text_atomic(out / "classes.txt", "".join(f"{c}\n" for c in classes))
    for name, items in splits.items():
        write_text_atomic(out / f"{name}.txt", "".join(f"{p}\n" for p in sorted(items)))
    write_json_atomic(out / "synthetic.json", meta)


def make_synthetic(out_dir: Union[str, Path], videos_per_class: int = 100, seed: int = 0, *,
                   size: int = 64, frames: int = 32, fps: int = 16, test_fraction: float = 0.25,
                   classes: Optional[Sequence[str]] = None, crf: int = 15,
                   progress: bool = False) -> Path:
    """Write the synthetic motion data set to ``out_dir`` and return it.

    Args:
        out_dir: output folder (created; existing videos of the same names are replaced).
        videos_per_class: videos of each class.
        seed: the data set's seed; any other seed gives new, disjoint-looking videos.
        size: frame side in pixels (square frames; even).
        frames: frames per video.
        fps: frame rate stored in the mp4 files.
        test_fraction: share of each class's videos listed in ``test.txt`` (the rest in
            ``train.txt``); ``1.0`` puts everything in ``test.txt`` (an evaluation-only set).
        classes: a subset of :data:`CLASSES` (default: all eight).
        crf: x264 quality (lower = better; 15 keeps the textures crisp).
        progress: show a tqdm progress bar.

    Files: see the module docstring.  The video of (seed, class, index) is the same whatever
    ``videos_per_class`` or ``classes`` are.
    """
    classes = _check_arguments(classes, videos_per_class, size, frames, test_fraction)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_test = int(round(videos_per_class * test_fraction))
    splits: Dict[str, List[str]] = {"train": [], "test": []}
    iterator = iter_videos(videos_per_class, seed, size, frames, classes)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=videos_per_class * len(classes), desc="make-synthetic", unit="video")
    for label, index, video in iterator:
        rel = f"{label}/{label}_s{seed}_{index:04d}.mp4"
        (out / label).mkdir(exist_ok=True)
        write_mp4(out / rel, video, fps=fps, crf=crf)
        # the last n_test indices of every class form the held-out split
        splits["test" if index >= videos_per_class - n_test else "train"].append(rel)
    meta = {"generator": "video3d_zoo.jobs.synthetic", "version": GENERATOR_VERSION, "seed": seed,
            "videos_per_class": videos_per_class, "size": size, "frames": frames, "fps": fps,
            "test_fraction": test_fraction, "classes": list(classes),
            "train_videos": len(splits["train"]), "test_videos": len(splits["test"])}
    _write_index(out, classes, splits, meta)
    return out

