"""The unit tier is pure: its tests start no process, listen on no socket, fork nothing and signal no other process.
A test that does fails here, saying so; it belongs in tests/process (docs/contributing/tests.md). Stand-ins for
subprocess.run and the like are pure and welcome."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest


def _refused(what: str):
    def refuse(*args, **kwargs):
        pytest.fail(f"tests/unit is pure, and this test {what}: move it to tests/process (docs/contributing/tests.md)",
                    pytrace=False)

    return refuse


@pytest.fixture(autouse=True)
def _pure(monkeypatch):
    own_kill = os.kill

    def kill(pid, sig):
        if pid != os.getpid():
            _refused(f"signals process {pid}")()
        own_kill(pid, sig)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", _refused("starts a process"))
    monkeypatch.setattr(socket.socket, "listen", _refused("listens on a socket (a server)"))
    monkeypatch.setattr(os, "fork", _refused("forks"))
    monkeypatch.setattr(os, "posix_spawn", _refused("starts a process"))
    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(os, "killpg", _refused("signals a process group"))
