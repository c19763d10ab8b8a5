"""The repository keeps its promises: CI runs the README's main job and test command; build.py is a working entry point."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def _ci_lines() -> list[str]:
    """.ci/run's lines with its venv's Python written as README writes it: `"$py"` is .venv/bin/python there."""
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "py=.venv/bin/python" in lines
    return [line.replace('"$py"', ".venv/bin/python") for line in lines]


def _readme_block(heading: str) -> list[str]:
    section = (ROOT / "README.md").read_text().split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"((?:^    \S.*\n)+)", section, re.M).group(1)
    return [line.strip().split("  #")[0].strip() for line in block.splitlines()]


def test_ci_does_the_readme_set_up_in_a_venv_it_never_activates():
    """README's set-up on a stock Debian/Ubuntu python3 (PEP 668 refuses a bare pip install): a venv, the project
    installed into it; .ci/run does the same with the distribution's python3, and never activates it."""
    commands = _readme_block("Set-up")
    assert commands == ["apt-get install -y python3-venv", "python3 -m venv .venv",
                        ".venv/bin/python -m pip install -e '.[test]'"]
    ci = _ci_lines()
    venv = ci.index('"$stock" -m venv .venv')
    install = next(i for i, line in enumerate(ci) if line.startswith(".venv/bin/python -m pip install ")
                   and line.endswith(" -e '.[test]'"))
    assert any(line.startswith("apt-get install -y -q python3-venv") for line in ci[:venv])
    assert "stock=/usr/bin/python3" in ci[:venv] and venv < install
    assert not any("bin/activate" in line for line in ci)
    assert not any(re.match(r"python3? (build\.py|-m (pytest|bench|pip))", line) for line in ci), \
        "after the set-up every command runs with the venv's Python"


def test_ci_runs_the_readme_test_command():
    (command,) = _readme_block("Run the tests")
    assert any(line.startswith(command) for line in _ci_lines())


def test_ci_runs_the_readme_main_job():
    """README's main job (setup, then build of one row) is what .ci/run does on a fresh machine."""
    commands = _readme_block("The main job")
    assert commands[0] == ".venv/bin/python build.py setup"
    assert commands[1].startswith(".venv/bin/python build.py build --row ")
    ci = _ci_lines()
    assert all(command in ci for command in commands), commands


def test_build_py_entry_point_exit_codes(tmp_path):
    ok = subprocess.run([sys.executable, "build.py", "render", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "m.yaml").write_text("rows: [1]\n")
    bad = subprocess.run([sys.executable, "build.py", "validate", "--matrix", str(tmp_path / "m.yaml")],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "a row must be a mapping" in bad.stderr


def test_every_test_directory_is_collected_by_the_readme_command():
    """pytest skips directories named like build outputs (`build`, `dist`, ...) unless told otherwise: every
    directory holding tests must be collected by plain `python3 -m pytest`."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True)
    collected = {line.split("::")[0].rsplit("/", 1)[0] for line in proc.stdout.splitlines() if "::" in line}
    on_disk = {str(p.parent.relative_to(ROOT)) for p in ROOT.glob("tests/**/test_*.py")}
    assert on_disk <= collected, on_disk - collected


def test_no_file_names_the_old_home_of_the_suites():
    """The suites moved from tests/smoke to imagematrix/suites (issue 27, item 4). Left alone: the GPU run records and
    their logs (what ran, as it was named then) and the tiny tokenizer's training text (a new text is a new model)."""
    old = "tests" + "/smoke"
    kept = ("docs/gpu-runs/", "docs/gpu-runs.md", "imagematrix/suites/gpu/assets/corpus.txt",
            "imagematrix/suites/gpu/assets/tiny-llama/")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    naming = sorted(name for name in (f.decode() for f in files if f) if not name.startswith(kept)
                    and (ROOT / name).is_file() and old.encode() in (ROOT / name).read_bytes()
                    and name not in ("tests/process/test_repo.py", "tests/unit/test_docs_links.py"))
    assert not naming, f"{naming} name {old}: the suites are in imagematrix/suites/cpu and imagematrix/suites/gpu"
