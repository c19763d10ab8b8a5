"""Shared helpers: timing, machine facts, network counters, BuildKit builds timed per step, and clean-up of
exactly what the bench created (images, build-cache records, a registry namespace)."""

from __future__ import annotations

import datetime
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagematrix.tools import docker

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work"
CA = Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
BRIDGE = "docker0"  # BuildKit RUN steps of dockerd's builder reach the network through the default bridge


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class Timed:
    seconds: float
    rc: int
    out: str


def timed(cmd: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Timed:
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, errors="replace")
    return Timed(time.monotonic() - started, proc.returncode, proc.stdout + proc.stderr)


# The project's command line, run by the interpreter that runs the bench: `python -m bench` from a venv that is not
# activated must not run build.py under whatever `python3` comes first on PATH (one without the project's
# dependencies crashes on its first import).
BUILD_PY = [sys.executable, str(ROOT / "build.py")]


def build_py(*args: str) -> list[str]:
    """`build.py ARGS` as a command (BUILD_PY read when called: tests plant another)."""
    return [*BUILD_PY, *args]


class OutcomeError(RuntimeError):
    """A measured command did not do what its metric measures (its exit code, the message it must print, rows
    skipped or built): the metric fails, records no number, and the run exits non-zero without writing results."""


def shown(cmd: list[str]) -> str:
    """A command as a message shows it: `python3 build.py validate ...`, without the interpreter's and the project's
    directories."""
    return " ".join(Path(c).name if c == sys.executable or c.endswith("/build.py") else c for c in cmd)


def expect(result: Timed, ok: bool, cmd: list[str], expected: str, run: str = "") -> Timed:
    """The result, when ok; else an OutcomeError naming the command, what it had to do and what it did."""
    if not ok:
        raise OutcomeError(f"`{shown(cmd)}`{f' ({run})' if run else ''}: expected {expected}, got exit code "
                           f"{result.rc}: {result.out[-600:].strip()}")
    return result


def repeat(cmd: list[str], runs: int, check: Callable[[Timed], bool], expected: str,
           env: dict[str, str] | None = None) -> tuple[list[Timed], Timed]:
    """One warm-up run, then `runs` timed runs, each checked (`expected` says what check wants, for the error);
    returns (timed runs, warm-up run). The first run that fails its check fails the metric."""
    warmup = timed(cmd, env=env)
    expect(warmup, check(warmup), cmd, expected, "warm-up run")
    results = []
    for index in range(runs):
        result = timed(cmd, env=env)
        results.append(expect(result, check(result), cmd, expected, f"timed run {index + 1} of {runs}"))
    return results, warmup


