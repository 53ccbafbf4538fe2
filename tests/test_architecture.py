"""Import direction, import cost, file size and the Python floor: the layering the package promises."""

from __future__ import annotations

import ast
import configparser
import json
import re
import subprocess
import sys
from pathlib import Path

import import_graph

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


MODEL_SUPPORT = {"__init__.py", "registry.py", "config.py", "layout.py"}


def test_model_files_import_only_layers_and_registry():
    """A family file sees the building blocks, the registry and the shape-reading helpers, nothing else."""
    for path in sorted((PACKAGE / "models").glob("*.py")):
        if path.name in MODEL_SUPPORT:
            continue
        for module in imported_modules(path):
            parts = set(module.strip(".").split("."))
            assert not parts & FORBIDDEN_IN_MODELS, f"{path.name} imports {module}"
            if module.startswith(".."):  # siblings (the registry, layout helpers, another family) are fine
                assert module == "..layers", f"{path.name} imports {module}"


def test_layout_helpers_import_only_torch_and_errors():
    """video3d_zoo/models/layout.py is allowed in model files because it stays a leaf module."""
    allowed = {"__future__", "inspect", "re", "dataclasses", "typing", "torch", "..errors"}
    found = set(imported_modules(PACKAGE / "models" / "layout.py"))
    assert found <= allowed, f"layout.py imports {sorted(found - allowed)}"


MAX_TOP_LEVEL_MODULES = 12


def test_top_level_shows_the_architecture():
    """At most a dozen modules at the top; everything else lives in a folder named for its job."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} top-level modules: {top}"
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert folders == ["cli", "inference", "io", "jobs", "layers", "models", "train", "weights"], folders


def test_import_is_light():
    code = ("import sys, time; t = time.perf_counter(); import video3d_zoo; "
            "import json; print(json.dumps({'heavy': [m for m in ('safetensors', 'huggingface_hub', 'fvcore', "
            "'av', 'video3d_zoo.train', 'torch._dynamo') if m in sys.modules]}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"heavy": []}


MAX_LINES = 500  # a hard cap; library files aim at ~450


def test_files_stay_small():
    too_long = {str(path.relative_to(PACKAGE)): n for path in sorted(PACKAGE.rglob("*.py"))
                if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not too_long, f"split these files by job (at most {MAX_LINES} lines): {too_long}"


# -- the import graph -----------------------------------------------------------------------------------
GRAPH = import_graph.build(PACKAGE)


def test_no_import_cycles_at_module_level():
    top, deferred = GRAPH.counts()
    print(f"{len(GRAPH.modules)} modules, {top} module-level and {deferred} function-level imports "
          "of package modules")
    cycle = import_graph.find_cycle(GRAPH.targets(module_level=True))
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycles_counting_function_level_imports():
    """Imports inside functions close no cycle either: a reference is parsed in one module
    (``weights.resolve``) below every loader, ``load_model`` sits beside ``create_model`` in ``api``,
    and a cycle (such as train.loop <-> train.evaluate once) means a shared piece belongs in a module
    of its own."""
    graph = GRAPH.targets(module_level=False)
    groups = import_graph.cyclic_groups(graph)
    assert not groups, "import cycles through function-level imports: " + "; ".join(
        " -> ".join(import_graph.find_cycle({m: graph[m] & group for m in group}) or sorted(group))
        for group in groups)


def test_nothing_inside_the_package_imports_its_root():
    """``video3d_zoo/__init__.py`` imports everything public; a module importing names from it
    would depend on the whole package (and on its import order).  Import the module instead:
    ``from .version import __version__``, ``from .api import create_model``."""
    root = import_graph.ROOT
    bad = [f"{e.source} (line {e.line}): from {root} import {', '.join(e.names) or '*'}"
           for e in GRAPH.edges if e.target == root and e.source != root]
    assert not bad, "\n".join(bad)


def test_import_graph_resolves_relative_imports():
    edges = {(e.source, e.target) for e in GRAPH.edges}
    assert ("video3d_zoo.cli.commands", "video3d_zoo.cli.train") in edges  # from .train import ...
    assert ("video3d_zoo.train.loop", "video3d_zoo.inference.precision") in edges  # from ..inference.precision import ...
    assert ("video3d_zoo", "video3d_zoo.models") in edges  # from . import models
    assert import_graph.find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_graph.cyclic_groups({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]


# -- the Python floor ------------------------------------------------------------------------------------
def _python_floor() -> tuple:
    cfg = configparser.ConfigParser()
    cfg.read(PACKAGE.parent / "setup.cfg")
    found = re.fullmatch(r">=\s*3\.(\d+)", cfg["options"]["python_requires"].strip())
    assert found, "python_requires should read >=3.N"
    return 3, int(found.group(1))


NEWER_KEYWORDS = {("zip", "strict"): (3, 10), ("dataclass", "slots"): (3, 10), ("dataclass", "kw_only"): (3, 10)}


def _callee(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _runtime_unions(tree: ast.Module, postponed: bool):
    """``X | Y`` between types where Python evaluates it: ``isinstance`` / ``issubclass`` arguments,
    and annotations unless ``from __future__ import annotations`` postpones them."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _callee(node) in ("isinstance", "issubclass") and len(node.args) == 2:
            if isinstance(node.args[1], ast.BinOp) and isinstance(node.args[1].op, ast.BitOr):
                yield node.lineno
        if postponed:
            continue
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            annotations = [a.annotation for a in args.posonlyargs + args.args + args.kwonlyargs] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        for ann in filter(None, annotations):
            if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(ann)):
                yield ann.lineno


