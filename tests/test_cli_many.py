"""`classify` and `info` take many inputs: files, folders, list files and patterns."""

from __future__ import annotations

import json

from video3d_zoo.cli.commands import main
from videos import write_video

MODEL = "resnet3d_10.synthetic_motion"


def _videos(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        write_video(folder / name, 20)
    (tmp_path / "list.txt").write_text(f"{folder / 'a.mp4'}\n")
    return folder


def test_classify_a_folder_prints_a_table(tmp_path, capsys):
    folder = _videos(tmp_path)
    assert main(["classify", str(folder), "--model", MODEL, "--topk", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("video") and len(lines) == 3
    assert lines[1].startswith(str((folder / "a.mp4").resolve())) and "%" in lines[1]


def test_classify_json_lines_one_per_video(tmp_path, capsys):
    folder = _videos(tmp_path)
    assert main(["classify", str(tmp_path / "list.txt"), str(folder / "b.mp4"), "--model", MODEL, "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["video"].rsplit("/", 1)[-1] for r in records] == ["a.mp4", "b.mp4"]
    assert all(len(r["top"]) == 5 and r["num_clips"] >= 1 for r in records)


def test_classify_reports_a_bad_video_and_goes_on(tmp_path, capsys):
    folder = _videos(tmp_path)
    (folder / "bad.mp4").write_text("not a video")
    assert main(["classify", str(folder), "--model", MODEL, "--json"]) == 1
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 2 and "FAILED" in err and "bad.mp4" in err


def test_info_takes_names_and_patterns(capsys):
    assert main(["info", "r3d_18", "mc3_1*", "--frames", "4", "--size", "32", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["model"] for r in records] == ["r3d_18", "mc3_18"]
    assert main(["info", "no_match_*"]) == 2


def test_the_console_entry_point_keeps_freed_memory_and_spares_the_collector_long_lived_objects(monkeypatch):
    import configparser
    import gc
    from pathlib import Path

    from video3d_zoo.cli import commands as cli

    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    assert "video3d_zoo.cli.commands:run" in setup["options.entry_points"]["console_scripts"]
    from video3d_zoo.inference import memory

    calls = []
    monkeypatch.setattr(memory, "reuse_freed_memory", lambda: calls.append("mallopt") or True)
    monkeypatch.setattr(cli, "main", lambda argv=None: 7)
    try:
        assert cli.run() == 7
        assert gc.get_freeze_count() > 0 and calls == ["mallopt"]
    finally:
        gc.unfreeze()


def test_freed_memory_is_kept_for_reuse_on_glibc_only(monkeypatch):
    import platform
    import sys

    from video3d_zoo.inference import memory

    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert memory.reuse_freed_memory() is expected
    monkeypatch.setattr(sys, "platform", "darwin")
    assert memory.reuse_freed_memory() is False
