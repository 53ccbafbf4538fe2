"""Write the README's "Layout of the code" list: one line per module, its docstring's first sentence.

    python scripts/gen_layout.py          # rewrite README.md between the layout markers
    python scripts/gen_layout.py --check  # exit 1 if README.md is out of date

``tests/test_architecture.py`` runs the check, so a new module needs a docstring and a rerun.
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


def render(text: str, package: Path = PACKAGE) -> str:
    """``text`` (the README) with the list between the markers replaced."""
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + START + "\n" + "\n".join(module_lines(package)) + "\n" + END + tail


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
