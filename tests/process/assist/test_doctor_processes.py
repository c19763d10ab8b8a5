"""The tests of tests/unit/assist/test_doctor.py that start a process, serve HTTP or kill:
the process tier. The pure ones stay there."""

from __future__ import annotations

import json
import platform


def test_probe_of_this_python_as_json(run):
    result = run("doctor", "--json")
    assert result.code in (0, 1)
    data = json.loads(result.out)
    assert data["facts"]["python"] == platform.python_version()
    assert set(data["facts"]["packages"]) >= {"verl", "vllm", "torch", "tensordict", "transformers"}
