"""Run a program with its output copied into a log file (the one way every stage does it), URL credentials redacted."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from imagematrix.model import secrets


def run_logged(cmd: list[str], log_path: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None,
               on_line: Callable[[str], None] | None = None, header: str = "") -> int:
    """Run cmd with stdout and stderr written to log_path (after header, then a `$ cmd` line); its exit status.

    Every line passes secrets.redact_text on its way into the log (a mirror or index URL with credentials that a
    tool prints stays out of build-logs/). With on_line, each line is also handed to it as it arrives (progress)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write(header)
        log.write(secrets.redact_text("$ " + " ".join(map(str, cmd))) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=env, text=True,
                                errors="replace")
        for line in proc.stdout:
            log.write(secrets.redact_text(line))
            if on_line:
                on_line(line)
        return proc.wait()
