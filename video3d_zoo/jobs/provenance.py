"""What made each feature file: the record stored in every ``.npz`` and the rerun decision.

Every output of :func:`~video3d_zoo.jobs.extract.run_extraction` stores, next to ``features`` and
``timestamps``, string (JSON) and integer arrays that identify what produced it:

* ``format_version``: the layout of this record (:data:`FORMAT_VERSION`);
* ``source``: the video's absolute ``path``, ``size``, ``mtime_ns`` and a content ``digest``
  with the ``digest_method`` used (:func:`source_identity`);
* ``model`` (id), ``weights_digest`` (sha256 of the network's state_dict, :func:`weights_digest`)
  and ``inference_options`` (precision / BN folding / compile of a fast-path model, else ``{}``);
* ``layer``, ``clip_protocol`` (the resolved :meth:`ClipProtocol.to_dict`) and ``input_spec``
  (the preprocessing really applied, resize grown for a larger crop included);
* ``decode_report`` (frames decoded against announced, partial decode, still image),
  ``video_info`` (the video as a player shows it: ``width``, ``height``, ``fps``, ``num_frames``,
  ``rotation``, ``duration_s``, ``codec``; :func:`video_info`), ``package_version``, and the
  readable ``video``, ``clip_len`` and ``stride``.

A rerun keeps a file only when every key of :data:`IDENTITY_KEYS` is equal to what this run
would write (:func:`compare_record`); anything else is recomputed, and the reason says which
keys differ.  ``decode_report``, ``video_info`` and ``package_version`` are information, not identity,
and so is ``execution`` (a compiled model's only): whether the video's batches ran ``"eager"``,
``"compiled"`` or both - the first ``--compile`` run serves its first batches eagerly while another
process builds the library (:mod:`video3d_zoo.inference.background`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch

FORMAT_VERSION = 2
IDENTITY_KEYS = ("format_version", "source", "model", "weights_digest", "inference_options", "layer",
                 "clip_protocol", "input_spec")
# Files up to this size are hashed whole; larger ones by their size, first and last MiB, so
# a rerun over a large collection reads at most 2 MiB per video to recognise its files.
_EDGE = 1 << 20
FULL_DIGEST_LIMIT = 2 * _EDGE


def dumps(value) -> str:
    """Canonical JSON (sorted keys, no NaN), so equal records give equal strings."""
    return json.dumps(value, sort_keys=True, allow_nan=False)


def package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("video3d-zoo")
    except metadata.PackageNotFoundError:
        return "unknown"


def _file_digest(path: Path, size: int) -> Tuple[str, str]:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= FULL_DIGEST_LIMIT:
            for block in iter(lambda: fh.read(_EDGE), b""):
                digest.update(block)
            return "sha256:" + digest.hexdigest(), "sha256 of the whole file"
        digest.update(str(size).encode() + b"\0" + fh.read(_EDGE))
        fh.seek(size - _EDGE)
        digest.update(fh.read(_EDGE))
    return "sha256:" + digest.hexdigest(), "sha256 of the size, the first MiB and the last MiB"


def source_identity(path: os.PathLike) -> dict:
    """``path`` (absolute), ``size``, ``mtime_ns``, ``digest`` and ``digest_method`` of a file.

    Raises :class:`OSError` when the file cannot be read.
    """
    path = Path(path).absolute()
    stat = path.stat()
    if not path.is_file():
        raise IsADirectoryError(f"{path}: not a regular file")
    digest, method = _file_digest(path, stat.st_size)
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "digest": digest,
            "digest_method": method}


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the network's state_dict: every key, dtype, shape and the raw values.

    An :class:`~video3d_zoo.inference.prepare.InferenceModel` hashes its prepared network once and
    keeps the result (its private copy does not change after preparation).
    """
    if callable(getattr(model, "weights_digest", None)):
        return model.weights_digest()
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        if flat.numel():
            digest.update(memoryview(flat.view(torch.uint8).numpy()))  # the bytes, hashed in place
    return "sha256:" + digest.hexdigest()


