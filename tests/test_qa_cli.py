"""Findings of a QA pass over the command line (bad input as users give it), each a regression test."""

from __future__ import annotations

import json
import os

import pytest

from video3d_zoo.cli.commands import main
from video3d_zoo.errors import VideoDecodeError
from video3d_zoo.io.decode import probe_video
from videos import write_video


def _one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"video3d-zoo {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", ["extract", "classify"])
def test_a_mistyped_input_is_refused_before_any_work(tmp_path, capsys, command):
    video = write_video(tmp_path / "ok.mp4", 8).path
    out = tmp_path / "features"
    extra = ["-o", str(out), "--quiet"] if command == "extract" else []
    rc = main([command, str(video), str(tmp_path / "typo.mp4"), "--model", "resnet3d_10.synthetic_motion",
               "--device", "cpu", *extra])
    captured = capsys.readouterr()
    line = _one_error_line(captured.err, command)
    assert rc == 2 and "no such file or folder" in line and "typo.mp4" in line
    assert not out.exists() and captured.out == ""  # no output folder made, nothing classified


def test_an_unreadable_video_names_ffmpegs_reason_without_its_errno(tmp_path):
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(os.urandom(3000))
    with pytest.raises(VideoDecodeError) as info:
        probe_video(noise)
    message = str(info.value)
    assert "cannot be opened as a video (Invalid data found when processing input)" in message
    assert "Errno" not in message and message.count(str(noise)) == 1


def test_info_takes_weights_names_and_uses_their_input_and_head(capsys):
    assert main(["info", "resnet3d_10.synthetic_motion", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "resnet3d_10.synthetic_motion"
    from video3d_zoo import get_weights

    spec = get_weights("resnet3d_10.synthetic_motion").config.input_spec
    assert result["input_shape"] == [1, 3, spec.frames, spec.crop_size, spec.crop_size]
    assert main(["info", "resnet3d_10.no_such_tag"]) == 2
    assert "no weights 'no_such_tag'" in _one_error_line(capsys.readouterr().err, "info")


@pytest.mark.parametrize("shape", [(0, 32, 32, 3), (4, 0, 32, 3), (0, 3, 32, 32), (2, 0, 8, 8, 3)])
def test_transforms_refuse_an_empty_clip(shape):
    import numpy as np

    from video3d_zoo import get_weights
    from video3d_zoo.errors import InputShapeError

    with pytest.raises(InputShapeError, match="no frames or an empty frame"):
        get_weights("resnet3d_10.synthetic_motion").transforms()(np.zeros(shape, np.uint8))


def test_load_features_of_one_file_that_is_not_a_feature_file_says_so(tmp_path):
    from video3d_zoo import load_features
    from video3d_zoo.errors import DataError

    video = write_video(tmp_path / "clip.mp4", 4).path
    with pytest.raises(DataError, match="not a feature file"):
        load_features(video)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        load_features(tmp_path / "junk.npz")


@pytest.mark.parametrize("name,text,reason", [
    ("deep.json", "[" * 100_000 + "]" * 100_000, "nested more than"),
    ("deep.toml", "a = " + "[" * 100_000 + "]" * 100_000 + "\n", "nested too deep"),
    ("nan.json", '{"data": {"format": "synthetic", "root": "x"}, "optim": {"lr": NaN}}', "every number must be finite"),
])
def test_a_training_config_too_deep_or_with_nan_literals_is_one_line(tmp_path, capsys, name, text, reason):
    (tmp_path / name).write_text(text)
    assert main(["train", str(tmp_path / name), "--print-config"]) == 2
    assert reason in _one_error_line(capsys.readouterr().err, "train")


def test_training_epochs_have_an_upper_bound(capsys):
    assert main(["train", "synthetic_r3d", "--set", "train.epochs=1e9", "--print-config"]) == 2
    assert "train.epochs = 1000000000: must be at most 10000" in _one_error_line(capsys.readouterr().err, "train")


@pytest.mark.parametrize("argv", [["list", "zzz*"], ["list", "--pretrained", "zzz*"], ["list-pretrained", "zzz*"],
                                  ["list-pretrained", "--names", "zzz*"]])
def test_a_list_pattern_that_matches_nothing_says_so(capsys, argv):
    assert main(argv) == 2
    assert "zzz*" in _one_error_line(capsys.readouterr().err, argv[0])


def test_an_eager_rerun_with_another_batch_size_skips_up_to_date_files(tmp_path, capsys):
    video = write_video(tmp_path / "ok.mp4", 8).path
    argv = ["extract", str(video), "-o", str(tmp_path / "out"), "--model", "resnet3d_10.synthetic_motion",
            "--device", "cpu", "--quiet"]
    assert main([*argv, "--batch-size", "5"]) == 0
    capsys.readouterr()
    assert main(argv) == 0
    assert "0 extracted (0 new, 0 recomputed), 1 up to date (skipped)" in capsys.readouterr().out


def test_load_features_of_an_empty_string_is_refused_not_the_working_directory():
    from video3d_zoo import load_features
    from video3d_zoo.errors import DataError

    with pytest.raises(DataError, match="empty string"):
        load_features("")


def test_a_config_json_integer_of_thousands_of_digits_is_one_plain_line(tmp_path, capsys):
    from video3d_zoo import create_model, save_pretrained

    folder = tmp_path / "model"
    save_pretrained(create_model("resnet3d_10", num_classes=2, widen_factor=0.125), folder)
    (folder / "config.json").write_text('{"architecture": "resnet3d_10", "num_classes": ' + "9" * 5000 + "}")
    video = write_video(tmp_path / "ok.mp4", 8).path
    assert main(["classify", str(video), "--model", str(folder), "--device", "cpu"]) == 2
    line = _one_error_line(capsys.readouterr().err, "classify")
    assert "thousands of digits" in line and "set_int_max_str_digits" not in line


def test_a_save_that_fails_on_a_full_disk_leaves_no_empty_folder_of_its_own(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    from video3d_zoo import create_model, save_pretrained

    model = create_model("resnet3d_10", num_classes=2, widen_factor=0.125)
    real = Path.write_text

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left"):
        save_pretrained(model, tmp_path / "new" / "model")
    assert not (tmp_path / "new" / "model").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made stays
    with pytest.raises(OSError):
        save_pretrained(model, tmp_path / "mine")
    monkeypatch.setattr(Path, "write_text", real)
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_demo_output_that_is_a_file_is_one_line(tmp_path, capsys):
    from video3d_zoo.cli.commands import main

    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(["demo", "-o", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0]
    assert target.read_text() == "mine"


def test_a_config_naming_an_unknown_architecture_names_the_file(tmp_path, capsys):
    import json

    import video3d_zoo
    from video3d_zoo.cli.commands import main

    folder = video3d_zoo.save_pretrained(video3d_zoo.create_model("resnet3d_10", widen_factor=0.125), tmp_path / "f")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architecture": "resnet3d_19"}))
    assert main(["convert", str(folder), "-o", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json: architecture: unknown model 'resnet3d_19'" in err[0]
    assert "resnet3d_18" in err[0] and not (tmp_path / "g").exists()
