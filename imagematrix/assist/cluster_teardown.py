"""Leaving nothing behind after `test --cluster`: removal of the run's containers and network (also after a
failure), and signals held off while that runs."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

from imagematrix.model import labels
from imagematrix.tools import docker

Log = Callable[[str], None]
LABEL = labels.CLUSTER


def docker_on(cli: str, *args: str, timeout: float = 120, input: str | None = None):
    """`docker ARGS` with the docker CLI the cluster run was started with (the cluster modules' one way to docker)."""
    return docker.run(*args, timeout=timeout, input=input, program=cli)

class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while a cluster was up (after teardown, the caller exits 128 + signum)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


def leftovers(cli: str, name: str) -> list[str]:
    """Containers and networks of the run `name` that still exist (by label, and by name prefix)."""
    found = []
    for args in (["ps", "-a", "--filter", f"label={LABEL}={name}", "--format", "container {{.Names}}"],
                 ["ps", "-a", "--filter", f"name={name}", "--format", "container {{.Names}}"],
                 ["network", "ls", "--filter", f"label={LABEL}={name}", "--format", "network {{.Name}}"],
                 ["network", "ls", "--filter", f"name={name}", "--format", "network {{.Name}}"]):
        proc = docker_on(cli, *args, timeout=60)
        found += [line for line in proc.stdout.splitlines() if line.strip() and line not in found]
    return found


def teardown(cli: str, name: str, log: Log) -> None:
    """Remove the run's containers and network; retried, since a create cut short may land after a first removal."""
    containers = [f"{name}-head", f"{name}-worker"]
    for attempt in range(4):
        docker_on(cli, "rm", "-f", "-v", *containers, timeout=120)
        labelled = docker_on(cli, "ps", "-aq", "--filter", f"label={LABEL}={name}", timeout=60).stdout.split()
        if labelled:
            docker_on(cli, "rm", "-f", "-v", *labelled, timeout=120)
        docker_on(cli, "network", "rm", f"{name}-net", timeout=60)
        left = leftovers(cli, name)
        if not left:
            log(f"removed the containers and the network of {name}")
            return
        time.sleep(1 + attempt)
    log(f"warning: could not remove {', '.join(left)}; remove them with `docker rm -f` / `docker network rm`")


class SignalGuard:
    """While a cluster is up, SIGINT and SIGTERM raise Interrupted; during teardown they are only remembered.

    Handlers can be set in the main thread only; elsewhere signals keep their handlers (teardown still runs in
    `finally` on any exception).
    """

    def __init__(self) -> None:
        self.tearing_down = False
        self.pending: list[int] = []
        self.previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.tearing_down:
            self.pending.append(signum)
            return
        raise Interrupted(signum)

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore(self) -> None:
        for sig, old in self.previous.items():
            signal.signal(sig, old)
        self.previous = {}
