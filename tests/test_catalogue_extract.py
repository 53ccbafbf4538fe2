"""Catalogue of bad inputs and reruns for feature extraction and classification.

Every case checks three things: the error or report says what happened, the exit status (or
exception) is right, and nothing already written was lost or silently left stale.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import video3d_zoo
from video3d_zoo.jobs import pipeline as pipeline_module
from video3d_zoo.cli.commands import main as cli_main
from video3d_zoo.errors import ConfigError, NonFiniteError
from video3d_zoo.inference.prepare import prepare_network
from video3d_zoo.jobs.extract import run_extraction
from video3d_zoo.jobs.features import classify_video, extract_features
from video3d_zoo.jobs.provenance import IDENTITY_KEYS, weights_digest

from videos import write_video

pytestmark = pytest.mark.filterwarnings("ignore:.*truncated file:RuntimeWarning")
LABELS = tuple(f"action_{i}" for i in range(5))


def _tiny(seed: int):
    torch.manual_seed(seed)
    m = video3d_zoo.create_model("resnet3d_10", num_classes=5, widen_factor=0.125).eval()
    spec = m.config.input_spec.replace(frames=8, crop_size=32, resize=32)
    m.config = m.config.replace(labels=LABELS, input_spec=spec)
    return m


@pytest.fixture(scope="module")
def model():
    return _tiny(0)


@pytest.fixture(scope="module")
def weights(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    return {"a": video3d_zoo.save_pretrained(model, root / "a"),
            "b": video3d_zoo.save_pretrained(_tiny(1), root / "b")}


def _png(path: Path, size: int = 24) -> Path:
    """A real PNG picture (grey), written by hand."""
    raw = b"".join(b"\0" + bytes([120, 90, 60]) * size for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("originals")
    (root / "a").mkdir()
    write_video(root / "a" / "clip.mp4", 10, 32, 32)
    write_video(root / "a" / "clip.avi", 10, 32, 32, kind="avi")
    long = write_video(root / "long.mp4", 40, 32, 32, faststart=True).path
    data = long.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "picture.mp4").write_bytes(_png(root / "picture.png").read_bytes())
    return root


@pytest.fixture
def videos(originals, tmp_path):
    root = tmp_path / "videos"
    shutil.copytree(originals / "a", root / "a")
    return root


def run_cli(capsys, *args) -> tuple:
    """``(exit status, stdout, stderr)`` of the CLI run in-process (argparse errors included)."""
    capsys.readouterr()
    try:
        code = cli_main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def extract(capsys, weights_dir, inputs, out, *extra) -> tuple:
    inputs = inputs if isinstance(inputs, list) else [inputs]
    return run_cli(capsys, "extract", *inputs, "--weights", weights_dir, "-o", out, "--quiet", *extra)


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its mtime and content hash."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, hash(p.read_bytes()))
            for p in sorted(folder.rglob("*")) if p.is_file()}


def record(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: str(data[k]) for k in data.files if k not in ("features", "timestamps")}


# ------------------------------------------------------------------ reruns and names
def test_same_stem_different_extension_gives_two_files_with_full_records(model, weights, videos, tmp_path,
                                                                        capsys):
    out = tmp_path / "out"
    code, text, _ = extract(capsys, weights["a"], videos, out)
    assert code == 0, text
    assert sorted(snapshot(out)) == ["a/clip.avi.npz", "a/clip.mp4.npz"]
    assert "2 extracted (2 new, 0 recomputed), 0 up to date" in text
    assert "0 partial decodes, 0 still images" in text
    rec = record(out / "a" / "clip.mp4.npz")
    assert set(IDENTITY_KEYS) | {"decode_report", "video_info", "package_version", "video", "clip_len", "stride"} <= set(rec)
    source = json.loads(rec["source"])
    video = videos / "a" / "clip.mp4"
    assert source["path"] == str(video.resolve()) and source["size"] == video.stat().st_size
    assert source["mtime_ns"] == video.stat().st_mtime_ns and source["digest"].startswith("sha256:")
    assert "whole file" in source["digest_method"]
    # the default run is the fast path (BatchNorm folded): the digest is of the network that ran
    assert rec["weights_digest"] == weights_digest(prepare_network(model)) and rec["layer"] == "pooled"
    assert json.loads(rec["clip_protocol"])["clip_len"] == 8
    assert json.loads(rec["input_spec"])["crop_size"] == 32
    assert json.loads(rec["decode_report"]) == {"frames": 10, "expected": 10, "partial": None,
                                                "still_image": False}


@pytest.mark.parametrize("change,extra,reason", [
    ("unchanged", [], None),
    ("other weights", [], "weights_digest"),
    ("layer", ["--layer", "logits"], "layer"),
    ("clip length", ["--clip-len", "4"], "clip_protocol"),
    ("fast path off", ["--no-fast"], "inference_options"),  # the fast path is the default
    ("source edited", [], "source size/mtime_ns/digest"),
    ("older format", [], "no provenance record"),
])
def test_rerun_skips_only_exact_matches(weights, videos, tmp_path, capsys, change, extra, reason):
    out = tmp_path / "out"
    assert extract(capsys, weights["a"], videos, out)[0] == 0
    weights_dir = weights["b"] if change == "other weights" else weights["a"]
    if change == "source edited":
        write_video(videos / "a" / "clip.mp4", 12, 32, 32)
        os.utime(videos / "a" / "clip.avi")  # a new mtime alone also makes the output stale
    if change == "older format":
        for path in out.rglob("*.npz"):
            np.savez(path, features=np.zeros((1, 4), np.float32), timestamps=np.zeros((1, 2)))
    before = snapshot(out)
    code, text, _ = extract(capsys, weights_dir, videos, out, *extra)
    assert code == 0, text
    after = snapshot(out)
    assert sorted(after) == sorted(before), "no file lost, none added"
    if reason is None:
        assert "0 extracted (0 new, 0 recomputed), 2 up to date (skipped), 0 failed" in text
        assert after == before
        return
    assert "2 extracted (0 new, 2 recomputed), 0 up to date" in text and reason in text
    assert all(after[name] != before[name] for name in after)
    rec = record(out / "a" / "clip.mp4.npz")
    assert rec["layer"] == ("logits" if change == "layer" else "pooled")
    assert json.loads(rec["clip_protocol"])["clip_len"] == (4 if change == "clip length" else 8)
    # ... and the new records are now exact: a third identical run skips everything.
    code, text, _ = extract(capsys, weights_dir, videos, out, *extra)
    assert code == 0 and "2 up to date (skipped)" in text and snapshot(out) == after


def test_large_sources_are_identified_by_size_and_both_ends(tmp_path):
    from video3d_zoo.jobs.provenance import source_identity

    big = tmp_path / "big.mp4"
    big.write_bytes(bytes(3 << 20))
    first = source_identity(big)
    assert "first MiB and the last MiB" in first["digest_method"] and first["size"] == 3 << 20
    big.write_bytes(bytes(3 << 20) + b"x")
    assert source_identity(big)["digest"] != first["digest"]


def test_overwrite_still_forces(weights, videos, tmp_path, capsys):
    out = tmp_path / "out"
    extract(capsys, weights["a"], videos, out)
    before = snapshot(out)
    code, text, _ = extract(capsys, weights["a"], videos, out, "--overwrite")
    assert code == 0 and "2 recomputed" in text and "--overwrite" in text
    assert all(snapshot(out)[k] != v for k, v in before.items())


def test_two_roots_with_the_same_relative_file_are_refused_before_work(weights, originals, tmp_path, capsys):
    roots = [tmp_path / "r1", tmp_path / "r2"]
    for root in roots:
        shutil.copytree(originals / "a", root / "a")
    write_video(roots[1] / "a" / "clip.mp4", 6, 32, 32)  # a different video with the same name
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = extract(capsys, weights["a"], roots, out)
    assert code == 2
    assert "would be shared" in err and str(out / "a" / "clip.mp4.npz") in err
    assert str(roots[0] / "a" / "clip.mp4") in err and str(roots[1] / "a" / "clip.mp4") in err
    assert snapshot(out) == {"keep.txt": snapshot(out)["keep.txt"]}, "nothing written"


def test_list_file_mirrors_its_relative_paths(model, videos, tmp_path):
    listing = videos / "list.txt"
    listing.write_text("a/clip.mp4\n./a/clip.avi\n")
    summary = run_extraction(model, [listing], tmp_path / "out", progress=False)
    assert summary.ok and sorted(snapshot(tmp_path / "out")) == ["a/clip.avi.npz", "a/clip.mp4.npz"]


# ------------------------------------------------------------------ partial decodes and still images
@pytest.mark.parametrize("name,note,counted", [("truncated.mp4", "partial decode", "1 partial decode,"),
                                              ("picture.mp4", "still image", "0 partial decodes, 1 still image")])
@pytest.mark.parametrize("strict", [False, True])
def test_partial_and_still_inputs_are_marked_or_refused(weights, originals, videos, tmp_path, capsys,
                                                        name, note, counted, strict):
    shutil.copy(originals / name, videos / name)
    out = tmp_path / "out"
    code, text, _ = extract(capsys, weights["a"], videos, out, *(["--strict"] if strict else []))
    target = out / f"{name}.npz"
    assert (out / "a" / "clip.mp4.npz").exists() and (out / "a" / "clip.avi.npz").exists()
    if not strict:
        assert code == 0 and counted in text
        report = json.loads(record(target)["decode_report"])
        assert (report["partial"] is not None) == (note == "partial decode")
        assert report["still_image"] == (note == "still image")
        # A later strict run refuses the matching file too, and moves it aside, unchanged.
        before = snapshot(out)
        code, text, _ = extract(capsys, weights["a"], videos, out, "--strict")
        assert code == 1 and note in text and "strict" in text and "moved aside" in text
        after = snapshot(out)
        assert after.pop(f"{name}.npz.stale") == before.pop(f"{name}.npz") and after == before
        return
    assert code == 1 and "1 failed" in text and f"FAILED {(videos / name).resolve()}" in text
    assert note in text and "strict" in text and not target.exists()


def test_classify_reports_partial_decodes(weights, originals, capsys):
    video = originals / "truncated.mp4"
    code, text, _ = run_cli(capsys, "classify", video, "--weights", weights["a"])
    assert code == 0 and "note: partial decode" in text
    code, text, _ = run_cli(capsys, "classify", video, "--weights", weights["a"], "--json")
    result = json.loads(text)
    assert code == 0 and result["decode_report"]["partial"] and result["notes"][0].startswith("partial decode")


# ------------------------------------------------------------------ non-finite outputs
def _nan_on_first_call(original, monkeypatch, module):
    calls = []

    def poisoned(model, batch, layer="pooled"):
        calls.append(1)
        out = original(model, batch, layer)
        return torch.full_like(out, float("nan")) if len(calls) == 1 else out

    monkeypatch.setattr(module, "clip_outputs", poisoned)


def test_nan_features_are_never_written(weights, videos, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert extract(capsys, weights["a"], videos, out)[0] == 0
    before = snapshot(out)
    _nan_on_first_call(pipeline_module.clip_outputs, monkeypatch, pipeline_module)
    code, text, _ = extract(capsys, weights["a"], videos, out, "--layer", "logits", "--batch-size", "1")
    assert code == 1 and "1 failed" in text and "NaN/inf" in text
    failed = (videos / "a" / "clip.avi").resolve()  # first in sorted order: its first clip was poisoned
    assert f"FAILED {failed}" in text and "moved aside" in text
    after = snapshot(out)
    assert "a/clip.avi.npz" not in after, "no stale result beside the fresh ones"
    assert after["a/clip.avi.npz.stale"] == before["a/clip.avi.npz"], "the earlier file is kept aside, untouched"
    assert record(out / "a" / "clip.mp4.npz")["layer"] == "logits"
    assert np.isfinite(np.load(out / "a" / "clip.mp4.npz")["features"]).all()


@pytest.mark.parametrize("as_json", [False, True])
def test_classify_refuses_nan_scores(weights, videos, capsys, monkeypatch, as_json):
    _nan_on_first_call(pipeline_module.clip_outputs, monkeypatch, pipeline_module)
    code, text, err = run_cli(capsys, "classify", videos / "a" / "clip.mp4", "--weights", weights["a"],
                              *(["--json"] if as_json else []))
    assert code == 2 and text == "" and "NaN/inf" in err and len(err.strip().splitlines()) == 1


def test_api_refuses_nan(model, videos, monkeypatch):
    _nan_on_first_call(pipeline_module.clip_outputs, monkeypatch, pipeline_module)
    with pytest.raises(NonFiniteError, match="NaN/inf"):
        classify_video(model, videos / "a" / "clip.mp4")


# ------------------------------------------------------------------ arguments checked before work
@pytest.mark.parametrize("args", [["--batch-size", "0"], ["--clip-len", "0"], ["--stride", "-2"],
                                  ["--fps", "nan"], ["--fps", "0"], ["--workers", "-1"], ["--batch-size", "x"]])
def test_bad_numbers_exit_2(weights, videos, tmp_path, capsys, args):
    out = tmp_path / "out"
    code, _, err = extract(capsys, weights["a"], videos, out, *args)
    assert code == 2 and args[0] in err and not out.exists()


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"workers": -1}, {"clip_len": 0}, {"fps": float("inf")},
                                    {"shard": (3, 2)}, {"shard": "3/2"}, {"layer": "layer9"}])
def test_bad_arguments_raise_config_error_before_work(model, videos, tmp_path, kwargs):
    with pytest.raises(ConfigError):
        run_extraction(model, [videos], tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,message", [(["--shard", "3/2"], "need 0 <= i < n"),
                                          (["--shard", "half"], "i/n"),
                                          (["--layer", "layer9"], "pooled, logits, layer1, layer2")])
def test_bad_shard_or_layer_is_one_line_exit_2(weights, videos, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code, text, err = extract(capsys, weights["a"], videos, out, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_read_only_output_folder_is_refused(weights, videos, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.npz").write_bytes(b"earlier")
    out.chmod(0o555)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as root: chmod does not make the folder read-only")
        code, _, err = extract(capsys, weights["a"], videos, out)
    finally:
        out.chmod(0o755)
    assert code == 2 and "not writable" in err and len(err.strip().splitlines()) == 1
    assert sorted(snapshot(out)) == ["old.npz"]


def test_output_folder_that_cannot_be_created_is_refused(weights, videos, tmp_path, capsys):
    blocker = tmp_path / "features"
    blocker.write_bytes(b"a file, not a folder")
    code, _, err = extract(capsys, weights["a"], videos, blocker / "out")
    assert code == 2 and "not writable" in err and len(err.strip().splitlines()) == 1
    assert blocker.read_bytes() == b"a file, not a folder"


def test_leftover_temporaries_of_our_outputs_are_removed(weights, videos, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    ours = out / "a" / ".clip.mp4.npz.k2j4h_9x.tmp"
    other = out / "a" / ".notes.txt.k2j4h_9x.tmp"  # not an output of this run
    fresh = out / "a" / ".clip.avi.npz.zz11yy22.tmp"  # newer than the run: someone is writing it
    for path in (ours, other, fresh):
        path.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(ours, (old, old))
    os.utime(other, (old, old))
    os.utime(fresh, (time.time() + 3600,) * 2)
    code, text, _ = extract(capsys, weights["a"], videos, out)
    assert code == 0 and "removed 1 leftover temporary file of" in text
    assert not ours.exists() and other.exists() and fresh.exists()


# ------------------------------------------------------------------ the Python API
def test_extract_features_larger_crop_list_device_and_training_mode(model, originals, videos, monkeypatch):
    clips = [videos / "a" / "clip.mp4", originals / "truncated.mp4"]
    model.train()
    model.layer1.eval()  # a mixed state must come back exactly
    moved = []
    original_to = model.to
    monkeypatch.setattr(model, "to", lambda *a, **k: moved.append(a) or original_to(*a, **k))
    try:
        results = extract_features(model, clips, crop_size=128, device="cpu")
    finally:
        modes = (model.training, model.layer1.training, model.layer2.training)
        model.eval()
    assert moved == [(torch.device("cpu"),)]
    assert modes == (True, False, True)
    assert isinstance(results, list) and len(results) == 2
    first = results[0]
    assert first.input_spec.crop_size == 128 and first.input_spec.resize >= 128
    assert first.features.shape == (2, model.num_features) and np.isfinite(first.features).all()
    assert first.decode_report.complete and first.notes == []
    assert results[1].decode_report.partial and results[1].notes[0].startswith("partial decode")
    single = extract_features(model, clips[0], crop_size=128)
    np.testing.assert_allclose(single.features, first.features, rtol=1e-5, atol=1e-6)


def test_extract_features_rejects_bad_batch_size(model, videos):
    with pytest.raises(ConfigError, match="batch_size"):
        extract_features(model, videos / "a" / "clip.mp4", batch_size=0)


# ------------------------------------------------------------------ decoding overlapped with the model
def test_overlapped_inline_and_worker_decoding_write_the_same_features(weights, originals, videos, tmp_path, capsys):
    shutil.copy(originals / "truncated.mp4", videos / "truncated.mp4")
    shutil.copy(originals / "long.mp4", videos / "long.mp4")
    outputs = {}
    for name, flags in {"thread": ["--overlap"], "inline": ["--no-overlap"], "workers": ["--workers", "2"]}.items():
        code, out, _ = extract(capsys, weights["a"], videos, tmp_path / name, "--verbose", *flags)
        assert code == 0, out
        mode = {"thread": "background thread", "inline": "inline", "workers": "2 worker processes"}[name]
        assert f"decoding ({mode})" in out and "ms/clip" in out and "waiting for decoded clips" in out
        outputs[name] = {p.relative_to(tmp_path / name).as_posix(): np.load(p)["features"]
                         for p in sorted((tmp_path / name).rglob("*.npz"))}
    assert len(outputs["thread"]) == 4
    for name in ("inline", "workers"):
        assert outputs[name].keys() == outputs["thread"].keys()
        for key, features in outputs["thread"].items():
            assert np.array_equal(features, outputs[name][key]), (name, key)


def test_clips_decoded_ahead_are_bounded_by_memory_but_cover_two_batches():
    from video3d_zoo.models.config import InputSpec
    from video3d_zoo.jobs.pipeline import queue_depth

    assert queue_depth(InputSpec(frames=16, crop_size=112, resize=112), 8) == 64  # 2.4 MB a clip
    assert queue_depth(InputSpec(frames=16, crop_size=112, resize=112), 32) == 96
    assert queue_depth(InputSpec(frames=64, crop_size=224, resize=224), 8) == 17  # 38 MB a clip: 13 fit


def test_a_failing_video_does_not_stop_the_decoding_thread(weights, originals, videos, tmp_path, capsys):
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    threads = torch.get_num_threads()
    summary = run_extraction(video3d_zoo.load_model(weights["a"]), [videos], tmp_path / "out", progress=False,
                             overlap=True)
    assert len(summary.processed) == 2 and list(summary.failed) == [videos / "broken.mp4"]
    assert summary.timing["clips"] > 0 and summary.timing["decoding"] == "background thread"
    assert summary.timing["model_s"] > 0 and summary.timing["wall_s"] >= summary.timing["model_s"]
    assert torch.get_num_threads() == threads  # the model's turns on fewer threads are undone
    if threads > 1:  # decoding took turns with the model, decided before every batch
        assert summary.timing["batches"] >= 1 and 0 <= summary.timing["shared_batches"] <= summary.timing["batches"]


def test_verbose_timing_of_a_run_with_nothing_to_do_says_so(weights, videos, tmp_path, capsys):
    for _ in range(2):  # the second run finds every output up to date
        code, out, _ = extract(capsys, weights["a"], videos, tmp_path / "out", "--verbose")
        assert code == 0, out
    assert "timing: no clip reached the model" in out and "0 clips" not in out
