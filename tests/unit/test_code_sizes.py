"""No module of imagematrix/ over 300 lines and no function over 60 without a line naming it, with its reason, in
ARCHITECTURE.md's section "Sizes over the limits"; and no line there for what is within the limits or gone (issue 27).
Lines are physical lines: a module's, and a function's `end_lineno - lineno + 1` (its decorators left out)."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

from tests.conftest import ROOT

MODULE_MAX, FUNCTION_MAX = 300, 60
SECTION = "## Sizes over the limits"
# - `imagematrix/stages/export.py`: why   - `imagematrix/assist/pick.py:pick`: why   (a method: `module.py:Class.name`)
ENTRY = re.compile(r"^- `(imagematrix/[\w/]+\.py(?::[\w.]+)?)`: (\S.*)$")


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function and method, nested ones included (`Class.method`, `outer.inner`)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{prefix}{node.name}", node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def sizes(text: str, name: str) -> dict[str, int]:
    """The module's lines under its name, and each function's under `name:qualified.name`."""
    out = {name: len(text.splitlines())}
    for qualified, node in _functions(ast.parse(text)):
        out[f"{name}:{qualified}"] = node.end_lineno - node.lineno + 1
    return out


@functools.cache
def over_limits(root: Path = ROOT) -> dict[str, int]:
    found: dict[str, int] = {}
    for path in sorted((root / "imagematrix").rglob("*.py")):
        found |= sizes(path.read_text(), path.relative_to(root).as_posix())
    return {name: n for name, n in found.items() if n > (FUNCTION_MAX if ":" in name else MODULE_MAX)}


def reasons(text: str) -> dict[str, str]:
    """The section's entries: name -> reason (the section ends at the next heading of its level or above)."""
    assert SECTION in text, f"ARCHITECTURE.md has no section {SECTION!r}"
    section = re.split(r"^#{1,2} ", text.split(SECTION, 1)[1], flags=re.M)[0]
    entries = [ENTRY.match(line) for line in section.splitlines() if line.startswith("- ")]
    assert all(entries), f"each entry is one line: - `imagematrix/<path>.py[:function]`: reason ({SECTION})"
    named = [m.group(1) for m in entries]
    assert len(named) == len(set(named)), f"named twice in {SECTION}: {sorted({n for n in named if named.count(n) > 1})}"
    return {m.group(1): m.group(2) for m in entries}


def test_every_module_and_function_over_its_limit_says_why_in_architecture():
    named = reasons((ROOT / "ARCHITECTURE.md").read_text())
    missing = {name: n for name, n in over_limits().items() if name not in named}
    assert not missing, (f"over {MODULE_MAX} lines (a module) or {FUNCTION_MAX} (a function), with no reason in "
                         f"ARCHITECTURE.md, {SECTION!r}: split it, or add a line there: {missing}")


def test_architecture_names_only_what_is_over_its_limit():
    over = over_limits()
    stale = sorted(name for name in reasons((ROOT / "ARCHITECTURE.md").read_text()) if name not in over)
    assert not stale, f"ARCHITECTURE.md, {SECTION!r}, names what is within its limit now (or gone): drop {stale}"


def test_sizes_counts_modules_methods_and_nested_functions():
    text = "class A:\n    @property\n    def b(self):\n        def c():\n            pass\n        return 1\n\n\nx = 1\n"
    assert sizes(text, "m.py") == {"m.py": 9, "m.py:A.b": 4, "m.py:A.b.c": 2}


def test_the_section_is_read_up_to_the_next_heading():
    text = f"{SECTION}\n\nWhy.\n\n- `imagematrix/a.py`: one reason\n- `imagematrix/a.py:f`: another\n\n## Next\n\n- x\n"
    assert reasons(text) == {"imagematrix/a.py": "one reason", "imagematrix/a.py:f": "another"}
