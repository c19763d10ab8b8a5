""".ci/run's first command (issue 13, item 2 and "tests that stay"): `build.py validate` on empty caches, before
anything warms them, from a fresh venv that is not activated and with no uv on PATH, so build.py must find the
venv's own uv (it once said "uv is not installed" there)."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT

SCRIPT = (ROOT / ".ci" / "run").read_text()


def test_validate_runs_cold_from_a_venv_that_is_not_activated_before_setup():
    lines = [line.strip() for line in SCRIPT.splitlines()]
    venv = next(i for i, line in enumerate(lines) if re.fullmatch(r'"\$stock" -m venv "\$cold/venv"', line))
    install = next(i for i, line in enumerate(lines) if line.startswith('"$cold/venv/bin/python" -m pip install')
                   and line.endswith(" -e ."))
    run = next(i for i, line in enumerate(lines) if line == '"$cold/venv/bin/python" build.py validate')
    setup = lines.index('"$py" build.py setup')
    assert venv < install < run < setup
    command = lines[run - 1]  # the environment of that command, on the line before the continuation
    assert command.startswith('env PATH="${no_uv_path%:}"') and command.endswith("\\")
    assert 'UV_CACHE_DIR="$cold/uv"' in command and 'IMAGEMATRIX_CACHE="$cold/imagematrix"' in command
    assert not any("bin/activate" in line for line in lines[:setup])


def test_the_path_it_gives_that_run_holds_no_uv(tmp_path):
    """The PATH filter of .ci/run, run by bash: the directories that hold an executable uv go, the rest stay."""
    line = next(line for line in SCRIPT.splitlines() if line.startswith("no_uv_path="))
    with_uv, without = tmp_path / "venv-bin", tmp_path / "other"
    with_uv.mkdir(), without.mkdir()
    (with_uv / "uv").write_text("#!/bin/sh\n")
    (with_uv / "uv").chmod(0o755)
    proc = subprocess.run(["bash", "-c", f'set -euo pipefail; {line}; printf %s "${{no_uv_path%:}}"'],
                          capture_output=True, text=True, env={"PATH": f"{with_uv}:{without}:/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{without}:/usr/bin:/bin"
