"""The README never lies: its code blocks and commands are executed here."""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)


def commands():
    for lang, body in BLOCKS:
        if lang == "bash":
            for line in body.strip().splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    yield line.strip()


def test_readme_has_the_two_newcomer_commands():
    cmds = list(commands())
    assert any("video3d-zoo demo" in c for c in cmds), "the main-job command"
    assert any("pytest" in c for c in cmds), "the test command"


def test_ci_runs_the_readme_test_command():
    test_cmd = next(c for c in commands() if "pytest" in c).split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in [line.strip() for line in ci], f".ci/run must run {test_cmd!r}"


def test_install_steps_name_real_extras():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extras = set(cfg["options.extras_require"])
    for cmd in commands():
        for part in cmd.split("&&"):
            words = shlex.split(part)
            if words[:2] == ["pip", "install"]:
                for spec in words[2:]:
                    found = re.findall(r"\[([\w,]+)\]", spec)
                    for names in found:
                        assert set(names.split(",")) <= extras, spec


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "python"])
def test_python_blocks_run(index):
    code = BLOCKS[index][1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_main_job_command_runs(tmp_path):
    cmd = next(c for c in commands() if "video3d-zoo demo" in c)
    demo = shlex.split(cmd.split("&&")[-1])
    assert demo[0] == "video3d-zoo"
    result = subprocess.run([sys.executable, "-m", "video3d_zoo", *demo[1:], "-o", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "video accuracy" in result.stdout
    assert len(list((tmp_path / "features").glob("*.npz"))) == 8