def inference_options(model) -> dict:
    options = getattr(model, "options", None)
    if not dataclasses.is_dataclass(options):
        return {}
    recorded = dataclasses.asdict(options)
    if not recorded.get("compile"):  # the batch size shapes only compiled entry points: an eager rerun
        recorded.pop("batch_size", None)  # with another --batch-size computes the same features
    return recorded


def run_record(model, model_name: str, layer: str, protocol, spec_dict: dict, spec) -> Dict[str, object]:
    """The part of the record shared by every video of a run (weights hashed here, once)."""
    clip = protocol.to_dict(spec)
    return {"format_version": FORMAT_VERSION, "model": model_name, "weights_digest": weights_digest(model),
            "inference_options": dumps(inference_options(model)), "layer": layer,
            "clip_protocol": dumps(clip), "input_spec": dumps(spec_dict),
            "clip_len": clip["clip_len"], "stride": clip["stride"], "package_version": package_version()}


def video_record(run: Dict[str, object], source: dict) -> Dict[str, object]:
    return {**run, "source": dumps(source), "video": source["path"]}


def video_info(path: os.PathLike, report: dict) -> dict:
    """The decoded video's upright ``width`` x ``height``, source ``fps``, ``num_frames``, ``rotation``, ...

    ``num_frames`` is the count of frames decoded (``num_frames_source`` ``"decoded"``) when the
    whole video decoded, else the container's figure (:func:`~video3d_zoo.io.decode.probe_video`).
    """
    from ..errors import Video3DZooError
    from ..io.decode import probe_video

    try:
        info = probe_video(path)
    except (Video3DZooError, OSError) as exc:  # decoded a moment ago: only a file changed meanwhile gets here
        return {"error": str(exc)}
    whole = report.get("frames") and not report.get("partial")
    return {"width": info.width, "height": info.height, "fps": info.fps, "rotation": info.rotation,
            "num_frames": int(report["frames"]) if whole else info.num_frames,
            "num_frames_source": "decoded" if whole else info.num_frames_source,
            "duration_s": info.duration_s, "codec": info.codec}


def read_record(path: Path) -> Dict[str, str]:
    """The metadata strings of an existing output (features are not loaded)."""
    keys = IDENTITY_KEYS + ("decode_report",)
    with np.load(path, allow_pickle=False) as data:
        return {k: str(data[k]) for k in keys if k in data.files}


def compare_record(path: Path, record: Dict[str, object]) -> Tuple[Optional[str], Dict[str, str]]:
    """``(None, stored)`` when ``path`` was made exactly as ``record`` would be, else ``(reason, stored)``."""
    try:
        stored = read_record(path)
    except Exception as exc:  # a damaged or foreign file is recomputed, never trusted
        return f"unreadable ({type(exc).__name__}: {exc})", {}
    if "format_version" not in stored:
        return "no provenance record (written by an older version)", stored
    changed = [k for k in IDENTITY_KEYS if stored.get(k) != str(record[k])]
    if not changed:
        return None, stored
    return "changed: " + ", ".join(_describe_change(k, stored.get(k), record[k]) for k in changed), stored


def _describe_change(key: str, old: Optional[str], new) -> str:
    if key != "source" or old is None:
        return key
    try:
        before, after = json.loads(old), json.loads(str(new))
    except ValueError:
        return key
    fields = [f for f in ("path", "size", "mtime_ns", "digest") if before.get(f) != after.get(f)]
    return f"source {'/'.join(fields)}" if fields else "source"


def stored_report(stored: Dict[str, str]) -> dict:
    """The ``decode_report`` of an existing output as a dict (empty when absent)."""
    try:
        return json.loads(stored.get("decode_report", "{}"))
    except ValueError:
        return {}
