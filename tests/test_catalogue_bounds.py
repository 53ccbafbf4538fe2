"""Catalogue: every number has an upper bound, checked before any work (one line, exit 2, nothing allocated)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import video3d_zoo
from video3d_zoo import limits
from video3d_zoo.cli.commands import main
from video3d_zoo.errors import ConfigError
from video3d_zoo.models.config import InputSpec, ModelConfig
from videos import write_video

MODEL = "resnet3d_10.synthetic_motion"
HUGE = str(10**9)

PARSE_REFUSALS = [
    (["extract", "v.mp4", "-o", "out", "--model", MODEL, "--fps", "1e9"], "--fps", "<= 240"),
    (["extract", "v.mp4", "-o", "out", "--model", MODEL, "--workers", "10000"], "--workers", "per CPU core"),
    (["classify", "v.mp4", "--model", MODEL, "--clip-len", "100000"], "--clip-len", ">= 1 and <= 1024"),
    (["classify", "v.mp4", "--model", MODEL, "--batch-size", "0"], "--batch-size", ">= 1 and <= 4096"),
    (["classify", "v.mp4", "--model", MODEL, "--stride", HUGE], "--stride", ">= 1 and <= 100000"),
    (["classify", "v.mp4", "--model", MODEL, "--topk", HUGE], "--topk", ">= 1 and <= 100000"),
    (["classify", "v.mp4", "--model", MODEL, "--fps", "nan"], "--fps", "<= 240"),
    (["eval", "--model", MODEL, "data", "--batch-size", "5000"], "--batch-size", ">= 1 and <= 4096"),
    (["eval", "--model", MODEL, "data", "--clips", HUGE], "--clips", ">= 0 and <= 1024"),
    (["eval", "--model", MODEL, "data", "--threads", "10000"], "--threads", "per CPU core"),
    (["info", "r3d_18", "--frames", "2000"], "--frames", ">= 1 and <= 1024"),
    (["bench", "r3d_18", "--size", "5000"], "--size", ">= 1 and <= 4096"),
    (["bench", "r3d_18", "--repeats", HUGE], "--repeats", ">= 1 and <= 1000"),
    (["export", MODEL, "-o", "m.onnx", "--frames", "0"], "--frames", ">= 1 and <= 1024"),
    (["export", MODEL, "-o", "m.onnx", "--opset", "99"], "--opset", ">= 11 and <= 30"),
    (["make-synthetic", "out", "--frames", "5000"], "--frames", ">= 2 and <= 1024"),
    (["make-synthetic", "out", "--videos-per-class", HUGE], "--videos-per-class", ">= 1 and <= 100000"),
    (["make-synthetic", "out", "--fps", "1000"], "--fps", ">= 1 and <= 240"),
    (["demo", "--seed", str(2**40)], "--seed", f">= 0 and <= {2**32 - 1}"),
]


@pytest.mark.parametrize("argv, option, bound", PARSE_REFUSALS,
                         ids=[" ".join(c[0][:1] + c[0][-2:]) for c in PARSE_REFUSALS])
def test_a_number_past_its_bound_is_one_line_and_exit_2(argv, option, bound, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err  # no usage block
    assert err.startswith(f"video3d-zoo {argv[0]}: error: argument {option}") and bound in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model saved as a zoo folder: its config.json is edited by the tests."""
    from video3d_zoo.weights.loading import save_pretrained

    folder = tmp_path_factory.mktemp("tiny")
    save_pretrained(video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=3), folder)
    return folder


CONFIG_REFUSALS = [
    (("input_spec", "frames"), 10**9, "input_spec.frames: expected a positive integer of at most 1024"),
    (("input_spec", "crop_size"), 10**6, "input_spec.crop_size: expected a positive integer of at most 4096"),
    (("input_spec", "resize"), [10**6, 171], "input_spec.resize: expected a positive integer of at most 4096"),
    (("arch_kwargs", "widen_factor"), 1e6, "arch_kwargs.widen_factor: expected a number from 0 to 64"),
    (("arch_kwargs", "stage_widths"), [64, 128, 10**7, 512], "arch_kwargs.stage_widths: expected a number from 0"),
    (("num_classes",), 10**9, "num_classes: expected an integer from 0 to 100000"),
]


