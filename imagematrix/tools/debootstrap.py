"""debootstrap: the one place that runs it (a minimal Debian/Ubuntu root filesystem from a mirror)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def available() -> bool:
    return shutil.which("debootstrap") is not None


def bootstrap(suite: str, target: Path, mirror: str, http_proxy: str | None = None) -> subprocess.CompletedProcess:
    """`debootstrap --variant=minbase SUITE TARGET MIRROR`, output captured."""
    env = {**os.environ}
    if http_proxy:
        env["http_proxy"] = http_proxy
    return subprocess.run(["debootstrap", "--variant=minbase", suite, str(target), mirror],
                          capture_output=True, text=True, env=env)
