"""Packages the row pins besides the stack (its `extras`, e.g. unsloth next to verl), imported on the GPU: some refuse
to import without one (knowledge/extras.yaml), so the CPU smoke tests can only find them and reach their GPU check."""

from __future__ import annotations

import gpusmoke
import pytest

pytestmark = pytest.mark.gpu


def test_extras_import_on_the_gpu(torch, smoke, run_python, report):
    extras = gpusmoke.extra_modules(smoke)
    if not extras:
        pytest.skip("no row given (host mode without --row/--row-json)" if smoke.row is None
                    else f"row {smoke.row.id} pins no extras")
    for dist, module in extras:
        ran = run_python(["-c", f"import {module}"], timeout=600)  # a fresh process: unsloth patches what it imports
        assert ran.returncode == 0, ran.explain(f"import {module} ({dist}=={smoke.row.pin(dist)}) failed on the GPU")
    report(f"extras imported on the GPU: {', '.join(module for _, module in extras)}")
