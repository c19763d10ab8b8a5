"""debootstrap: the one place that runs it (a minimal Debian/Ubuntu root filesystem from a mirror)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def available() -> bool:
    return shutil.which("debootstrap") is not None


SCRIPTS = Path("/usr/share/debootstrap/scripts")
# Every Ubuntu suite since 7.10 uses the same script (debootstrap ships each as a link to it); Debian's too
# (sid). An older debootstrap (bookworm's knows Ubuntu only up to its own release) lacks the newer names.
FAMILY_SCRIPT = {"ubuntu": "gutsy", "debian": "sid"}


def script_for(suite: str, distro: str, scripts: Path = SCRIPTS) -> str | None:
    """The script argument debootstrap needs for suite: None when it knows the suite, else its family's script."""
    if (scripts / suite).exists():
        return None
    family = scripts / FAMILY_SCRIPT.get(distro, "")
    return str(family) if distro in FAMILY_SCRIPT and family.exists() else None


def bootstrap(suite: str, target: Path, mirror: str, http_proxy: str | None = None,
              distro: str = "debian", components: list[str] | None = None,
              arch: str | None = None) -> subprocess.CompletedProcess:
    """`debootstrap --variant=minbase [--arch=A] [--components=...] SUITE TARGET MIRROR [SCRIPT]`, output captured.
    arch: a Debian architecture other than this host's (arm64): its second stage runs under the emulation `setup`
    registers (qemu-user), in one pass."""
    env = {**os.environ}
    if http_proxy:
        env["http_proxy"] = http_proxy
    script = script_for(suite, distro)
    extra = ([f"--arch={arch}"] if arch else []) + ([f"--components={','.join(components)}"] if components else [])
    return subprocess.run(["debootstrap", "--variant=minbase", *extra, suite, str(target), mirror, *([script] if script else [])],
                          capture_output=True, text=True, env=env)