def sh(*cmd: str) -> str:
    """stdout of a command ('' when it fails or is missing)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


# --- machine facts --------------------------------------------------------------------------------------------


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def machine() -> dict[str, Any]:
    mem = sh("free", "-b").splitlines()
    os_name = next((line.split("=", 1)[1].strip('"') for line in Path("/etc/os-release").read_text().splitlines()
                    if line.startswith("PRETTY_NAME=")), "")
    return {
        "nproc": int(sh("nproc") or os.cpu_count() or 0),
        "mem_total_bytes": int(mem[1].split()[1]) if len(mem) > 1 else None,
        "free": "\n".join(mem),
        "loadavg": loadavg(),
        "os": os_name,
        "kernel": platform.release(),
        "disk_free_bytes": shutil.disk_usage(ROOT).free,
        "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), ""),
    }


def versions() -> dict[str, str]:

    cli = docker.cli() if shutil.which("docker") or Path("/usr/bin/docker").exists() else "docker"
    dirty = sh("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no")
    return {
        "python": platform.python_version(),
        "uv": sh("uv", "--version"),
        "docker_client": sh(cli, "version", "--format", "{{.Client.Version}}"),
        "docker_server": sh(cli, "version", "--format", "{{.Server.Version}}"),
        "buildx": sh(cli, "buildx", "version"),
        "git_commit": sh("git", "-C", str(ROOT), "rev-parse", "HEAD") + (" (dirty)" if dirty else ""),
    }


# --- network counters -----------------------------------------------------------------------------------------


def net_dev() -> dict[str, tuple[int, int]]:
    """interface -> (received bytes, transmitted bytes), from /proc/net/dev."""
    out = {}
    for line in Path("/proc/net/dev").read_text().splitlines()[2:]:
        name, _, rest = line.partition(":")
        cols = rest.split()
        out[name.strip()] = (int(cols[0]), int(cols[8]))
    return out


def default_iface() -> str:
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[1] == "00000000":
            return cols[0]
    return "eth0"


@dataclass
class Bytes:
    """Bytes into build containers (transmitted by the docker bridge) and into the host (its default interface)."""

    bridge: int | None
    host: int

    @staticmethod
    def read() -> Bytes:
        dev = net_dev()
        return Bytes(dev[BRIDGE][1] if BRIDGE in dev else None, dev.get(default_iface(), (0, 0))[0])

    def minus(self, earlier: Bytes) -> Bytes:
        bridge = None if self.bridge is None or earlier.bridge is None else self.bridge - earlier.bridge
        return Bytes(bridge, self.host - earlier.host)


# --- timed BuildKit builds --------------------------------------------------------------------------------------

STEP_START = re.compile(r"^#(\d+) \[([^\]]+)\] (.*)")
STEP_END = re.compile(r"^#(\d+) (DONE [\d.]+s|CACHED|ERROR\b.*|CANCELED)")


@dataclass
class Step:
    name: str
    text: str
    status: str = "running"
    seconds: float = 0.0
    bridge_bytes: int | None = None


@dataclass
class Build:
    seconds: float
    rc: int
    bridge_bytes: int | None  # into build containers through the docker bridge
    host_bytes: int  # into the host's default interface (includes everything else the host received)
    steps: list[Step]
    log: str

    def summary(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 1), "rc": self.rc, "bridge_bytes": self.bridge_bytes,
                "host_bytes": self.host_bytes, "log": self.log,
                "steps": [{"step": s.name, "text": s.text[:100], "status": s.status, "seconds": round(s.seconds, 1),
                           "bridge_bytes": s.bridge_bytes} for s in self.steps if s.name != "internal"]}

    def stage_bytes(self, stage: str) -> int:
        return sum(s.bridge_bytes or 0 for s in self.steps if s.name.split()[0] == stage)


def build(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> Build:
    """Run a BuildKit build with plain progress; time it, and count bytes per step (steps of one stage run one
    after another, so the bridge counter between a step's start and end is that step's download)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    steps: dict[str, Step] = {}
    marks: dict[str, tuple[float, Bytes]] = {}
    started, before = time.monotonic(), Bytes.read()
    with open(log_path, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                env={**os.environ, "DOCKER_BUILDKIT": "1", **(env or {})})
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                out.write(line)
                if (m := STEP_START.match(line)) and m.group(1) not in steps:
                    steps[m.group(1)] = Step(m.group(2), m.group(3)[:160])
                    marks[m.group(1)] = (time.monotonic(), Bytes.read())
                elif (m := STEP_END.match(line)) and m.group(1) in steps:
                    step, (t0, b0) = steps[m.group(1)], marks[m.group(1)]
                    step.status = m.group(2).split()[0].rstrip(":")
                    step.seconds = time.monotonic() - t0
                    step.bridge_bytes = Bytes.read().minus(b0).bridge
        except BaseException:  # interrupted: cancel the build rather than let it finish behind the clean-up
            proc.terminate()
            proc.wait()
            raise
        rc = proc.wait()
    total = Bytes.read().minus(before)
    return Build(time.monotonic() - started, rc, total.bridge, total.host, list(steps.values()), str(log_path))


def bake_cmd(cli: str, bake_file: Path, target: str) -> list[str]:
    return [cli, "buildx", "bake", "--progress=plain", "-f", str(bake_file), "--load", target]