@pytest.mark.parametrize("path, value, message", CONFIG_REFUSALS, ids=[".".join(c[0]) for c in CONFIG_REFUSALS])
def test_a_config_json_number_past_its_bound_is_one_line_before_any_weight_loads(saved, tmp_path, capsys, path,
                                                                                 value, message):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    config = json.loads((folder / "config.json").read_text())
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["classify", str(tmp_path / "never-opened.mp4"), "--weights", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("video3d-zoo classify: error: ") and message in err, err


def test_model_config_and_input_spec_refuse_the_same_numbers_in_python():
    with pytest.raises(ConfigError, match="input_spec.frames: expected a positive integer of at most 1024"):
        InputSpec(frames=10**9)
    with pytest.raises(ConfigError, match="widen_factor: expected a number from 0 to 64"):
        ModelConfig("resnet3d_10", 5, arch_kwargs={"widen_factor": 1e6})
    with pytest.raises(ConfigError, match=r"create_model\('resnet3d_10'\).widen_factor: expected a number from 0"):
        video3d_zoo.create_model("resnet3d_10", widen_factor=1e6)


def test_a_model_whose_weights_would_not_fit_is_refused_before_it_is_built():
    # resnet3d_10 64x as wide: about 4096x the weights of the default (hundreds of GiB), measured on the
    # meta device.
    with pytest.raises(ConfigError, match=r"would take [\d.]+ GiB, more than half of the [\d.]+ GiB of memory"):
        video3d_zoo.create_model("resnet3d_10", widen_factor=64)


def test_a_batch_of_clips_that_would_not_fit_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(limits, "available_memory", lambda: 2**30)
    with pytest.raises(ConfigError, match="a batch of 64 clips of 64x224x224 would take 2.30 GiB"):
        limits.check_clip_memory(64, 64, 224)
    limits.check_clip_memory(8, 16, 112)  # 0.05 GiB: fine
    assert main(["bench", "r3d_18", "--batch-size", "4096", "--frames", "1024", "--size", "1024"]) == 2
    assert "use a smaller batch size" in capsys.readouterr().err


def test_refusals_allocate_nothing(saved, tmp_path):
    # Under an address-space limit of 1 GiB more than the process holds after its imports, every refusal
    # must still be a one-line error (exit 2), not a MemoryError: config.json frames 10**9 used to allocate
    # 7.45 GiB before failing.
    config = json.loads((saved / "config.json").read_text())
    config["input_spec"]["frames"] = 10**9
    folder = tmp_path / "model"
    folder.mkdir()
    for name in os.listdir(saved):
        (folder / name).write_bytes((saved / name).read_bytes())
    (folder / "config.json").write_text(json.dumps(config))
    video = tmp_path / "v.mp4"
    write_video(video, 20)  # a real video: the old code allocated while cutting its clips
    code = ("import resource, sys\n"
            "from video3d_zoo.cli.commands import main\n"
            "size = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
            "resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, resource.RLIM_INFINITY))\n"
            "codes = [main(argv) for argv in [\n"
            f"    ['classify', {str(video)!r}, '--weights', {str(folder)!r}],\n"
            "    ['bench', 'r3d_18', '--batch-size', '4096', '--frames', '1024', '--size', '4096'],\n"
            "    ['info', 'resnet3d_10', '--frames', '1024', '--size', '4096']]]\n"
            "print(codes)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_root()), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[2, 2, 2]", result.stderr
    assert [line.split(": error: ")[0] for line in result.stderr.splitlines()] == [
        "video3d-zoo classify", "video3d-zoo bench", "video3d-zoo info"], result.stderr


@pytest.mark.parametrize("setting, message", [
    ("train.batch_size=100000", "train.batch_size = 100000: must be at most 4096"),
    ("model.frames=1000000000", "model.frames = 1000000000: must be at most 1024"),
    ("data.fps=1e9", "data.fps = 1000000000.0: must be at most 240"),
    ("data.num_workers=10000", "data.num_workers = 10000: must be at most 256"),
])
def test_training_config_numbers_have_upper_bounds(setting, message, capsys):
    assert main(["train", "synthetic_r3d", "--set", setting, "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def _root():
    from helpers import ROOT

    return ROOT