def test_code_runs_on_the_declared_python_floor():
    """``python_requires`` tells the truth: no syntax or runtime construct newer than the floor."""
    floor = _python_floor()
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(PACKAGE.parent)
        try:
            tree = ast.parse(text, feature_version=floor)
        except SyntaxError as exc:
            problems.append(f"{where}:{exc.lineno}: syntax newer than Python {floor}: {exc.msg}")
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Match):
                problems.append(f"{where}:{node.lineno}: match statement (Python 3.10)")
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    needs = NEWER_KEYWORDS.get((_callee(node), keyword.arg))
                    if needs and needs > floor:
                        problems.append(f"{where}:{node.lineno}: {_callee(node)}({keyword.arg}=) needs {needs}")
        postponed = "from __future__ import annotations" in text
        problems += [f"{where}:{line}: X | Y union evaluated at runtime (Python 3.10)"
                     for line in _runtime_unions(tree, postponed)]
    assert not problems, "\n".join(problems)


# -- the README's layout list --------------------------------------------------------------------------
def test_readme_layout_lists_every_module():
    """README.md's "Layout of the code" is generated from the module docstrings: it names every module
    and says what each one is for (``python scripts/gen_layout.py`` rewrites it)."""
    sys.path.insert(0, str(PACKAGE.parent / "scripts"))
    try:
        import gen_layout
    finally:
        sys.path.pop(0)
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split(gen_layout.START, 1)[1].split(gen_layout.END, 1)[0]
    missing = [str(p.relative_to(PACKAGE.parent).as_posix()) for p in sorted(PACKAGE.rglob("*.py"))
               if f"`{p.relative_to(PACKAGE.parent).as_posix()}`" not in section]
    assert not missing, f"README.md does not name {missing}: run python scripts/gen_layout.py"
    assert gen_layout.render(readme) == readme, "README.md's layout list is out of date: run python scripts/gen_layout.py"


def _string_constants(pattern: str):
    """``(value, module)`` of every string constant in the package that is exactly a ``pattern`` match."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(pattern, node.value):
                yield node.value, path.relative_to(PACKAGE).as_posix()


def test_environment_variable_names_are_written_once():
    """Each ``VIDEO3D_ZOO_*`` name has one home (a module constant); everything else imports it."""
    seen = {}
    for value, module in _string_constants(r"VIDEO3D_ZOO_[A-Z_]+"):
        seen.setdefault(value, []).append(module)
    assert {"VIDEO3D_ZOO_MANIFEST", "VIDEO3D_ZOO_HOME"} <= set(seen)
    assert {value: modules for value, modules in seen.items() if len(modules) > 1} == {}


def test_one_copy_of_the_manifest_and_of_each_config_in_git():
    """The top-level weights_manifest.json is the manifest; the package reaches it through a link.
    Each training config is one file in git (video3d_zoo/configs/); recipes come from one table."""
    root = PACKAGE.parent
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True).stdout.split()
    if not tracked:  # not a git checkout (an unpacked sdist): nothing to count
        return
    manifests = [p for p in tracked if p.endswith("weights_manifest.json")]
    packaged = root / "video3d_zoo" / "data" / "weights_manifest.json"
    assert "weights_manifest.json" in manifests
    assert all(p == "weights_manifest.json" or (root / p).is_symlink() for p in manifests), manifests
    assert packaged.resolve() == (root / "weights_manifest.json").resolve()
    configs = [Path(p).name for p in tracked if p.endswith(".toml") and p != "pyproject.toml"]
    assert len(configs) == len(set(configs)), f"a config is stored twice: {sorted(configs)}"
