"""What the docs promise is what the commands do: run folders, help, messages, extras, clean-up."""

from __future__ import annotations

import io
import re
import shlex
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest

from test_docs_run import DOCS, blocks_of, command_lines
from video3d_zoo.cli.commands import main as cli_main
from video3d_zoo.errors import ExportError
from video3d_zoo.wording import count, plural

ROOT = Path(__file__).resolve().parents[1]
RUN_PATH = re.compile(r"^runs/[^/]+(/.*)?$")


def _train_run_folder(words):
    """The run folder a documented ``video3d-zoo train CONFIG --set ...`` line creates."""
    from video3d_zoo.train.config import load_config

    overrides = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    cfg = load_config(words[2], overrides)
    return Path(cfg.output.dir) / (cfg.output.name or Path(words[2]).stem)


def _documented_lines():
    for page in DOCS:
        for block in blocks_of(page):
            if block.lang in ("bash", "sh"):
                for line in command_lines(block.code):
                    yield page.name, shlex.split(line, comments=True)


def test_every_run_folder_the_docs_name_is_one_a_documented_train_command_creates():
    created, named = set(), []
    for page, words in _documented_lines():
        if words[:2] == ["video3d-zoo", "train"] and "--print-config" not in words:
            created.add(_train_run_folder(words))
        named += [(page, Path(w)) for w in words if RUN_PATH.match(w) and not w.startswith("runs/data/")]
    assert named, "the pages name no run folder"
    for page, path in named:
        assert Path(*path.parts[:2]) in created, f"{page}: {path} is not the run folder of any documented train command"


def test_finetuning_evaluates_the_run_its_own_train_command_creates():
    lines = [(w, _train_run_folder(w) if w[:2] == ["video3d-zoo", "train"] else None)
             for page, w in _documented_lines() if page == "finetuning.md"]
    trains = [run for _, run in lines if run is not None]
    assert len(trains) == 2 and trains[1] == Path("runs/ucf101s1_resnext101_64f")  # frames=64: named for it
    for words, _ in lines:
        if words[:2] in (["video3d-zoo", "eval"], ["video3d-zoo", "classify"]):
            weights = Path(words[words.index("--weights") + 1])
            assert weights.parent in trains and weights.name == "export", words


def test_train_help_lists_the_shipped_configs():
    from video3d_zoo.train.recipes import list_configs

    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    text = " ".join(out.getvalue().split())
    assert list_configs() and all(name in text for name in list_configs())
    assert ".toml / .json" in text


def test_counts_agree_with_their_noun():
    assert [count(1, "clip"), count(0, "clip"), count(2, "epoch"), count(1, "epoch")] == \
        ["1 clip", "0 clips", "2 epochs", "1 epoch"]
    assert [plural("process"), plural("class"), plural("batch"), plural("still image")] == \
        ["processes", "classes", "batches", "still images"]


def test_one_clip_is_printed_in_the_singular(capsys):
    from video3d_zoo.jobs.classify import print_one

    print_one("a.mp4", SimpleNamespace(num_clips=1, top=[("zoom_in", 0.9)], notes=[]))
    print_one("b.mp4", SimpleNamespace(num_clips=3, top=[("zoom_in", 0.9)], notes=[]))
    out = capsys.readouterr().out
    assert "a.mp4 (1 clip, " in out and "b.mp4 (3 clips, " in out


def test_export_without_onnx_names_the_extra(monkeypatch, tmp_path):
    import video3d_zoo
    from video3d_zoo.inference.export import export_onnx

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    model = video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=2)
    with pytest.raises(ExportError, match=r"pip install 'video3d-zoo\[export\]'"):
        export_onnx(model, tmp_path / "m.onnx", frames=4, size=32)
    assert not list(tmp_path.iterdir())


def test_a_model_without_default_weights_is_named_without_the_manifest_path(tmp_path, monkeypatch):
    monkeypatch.delenv("VIDEO3D_ZOO_MANIFEST", raising=False)
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        assert cli_main(["classify", str(tmp_path / "video.mp4"), "--model", "resnet3d_10"]) == 2
    message = err.getvalue().strip()
    assert len(message.splitlines()) == 1
    assert "the weights manifest shipped with video3d_zoo" in message and "site-packages" not in message
    assert "weights_manifest.json" not in message and "synthetic_motion" in message
    assert "resnet3d_10.TAG" in message


def test_the_demo_removes_its_temporary_folder(monkeypatch, tmp_path):
    import tempfile

    from video3d_zoo.jobs import demo

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where TemporaryDirectory makes its folder
    used = []

    def fake_run(model, out, seed, progress):  # the demo's work, minus the model's time
        (out / "features").mkdir(parents=True)
        (out / "features" / "x.npz").write_bytes(b"x")
        used.append(out)
        return demo.DemoReport(out)

    monkeypatch.setattr(demo, "_run_demo_in", fake_run)
    report = demo.run_demo()
    assert used and used[0].parent == tmp_path and not used[0].exists() and not list(tmp_path.iterdir())
    assert not report.kept and "temporary folder, now removed" in report.describe()
    kept = demo.run_demo(str(tmp_path / "mine"))
    assert kept.kept and (tmp_path / "mine" / "features" / "x.npz").is_file()
    assert f"written to {tmp_path / 'mine' / 'features'}" in kept.describe()
