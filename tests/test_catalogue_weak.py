"""Catalogue of issue 20's weak cases: each ends in one clear error line, and nothing is half-written.

Every bad input is built here, small: random bytes and text posing as a ``.pth``, pickles that
would run code (a marker file shows they did not), complex and integer weights, a missing key,
hand-written legacy and zip checkpoints declaring storages their file cannot hold, a config.json
nested 100,000 deep, a disk that fills during ``extract``, a folder holding ``.ts`` videos and
other files, and an earlier ``.npz`` whose video turned bad.  Each case asserts the error class
and message (library), the exit status and the one ``video3d-zoo CMD: error:`` line (command
line), and that nothing outside the output folder changed and no partial file remains.
"""

from __future__ import annotations

import errno
import io
import json
import pickle
import random
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, Tuple

import numpy as np
import pytest
import torch

import video3d_zoo
from video3d_zoo import create_model, from_pretrained, save_pretrained
from video3d_zoo.cli.commands import main as cli_main
from video3d_zoo.errors import CheckpointError, ConfigError, DiskFullError, ManifestError, UnsafeCheckpointError
from video3d_zoo.fileio import write_json_atomic
from video3d_zoo.jobs.classify import run_classify
from video3d_zoo.weights.manifest import load_manifest
from video3d_zoo.weights.pickle_scan import LEGACY_MAGIC

from videos import write_video

ARCH, KW, CLASSES = "resnet3d_10", {"widen_factor": 0.125}, 3
pytestmark = pytest.mark.filterwarnings("ignore:.*pickle protocol:UserWarning")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = create_model(ARCH, num_classes=CLASSES, **KW).eval()
    spec = model.config.input_spec.replace(frames=8, crop_size=32, resize=32)
    model.config = model.config.replace(labels=("a", "b", "c"), input_spec=spec)
    return model


def tiny_sd(model) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.clone()) for k, v in model.state_dict().items())


def run_cli(capsys, *args) -> Tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = cli_main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str, command: str, *phrases: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"video3d-zoo {command}: error: "), err
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} not in {lines[0]}"
    return lines[0]


def snapshot(root: Path, skip: Path = None) -> Dict[str, bytes]:
    """Every file under ``root`` (outside ``skip``) with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and (skip is None or skip not in p.parents)}


def partial_files(root: Path) -> list:
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".probe"))]


# -- hand-written torch.save files ---------------------------------------------------------------
class _Storage:
    def __init__(self, numel: int) -> None:
        self.numel = numel


class _Tensor:
    """Pickles as torch.save pickles a float tensor: a rebuild call over a persistent storage."""

    def __init__(self, numel: int) -> None:
        self.storage = _Storage(numel)

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, (self.storage.numel,), (1,), False, OrderedDict()))


def _pickled(obj, storage_id: Callable) -> bytes:
    class Pickler(pickle.Pickler):
        def persistent_id(self, value):
            return storage_id(value) if isinstance(value, _Storage) else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def legacy_file(path: Path, declared: int, held: int = 4) -> Path:
    """The legacy layout: magic, protocol, system info, the object, the storage keys, the storage bytes."""
    with open(path, "wb") as fh:
        for value in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                           "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(value, fh, protocol=2)
        fh.write(_pickled({"w": _Tensor(declared)}, lambda s: ("storage", torch.FloatStorage, "0", "cpu",
                                                                 s.numel, None)))
        pickle.dump(["0"], fh, protocol=2)
        fh.write(struct.pack("<q", held) + bytes(4 * held))
    return path


def zip_file(path: Path, declared: int, held: int = 4) -> Path:
    """The zip layout: ``archive/data.pkl`` and one ``archive/data/<key>`` record per storage."""
    data = _pickled({"w": _Tensor(declared)}, lambda s: ("storage", torch.FloatStorage, "0", "cpu", s.numel))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, content in (("data.pkl", data), ("byteorder", b"little"), ("data/0", bytes(4 * held)),
                              ("version", b"3\n")):
            zf.writestr(f"archive/{name}", content)
    return path


def test_the_hand_written_files_are_what_torch_load_reads(tmp_path):
    """The forgeries below differ from these only in the declared size."""
    for writer in (legacy_file, zip_file):
        loaded = torch.load(writer(tmp_path / f"{writer.__name__}.pth", 4), weights_only=True)
        assert torch.equal(loaded["w"], torch.zeros(4))


# -- bad checkpoints: every load path and `convert` --------------------------------------------------
class Marker:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@dataclass
class Bad:
    id: str
    error: type
    phrases: Tuple[str, ...]
    make: Callable  # (tmp_path, tiny, marker) -> the bad file or folder
    before_load: bool = True  # refused before torch.load is called


def _random_bytes(tmp, tiny, marker):
    (tmp / "random.pth").write_bytes(random.Random(0).randbytes(4096))
    return tmp / "random.pth"


def _text(tmp, tiny, marker):
    (tmp / "notes.pth").write_text("these are my notes, not weights\n" * 40)
    return tmp / "notes.pth"


def _code(layout):
    def make(tmp, tiny, marker):
        path, obj = tmp / f"evil_{layout}.pth", {"state_dict": tiny_sd(tiny), "optimizer": Marker(marker)}
        if layout == "pickle":
            path.write_bytes(pickle.dumps(obj, protocol=2))
        else:
            torch.save(obj, path, _use_new_zipfile_serialization=layout == "zip")
        return path
    return make


class ThroughTorch:
    """A global under ``torch.`` that torch's weights-only unpickler still refuses."""

    def __reduce__(self):
        return (torch.hub.load, ("someone/repo", "model"))