def image_size(cli: str, ref: str) -> int:
    return int(sh(cli, "image", "inspect", "-f", "{{.Size}}", ref) or 0)


def du_inside(cli: str, ref: str, paths: list[str]) -> dict[str, int]:
    """Apparent sizes (du -sb) of paths inside a throw-away container of ref."""
    script = "; ".join(f"printf '%s\\t%s\\n' \"$(du -sbx {p} 2>/dev/null | tail -1 | cut -f1)\" '{p}'" for p in paths)
    out = sh(cli, "run", "--rm", "--entrypoint", "sh", ref, "-c", script)
    return {line.split("\t")[1]: int(line.split("\t")[0]) for line in out.splitlines() if line.split("\t")[0].isdigit()}


# --- clean-up of what this run created --------------------------------------------------------------------------


def _docker_api(path: str) -> Any:
    """GET on the Docker Engine API over its unix socket (the CLI does not show build-cache parents)."""

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect("/var/run/docker.sock")

    conn = Conn("localhost", timeout=300)
    conn.request("GET", path)
    return json.loads(conn.getresponse().read())


@dataclass
class Janitor:
    """Tracks what one bench run creates and removes exactly that: images it tagged, build-cache records whose
    RUN command carries its marker (plus their descendants, which only its builds can have created), and its
    registry namespace. It never prunes without an id filter."""

    cli: str
    marker: str
    images: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def image(self, ref: str) -> str:
        self.images.append(ref)
        return ref

    def cache_records(self) -> list[dict[str, Any]]:
        records = _docker_api("/system/df").get("BuildCache") or []
        mine = {r["ID"] for r in records if self.marker in (r.get("Description") or "")}
        grew = True
        while grew:
            kids = {r["ID"] for r in records if r.get("Parent") in mine and r["ID"] not in mine}
            mine |= kids
            grew = bool(kids)
        return [r for r in records if r["ID"] in mine]

    def clean(self) -> dict[str, Any]:
        removed_images = [ref for ref in dict.fromkeys(self.images)
                          if subprocess.run([self.cli, "rmi", ref], capture_output=True).returncode == 0]
        self.images.clear()
        freed, pruned = 0, 0
        for _ in range(5):  # leaves first: a record is prunable once nothing of ours builds on it
            records = self.cache_records()
            if not records:
                break
            parents = {r.get("Parent") for r in records}
            for record in [r for r in records if r["ID"] not in parents]:
                proc = subprocess.run([self.cli, "buildx", "prune", "-f", "--all", "--filter", f"id={record['ID']}"],
                                      capture_output=True, text=True)
                if proc.returncode == 0:
                    pruned += 1
                    freed += record.get("Size") or 0
        left = len(self.cache_records())
        from imagematrix.model.paths import cache_dir

        repos = cache_dir() / "registry" / "storage" / "docker" / "registry" / "v2" / "repositories"
        for ns in self.namespaces:
            if ns.startswith("imagematrix-bench-") and (repos / ns).is_dir():
                shutil.rmtree(repos / ns)
        return {"images_removed": removed_images, "cache_records_pruned": pruned, "cache_bytes_freed": freed,
                "cache_records_left": left, "registry_namespaces_removed": list(self.namespaces)}


@dataclass
class Context:
    """One bench run: the docker CLI, a nonce naming everything it creates, its work directory, run counts."""

    cli: str
    nonce: str
    work: Path
    janitor: Janitor
    runs: int
    docker_runs: int
    secrets: dict[str, Path] = field(default_factory=dict)

    @property
    def marker(self) -> str:
        return self.janitor.marker

    def build_secrets(self) -> dict[str, Path]:
        """The BuildKit secrets the tool passes (`ca-cert`: the host CA bundle; `build-env`: empty)."""
        if not self.secrets:
            from imagematrix.stages.builder import BuildInputs

            self.secrets = BuildInputs(ca_cert=CA if CA.is_file() else None).write_secrets(self.work / "secrets")
        return self.secrets
