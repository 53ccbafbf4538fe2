"""Every documented command runs: the ```bash / ```sh lines and ```python blocks of docs/*.md.

Each block runs as written, in one shared working folder holding the files the pages name
(``video.mp4``, ``more.mp4``, ``videos/``, ``list.txt``: small real videos made here).  A block
that needs what a test machine cannot have is marked in the page, on the line right before it::

    <!-- needs: KIND: reason -->

with KIND one of ``real-data`` (Kinetics / UCF-101 / HMDB-51 trees), ``weights`` (a released
checkpoint or imported weights), ``network`` or ``gpu``; it is listed here and skipped with the
reason.  An unmarked block that fails fails the test.  The only substitutions are the command
names: ``video3d-zoo`` runs as ``python -m video3d_zoo`` and ``python``/``python3`` as this
interpreter.  README.md is checked by tests/test_readme.py.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional

import pytest

from videos import write_video

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
NEEDS = re.compile(r"<!--\s*needs:\s*(real-data|weights|network|gpu):\s*(.+?)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")
KINDS = {"bash", "sh", "python"}


class Block(NamedTuple):
    page: str
    line: int
    lang: str
    code: str
    needs: Optional[str]  # "KIND: reason" or None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks_of(path: Path) -> List[Block]:
    """The runnable fenced blocks of one page, each with the marker right before it (if any)."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if match.group(1) in KINDS:
            found.append(Block(path.name, i + 1, match.group(1), "\n".join(lines[i + 1:end]),
                               _marker(lines, i)))
        i = end + 1
    return found


def _marker(lines: List[str], fence: int) -> Optional[str]:
    before = next((line for line in reversed(lines[:fence]) if line.strip()), "")
    match = NEEDS.search(before)
    return f"{match.group(1)}: {match.group(2)}" if match else None


def command_lines(code: str) -> List[str]:
    """Command lines of a shell block: continuations joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def argv_of(line: str) -> List[str]:
    words = shlex.split(line, comments=True)
    if words[0] == "video3d-zoo":
        return [sys.executable, "-m", "video3d_zoo", *words[1:]]
    if words[0] in ("python", "python3"):
        return [sys.executable, *words[1:]]
    raise AssertionError(f"no rule to run {words[0]!r}: mark the block with <!-- needs: ... -->")


ALL = [block for page in DOCS for block in blocks_of(page)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The files the pages name: small real videos, a folder of them and a list file."""
    root = tmp_path_factory.mktemp("docs_run")
    write_video(root / "video.mp4", 40, width=64, height=48, fps=16)
    write_video(root / "more.mp4", 20, width=64, height=48, fps=16)
    for name in ("a/clip.mp4", "b/clip.mp4"):
        (root / "videos" / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / "videos" / name, 20, width=64, height=48, fps=16)
    (root / "list.txt").write_text("video.mp4\n")
    return root


def _run(argv: List[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2")
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_blocks_are_found():
    assert len(ALL) >= 20, [b.id for b in ALL]
    assert any(b.needs for b in ALL) and any(not b.needs for b in ALL)


def test_markers_sit_right_before_a_block():
    """A marker that does not precede a block would silently mark nothing."""
    for page in DOCS:
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if "<!-- needs:" in line:
                assert NEEDS.search(line), f"{page.name}:{i + 1}: malformed marker {line!r}"
                after = next((x for x in lines[i + 1:] if x.strip()), "")
                assert FENCE.match(after) and FENCE.match(after).group(1) in KINDS, f"{page.name}:{i + 1}"


@pytest.mark.parametrize("block", ALL, ids=[b.id for b in ALL])
def test_documented_block_runs(block, workdir):
    if block.needs:
        pytest.skip(f"needs {block.needs}")
    if block.lang == "python":
        result = _run([sys.executable, "-c", block.code], workdir)
        assert result.returncode == 0, f"{block.id}\n{block.code}\n{result.stderr[-3000:]}"
        return
    for line in command_lines(block.code):
        result = _run(argv_of(line), workdir)
        assert result.returncode == 0, f"{block.id}: {line}\n{result.stdout[-1500:]}\n{result.stderr[-3000:]}"
