"""The layers of ARCHITECTURE.md hold: no module imports a layer above its own, in_image imports nothing of
imagematrix, the GPU suite runs on the standard library and pytest alone, and only tools/ start programs (subprocess)
or open URLs."""

from __future__ import annotations

import ast
import sys

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
    # the suites the smoke stages run against an image (pytest files, not imported by any layer: stages name their
    # folder through model/paths.SUITES); the CPU suite reads the row as the stages do
    "suites": {"model", "knowledge", "stages", "tools", "in_image"},
}
# The in-image code runs nvidia-smi inside the image; doctor runs the probe with this Python; the GPU stage
# installs pytest for the image's Python with pip; imagerun (standard library only, on the GPU host) runs unshare,
# mount and chroot.
# The suites start containers and the image's Python (the GPU suite runs where imagematrix is not installed).
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
    if rel.startswith(("tools/", "suites/")) or rel in SPAWN_OUTSIDE_TOOLS:
        return
    calls = {(node.func.value.attr if isinstance(node.func.value, ast.Attribute) else node.func.value.id, node.func.attr)
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and isinstance(node.func.value, ast.Name | ast.Attribute)}
    assert not calls & SPAWNS, (
        f"{rel} starts a program or speaks a protocol itself ({sorted(calls & SPAWNS)}): do it through a module "
        "of imagematrix/tools/")


GPU_SUITE = PACKAGE / "suites" / "gpu"
# what the GPU suite may import at module level: it is mounted alone into images, which have pytest (mounted beside it)
# and nothing of imagematrix; scripts/ run with the image's Python, so they may import what the row installs (torch)
GPU_SUITE_IMPORTS = {"pytest", "gpusmoke"}


@pytest.mark.parametrize("path", sorted(p for p in GPU_SUITE.rglob("*.py") if p.parent.name != "scripts"),
                         ids=lambda p: str(p.relative_to(GPU_SUITE)))
def test_the_gpu_suite_imports_only_the_standard_library_and_pytest_at_module_level(path):
    """imagematrix only inside a function, where the suite runs beside the project (host-mode advice, wheelhouse pack)."""
    top = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            top |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top.add(node.module.split(".")[0])
    assert top - set(sys.stdlib_module_names) <= GPU_SUITE_IMPORTS, f"{path.relative_to(ROOT)} imports {sorted(top)}"