def _code_through_torch(tmp, tiny, marker):
    torch.save({"state_dict": tiny_sd(tiny), "extra": ThroughTorch()}, tmp / "hub_call.pth")
    return tmp / "hub_call.pth"


def _weight(key, dtype):
    def make(tmp, tiny, marker):
        sd = tiny_sd(tiny)
        sd[key] = sd[key].to(dtype)
        torch.save(sd, tmp / "typed.pth")
        return tmp / "typed.pth"
    return make


def _missing(tmp, tiny, marker):
    sd = tiny_sd(tiny)
    del sd["layer1.0.conv1.weight"]
    torch.save({"epoch": 3, "state_dict": sd}, tmp / "missing.pth")
    return tmp / "missing.pth"


def _missing_head(tmp, tiny, marker):
    sd = tiny_sd(tiny)
    del sd["fc.weight"]  # the tensor the architecture is read from: found missing while recognising it
    torch.save(sd, tmp / "no_head.pth")
    return tmp / "no_head.pth"


def _legacy_cut(at):
    def make(tmp, tiny, marker):
        path = tmp / "cut.pth"
        torch.save(tiny_sd(tiny), path, _use_new_zipfile_serialization=False)
        path.write_bytes(path.read_bytes()[:at(path.stat().st_size)])
        return path
    return make


def _zip_bomb(tmp, tiny, marker):
    path = tmp / "bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("archive/data/0", bytes(8 << 20))  # 8 MiB of zeros: ~8 KiB deflated
    return path


def _deep_config(tmp, tiny, marker):
    folder = save_pretrained(tiny, tmp / "deep")
    depth = 100_000
    (folder / "config.json").write_text('{"architecture": ' + "[" * depth + "]" * depth + "}")
    return folder


