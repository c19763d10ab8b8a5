"""The layers of ARCHITECTURE.md hold: no module imports a layer above its own, in_image imports nothing of
imagematrix, and only tools/ start programs (subprocess) or open URLs."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "imagematrix"
# layer -> the layers it may import (besides itself)
# (in_image is a leaf every layer may read: knowledge.gpus shares the preflight's coverage rules.)
ALLOWED = {
    "model": {"in_image"},
    "tools": {"model", "in_image"},
    "knowledge": {"model", "tools", "in_image"},
    "rules": {"model", "knowledge", "in_image"},
    "stages": {"model", "knowledge", "rules", "tools", "in_image"},
    "assist": {"model", "knowledge", "rules", "stages", "tools", "in_image"},
    "in_image": set(),
    "cli": {"model", "knowledge", "rules", "stages", "tools", "assist", "in_image"},
}
# The in-image code runs nvidia-smi inside the image; doctor runs the probe with this Python; the GPU stage
# installs pytest for the image's Python with pip; imagerun (standard library only, on the GPU host) runs unshare,
# mount and chroot.
SPAWN_OUTSIDE_TOOLS = {"in_image/imagerun.py", "in_image/preflight.py", "in_image/probe.py", "in_image/flash_attn_compile.py", "assist/doctor.py", "stages/smoke_gpu.py"}
SPAWNS = {("subprocess", "run"), ("subprocess", "Popen"), ("subprocess", "check_output"), ("subprocess", "call"),
          ("subprocess", "check_call"), ("request", "urlopen"), ("socket", "create_connection"), ("socket", "socket")}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_its_own(path):
    layer = path.relative_to(PACKAGE).parts[0]
    used = {m.split(".")[1] for m in _imports(path) if m.startswith("imagematrix.") and len(m.split(".")) > 1}
    assert used - {layer} <= ALLOWED[layer], f"{path.relative_to(ROOT)} imports {sorted(used - {layer} - ALLOWED[layer])}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_tools_start_programs_or_open_urls(path):
    rel = str(path.relative_to(PACKAGE))
    if rel.startswith("tools/") or rel in SPAWN_OUTSIDE_TOOLS:
        return
    calls = {(node.func.value.attr if isinstance(node.func.value, ast.Attribute) else node.func.value.id, node.func.attr)
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and isinstance(node.func.value, ast.Name | ast.Attribute)}
    assert not calls & SPAWNS, (
        f"{rel} starts a program or speaks a protocol itself ({sorted(calls & SPAWNS)}): do it through a module "
        "of imagematrix/tools/")
