"""nvidia-smi on this host: the one place that runs it (the in-image preflight and probe carry their own)."""

from __future__ import annotations

import shutil
import subprocess


def gpus() -> list[str]:
    """The `nvidia-smi -L` lines (one per GPU); empty without nvidia-smi or a driver."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    proc = subprocess.run([smi, "-L"], capture_output=True, text=True)
    return [line for line in proc.stdout.splitlines() if line.startswith("GPU ")] if proc.returncode == 0 else []