BAD = [
    Bad("random_bytes", CheckpointError, ("not a checkpoint: neither a zip archive nor a pickle",), _random_bytes),
    Bad("text", CheckpointError, ("not a checkpoint: neither a zip archive nor a pickle",), _text),
    *[Bad(f"runs_code_{layout}", UnsafeCheckpointError,
          ("this file runs code when unpickled (imports io.open): refused",), _code(layout))
      for layout in ("legacy", "zip", "pickle")],
    Bad("runs_code_through_torch", UnsafeCheckpointError,
        ("refused - unpickling it needs torch.hub.load, which torch.load(weights_only=True) does not allow",),
        _code_through_torch, before_load=False),
    Bad("complex64_weight", CheckpointError, ("fc.weight is complex64 (expected floating point",),
        _weight("fc.weight", torch.complex64), before_load=False),
    Bad("int64_weight", CheckpointError, ("conv1.weight is int64 (expected floating point",),
        _weight("conv1.weight", torch.int64), before_load=False),
    Bad("missing_key", CheckpointError, ("missing tensor(s) 'layer1.0.conv1.weight'", "a resnet3d checkpoint",
                                         "kenshohara2020 layout"), _missing, before_load=False),
    Bad("missing_head", CheckpointError, ("expected tensor 'fc.weight' is missing from the checkpoint",),
        _missing_head, before_load=False),
    Bad("legacy_declares_6GiB", CheckpointError, ("refused before reading", "(FloatStorage, 6.0 GiB)"),
        lambda tmp, *_: legacy_file(tmp / "huge.pth", (6 << 30) // 4)),
    Bad("legacy_declares_more_than_it_holds", CheckpointError,
        ("refused before reading", "declare 1.0 GiB of storage", "the file holds 24 bytes"),
        lambda tmp, *_: legacy_file(tmp / "short.pth", (1 << 30) // 4)),
    Bad("zip_declares_more_than_its_record", CheckpointError,
        ("refused before reading", "storage 0 declares 1.0 GiB, its record holds 16 bytes"),
        lambda tmp, *_: zip_file(tmp / "short.pth", (1 << 30) // 4)),
    Bad("legacy_cut_in_its_pickle", CheckpointError, ("truncated or corrupt", "pickle breaks off"),
        _legacy_cut(lambda size: 300)),
    Bad("legacy_cut_in_its_tensors", CheckpointError, ("refused before reading", "truncated, or a forged size"),
        _legacy_cut(lambda size: size // 2)),
    Bad("zip_bomb", CheckpointError, ("refused before unpacking", "a zip bomb?"), _zip_bomb),
    Bad("config_nested_100000_deep", ConfigError, ("config.json", "nested more than 32 levels deep"), _deep_config),
]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_checkpoint_is_one_line_and_nothing_is_written(case, tiny, tmp_path, capsys, monkeypatch):
    inputs, marker = tmp_path / "in", tmp_path / "marker"
    inputs.mkdir()
    src = case.make(inputs, tiny, marker)
    if case.before_load:
        def no_load(*args, **kwargs):
            raise AssertionError("torch.load was reached")
        monkeypatch.setattr(torch, "load", no_load)
    before = snapshot(tmp_path)
    for load in (lambda: from_pretrained(src), lambda: create_model(ARCH, pretrained=str(src))):
        with pytest.raises(case.error) as info:
            load()
        assert all(phrase in str(info.value) for phrase in case.phrases), str(info.value)
        assert str(src) in str(info.value), "the error names the file it is about"
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "convert", src, "-o", out)
    assert code == 2 and stdout == ""
    one_error_line(err, "convert", *case.phrases)
    assert not out.exists() and not marker.exists()
    assert snapshot(tmp_path) == before


def test_other_float_precisions_load_as_the_models(tiny, tmp_path):
    sd = tiny_sd(tiny)
    sd["fc.weight"], sd["conv1.weight"] = sd["fc.weight"].half(), sd["conv1.weight"].double()
    torch.save(sd, tmp_path / "mixed.pth")
    model = from_pretrained(tmp_path / "mixed.pth")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.equal(model.fc.weight, tiny.fc.weight.half().float())
    model(torch.randn(1, 3, 8, 32, 32))  # the first forward pass runs


def test_a_deep_manifest_is_one_line(tmp_path, capsys, monkeypatch):
    path = tmp_path / "manifest.json"
    path.write_text('{"schema_version": 1, "entries": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ManifestError, match="nested more than 32 levels deep"):
        load_manifest(path)
    monkeypatch.setenv("VIDEO3D_ZOO_MANIFEST", str(path))
    code, _, err = run_cli(capsys, "list-pretrained")
    assert code == 2
    one_error_line(err, "list-pretrained", "nested more than 32 levels deep")


# -- extraction: disk full, folder search, stale outputs ------------------------------------------
@pytest.fixture(scope="module")
def weights(tiny, tmp_path_factory):
    return save_pretrained(tiny, tmp_path_factory.mktemp("weights") / "tiny")


@pytest.fixture
def videos(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "a.mp4", 8, 32, 32)
    write_video(root / "b.ts", 8, 32, 32, kind="ts")
    return root


def extract(capsys, weights, inputs, out, *extra):
    return run_cli(capsys, "extract", inputs, "--weights", weights, "-o", out, "--quiet", "--no-overlap", *extra)


def _fill_the_disk_on_call(n: int, monkeypatch) -> None:
    """``np.savez`` writes part of its file, then fails as a full disk does, from its ``n``-th call on."""
    real, calls = np.savez, []

    def savez(fh, *args, **kwargs):
        calls.append(1)
        if len(calls) < n:
            return real(fh, *args, **kwargs)
        fh.write(b"PK\x03\x04 half a file")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "savez", savez)


def test_disk_full_during_extract_is_one_line_and_leaves_no_partial_file(weights, videos, tmp_path, capsys,
                                                                         monkeypatch):
    out = tmp_path / "out"
    before = snapshot(tmp_path, skip=out)
    _fill_the_disk_on_call(2, monkeypatch)
    code, _, err = extract(capsys, weights, videos, out)
    assert code == 2
    line = one_error_line(err, "extract", f"disk full while writing {out / 'b.ts.npz'}", "No space left on device",
                          "partial file was removed", "1 earlier video of this run already written completely")
    assert "internal error" not in line
    assert sorted(snapshot(out)) == ["a.mp4.npz"] and partial_files(out) == []
    assert snapshot(tmp_path, skip=out) == before
    monkeypatch.undo()  # space again: the rerun skips a.mp4 and writes b.ts
    code, text, _ = extract(capsys, weights, videos, out)
    assert code == 0 and "1 extracted (1 new, 0 recomputed), 1 up to date" in text


def test_disk_full_in_an_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = write_json_atomic(tmp_path / "record.json", {"old": True})

    def fill(self, text, *args, **kwargs):
        with open(self, "w") as fh:
            fh.write(text[:3])
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    monkeypatch.setattr(Path, "write_text", fill)
    with pytest.raises(DiskFullError, match=f"disk full while writing {target} .Disk quota exceeded.") as info:
        write_json_atomic(target, {"new": True})
    assert info.value.errno == errno.EDQUOT and isinstance(info.value, OSError)
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": True} and sorted(tmp_path.iterdir()) == [target]


def test_a_folder_search_takes_ts_videos_and_names_what_it_skipped(weights, videos, tmp_path, capsys):
    (videos / "notes.txt").write_text("not a video")
    (videos / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    out = tmp_path / "out"
    code, text, _ = extract(capsys, weights, videos, out)
    assert code == 0 and "2 extracted (2 new, 0 recomputed)" in text
    assert sorted(snapshot(out)) == ["a.mp4.npz", "b.ts.npz"]
    assert (f"skipped 2 file(s) under the input folders, not videos by extension (.jpg, .txt): "
            f"{videos / 'cover.jpg'}, {videos / 'notes.txt'}") in text
    # classify reads folders the same way, and names the skipped files on stderr
    fake = SimpleNamespace(decode_report=None, num_clips=1, top=[("a", 1.0)], notes=[])
    assert run_classify([str(videos)], lambda video: fake, as_json=True) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["video"] for line in captured.out.splitlines()] == [
        str((videos / "a.mp4").resolve()), str((videos / "b.ts").resolve())]
    assert "skipped 2 file(s)" in captured.err and str(videos / "notes.txt") in captured.err


def test_the_package_has_one_list_of_video_extensions():
    from video3d_zoo.io import VIDEO_EXTENSIONS
    from video3d_zoo.jobs import extract_plan
    from video3d_zoo.train import annotations, readers

    assert extract_plan.VIDEO_EXTENSIONS is VIDEO_EXTENSIONS
    assert annotations.VIDEO_EXTENSIONS is VIDEO_EXTENSIONS and readers.VIDEO_EXTENSIONS is VIDEO_EXTENSIONS
    assert {".ts", ".mts", ".m2ts", ".mp4", ".avi", ".webm"} <= set(VIDEO_EXTENSIONS)
    package = Path(video3d_zoo.__file__).parent
    defining = [p.relative_to(package).as_posix() for p in package.rglob("*.py")
                if '".avi"' in p.read_text(encoding="utf-8")]
    assert defining == ["io/decode.py"]


def test_a_failed_videos_earlier_npz_is_moved_aside_and_the_summary_says_so(weights, videos, tmp_path, capsys):
    out = tmp_path / "out"
    assert extract(capsys, weights, videos, out)[0] == 0
    first = snapshot(out)
    (videos / "b.ts").write_bytes(b"\x47" + bytes(2000))  # the video turned bad
    code, text, _ = extract(capsys, weights, videos, out)
    assert code == 1 and "1 up to date (skipped), 1 failed" in text
    assert f"FAILED {(videos / 'b.ts').resolve()}" in text and f"moved aside to {out / 'b.ts.npz.stale'}" in text
    assert "moved 1 earlier output of failed videos aside (.npz.stale)" in text
    assert snapshot(out) == {"a.mp4.npz": first["a.mp4.npz"], "b.ts.npz.stale": first["b.ts.npz"]}
