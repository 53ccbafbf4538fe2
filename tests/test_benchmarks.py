"""Every benchmark script runs once on tiny inputs (timings are printed, never asserted)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_benchmark_script_runs_tiny(script, tmp_path):
    if "ffmpeg" in script.read_text() and shutil.which("ffmpeg") is None:
        pytest.skip("needs the ffmpeg command")
    result = subprocess.run([sys.executable, str(script), "--tiny"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip(), "a benchmark prints its measurements"
