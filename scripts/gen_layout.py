"""Write the README's generated parts: the model table (from the registry) and the "Layout of the
code" list (one line per module, its docstring's first sentence).

    python scripts/gen_layout.py          # rewrite README.md between the markers
    python scripts/gen_layout.py --check  # exit 1 if README.md is out of date

``tests/test_architecture.py`` runs the check, so a new module or model needs a rerun.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "video3d_zoo"
README = ROOT / "README.md"
START, END = "<!-- layout:start -->", "<!-- layout:end -->"
MODELS_START, MODELS_END = "<!-- models:start -->", "<!-- models:end -->"


def first_sentence(docstring: str) -> str:
    """The first sentence of the first paragraph, reST roles and double backticks as Markdown."""
    paragraph = " ".join(docstring.strip().split("\n\n")[0].split())
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z`*(:])", paragraph)[0]
    sentence = re.sub(r":(?:func|class|mod|meth|attr|data|exc):`~?([^`]+)`",
                      lambda m: f"`{m.group(1).split('.')[-1] if m.group(0).find('~') >= 0 else m.group(1)}`",
                      sentence)
    return sentence.replace("``", "`")


def module_lines(package: Path = PACKAGE) -> list:
    lines = []
    for path in sorted(package.rglob("*.py"), key=lambda p: (p.parent.relative_to(package).parts, p.name)):
        rel = path.relative_to(package.parent).as_posix()
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        if not doc:
            raise SystemExit(f"{rel}: no module docstring; its first sentence goes into README.md")
        lines.append(f"- `{rel}`: {first_sentence(doc)}")
    return lines


def model_lines() -> list:
    """The README's model table: one row per family, in registration order, from the registry."""
    sys.path.insert(0, str(ROOT))
    import video3d_zoo  # noqa: F401  (registers every family)
    from video3d_zoo.models.registry import MODELS, list_families

    rows = ["| family | models | torch.hub aliases |", "|---|---|---|"]
    for family in list_families():
        specs = sorted((s for s in (MODELS.spec(n) for n in MODELS.names()) if s.family == family.name),
                       key=lambda s: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s.name)])
        names = ", ".join(f"`{s.name}`" for s in specs)
        aliases = ", ".join(f"`{a}`" for s in specs for a in s.aliases[:1])
        rows.append(f"| {family.title} | {names} | {aliases} |")
    return rows


def _replace(text: str, start: str, end: str, lines: list) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"README.md has no {start} ... {end} block")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return head + start + "\n" + "\n".join(lines) + "\n" + end + tail


def render(text: str, package: Path = PACKAGE) -> str:
    """``text`` (the README) with the generated blocks replaced."""
    text = _replace(text, MODELS_START, MODELS_END, model_lines())
    return _replace(text, START, END, module_lines(package))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md is current")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print("README.md's layout list is out of date: run python scripts/gen_layout.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        README.write_text(new, encoding="utf-8")
        print("updated README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
