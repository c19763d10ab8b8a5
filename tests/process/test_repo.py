"""The repository keeps its promises: CI runs the README's main job and test command; build.py is a working entry point."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run the tests", 1)[1]
    command = re.search(r"^    (\S.*)$", section, re.M).group(1)
    assert command in (ROOT / ".ci" / "run").read_text()


def test_ci_runs_the_readme_main_job():
    """README's main job (setup, then build of one row) is what .ci/run does on a fresh machine."""
    section = (ROOT / "README.md").read_text().split("## The main job", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"((?:^    \S.*\n)+)", section, re.M).group(1)
    commands = [line.strip().split("  #")[0].strip() for line in block.splitlines()]
    assert commands[0] == "python3 build.py setup" and commands[1].startswith("python3 build.py build --row ")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
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
