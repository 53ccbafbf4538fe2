"""Import direction and import cost: the layering the package promises."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "video3d_zoo"
FORBIDDEN_IN_MODELS = {"hub", "manifest", "weights", "convert", "safetensors", "huggingface_hub", "train",
                       "io", "features", "cli"}


def imported_modules(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ("." * node.level) + (node.module or "")
            yield base
            if node.module is None:
                yield from ("." * node.level + alias.name for alias in node.names)


def test_model_files_import_only_layers_and_registry():
    for path in sorted((PACKAGE / "models").glob("*.py")):
        for module in imported_modules(path):
            parts = set(module.strip(".").split("."))
            assert not parts & FORBIDDEN_IN_MODELS, f"{path.name} imports {module}"
            if module.startswith(".."):
                # ..layout: the shape-reading helpers families use to read their checkpoints
                assert module in ("..layers", "..layout", "..registry"), f"{path.name} imports {module}"


def test_layout_helpers_import_only_torch_and_errors():
    """video3d_zoo/layout.py is allowed in model files because it stays a leaf module."""
    allowed = {"__future__", "inspect", "re", "dataclasses", "typing", "torch", ".errors"}
    found = set(imported_modules(PACKAGE / "layout.py"))
    assert found <= allowed, f"layout.py imports {sorted(found - allowed)}"


def test_import_is_light():
    code = ("import sys, time; t = time.perf_counter(); import video3d_zoo; "
            "import json; print(json.dumps({'heavy': [m for m in ('safetensors', 'huggingface_hub', 'fvcore', "
            "'av', 'video3d_zoo.train', 'torch._dynamo') if m in sys.modules]}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"heavy": []}


def test_files_stay_small():
    for path in PACKAGE.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 650, f"{path} is too long"
