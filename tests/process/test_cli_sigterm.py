"""`build.py` killed with SIGTERM (a cancelled CI job, `kill PID`) cleans up like Ctrl-C: the command's `finally`
blocks run (a base bootstrap's temporary root filesystem is removed), the child it waits for is killed, and it exits
143 with "interrupted". Before, Python's default SIGTERM ended the process at once and left
~/.cache/imagematrix/imagematrix-rootfs-*/ behind with debootstrap still running.

A real process and a real signal; the command is a stand-in (the real base stage needs root, debootstrap and a
mirror) with the same shape: a temporary folder removed in `finally` around a child process it waits for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STAND_IN = textwrap.dedent("""
    import shutil, subprocess, sys, tempfile, types
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from imagematrix.cli import app

    def run(args):
        work = Path(tempfile.mkdtemp(prefix="imagematrix-rootfs-", dir=sys.argv[2]))
        try:
            subprocess.run(["sh", "-c", f"echo $$ > {sys.argv[2]}/child.pid; exec sleep 60"])
        finally:
            shutil.rmtree(work)
        return 0

    app.command = lambda name: types.SimpleNamespace(run=run, add_arguments=lambda parser: None)
    sys.exit(app.main(["validate"]))
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_runs_the_commands_cleanup_and_kills_its_child(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", STAND_IN, str(ROOT), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "child.pid"
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline \
            and proc.poll() is None:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert list(tmp_path.glob("imagematrix-rootfs-*")), "the stand-in made its work folder"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted" in err
    assert not list(tmp_path.glob("imagematrix-rootfs-*")), "the command's finally did not run"
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the child the command waited for outlived it"


def test_main_leaves_the_callers_sigterm_handling_as_it_was():
    from imagematrix.cli import app

    before = signal.getsignal(signal.SIGTERM)
    assert app.main(["validate", "--matrix", str(ROOT / "no-such-matrix.yaml")]) == 2
    assert signal.getsignal(signal.SIGTERM) == before
