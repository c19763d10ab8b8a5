"""uv, the one place that runs it: find its binary, `uv pip compile` for a Python and platform."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from imagematrix.model import paths
from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import pypi

# Wheels for this platform run on glibc >= 2.35 (Ubuntu 22.04, Debian 12): every supported base.
PLATFORM = "x86_64-manylinux_2_35"
# uv's --python-platform for each platform a row may name (model/fields.PLATFORMS): the same glibc floor on arm64.
PLATFORMS = {"linux/amd64": PLATFORM, "linux/arm64": "aarch64-manylinux_2_35"}



def binary() -> str:
    """uv's binary as the `uv` package finds it (beside this Python, also in a venv that is not activated), else PATH."""
    try:
        from uv import find_uv_bin
        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        pass
    uv = shutil.which("uv")
    if not uv:
        raise RuntimeFailure("uv is not installed: run `pip install -e .` (it brings uv) or `pip install uv`")
    return uv



def compile_file(spec: Path, exclude_newer: str | None = None, refresh: bool = False) -> subprocess.CompletedProcess:
    """`uv pip compile SPEC` with hashes for PLATFORM (the build tools' lock); refresh: as compile_requirements."""
    cmd = [binary(), "pip", "compile", str(spec), "--python-platform", PLATFORM, "--generate-hashes",
           "--no-header", "--quiet", "--color", "never", *(["--exclude-newer", exclude_newer] if exclude_newer else []),
           *(["--refresh"] if refresh else []), "--default-index", pypi.index_url()]
    return subprocess.run(cmd, capture_output=True, text=True)


def compile_requirements(requirements: str, python: str, *, overrides: str = "", constraints: str = "",
                         hashes: bool = False, offline: bool = False, exclude_newer: str | None = None,
                         refresh: bool = False, python_platform: str = PLATFORM,
                         only_binary: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`uv pip compile` of requirements text for python on python_platform (a value of PLATFORMS); uv's process
    (stdout: the resolution). only_binary: packages uv must take as wheels, never build from an sdist.

    exclude_newer (RFC 3339): only files uploaded before then, so a resolution can be repeated.
    refresh (uv --refresh): revalidate every cached index page and file with the index. Without it uv answers from
    its cache a page it holds as fresh (PyPI's pages say max-age=600), and a page read before a release misses it:
    a lock or a check so resolved can pin older transitive releases than its cutoff gives (issue 26, item 11)."""
    with tempfile.TemporaryDirectory(prefix="uv-", dir=paths.scratch_dir()) as tmp:
        Path(tmp, "requirements.in").write_text(requirements)
        # Paths relative to the temp dir (uv runs there): uv writes `# via -r <path>` into the lock, and a random
        # temp path would make every re-lock differ, and with it the lock digest and the image's input digest.
        cmd = [binary(), "pip", "compile", "requirements.in", "--python-version", python, "--python-platform", python_platform,
               "--no-header", "--quiet", "--color", "never", "--annotation-style", "split"]
        for option, name, text in (("--override", "overrides.txt", overrides),
                                   ("--constraint", "constraints.txt", constraints)):
            if text:
                Path(tmp, name).write_text(text)
                cmd += [option, name]
        if hashes:
            cmd.append("--generate-hashes")
        for package in only_binary:
            cmd += ["--only-binary", package]
        if offline:
            cmd.append("--offline")
        if exclude_newer:
            cmd += ["--exclude-newer", exclude_newer]
        if refresh:
            cmd.append("--refresh")
        cmd += ["--default-index", pypi.index_url()]  # the same index the metadata reader uses (PIP_INDEX_URL too)
        return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, cwd=tmp)

