"""Run a program with its output copied into a log file (the one way every stage does it)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path


def run_logged(cmd: list[str], log_path: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None,
               on_line: Callable[[str], None] | None = None) -> int:
    """Run cmd with stdout and stderr written to log_path (after a `$ cmd` line); its exit status.

    With on_line, each output line is also handed to it as it arrives (progress from a long build)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(map(str, cmd)) + "\n")
        log.flush()
        if on_line is None:
            return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env).returncode
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=env, text=True,
                                errors="replace")
        for line in proc.stdout:
            log.write(line)
            on_line(line)
        return proc.wait()
