"""Multi-node check: a Ray head and a worker container from one image, joined over a private docker network.

    report = cluster.run(cli, image, row, log)

Both containers start through docs/multi-node/ray-node.sh, the start script of the multi-machine recipe (copied in
with `docker cp`, so a remote daemon works too): it checks NCCL_SOCKET_IFNAME/GLOO_SOCKET_IFNAME, puts Ray on that
NIC's address, and the worker waits for the head's port before `ray start --address`. Then: the ray version of each
container is compared (and with the row's lock), `ray status` in the head must list both nodes, and a driver run
in the head sends one task pinned to each node (NodeAffinitySchedulingStrategy); each node must answer with its
own node id and hostname, and with GPUs (`gpus`, detected with nvidia-smi by default) report them and see CUDA.

Containers and network carry the label io.imagematrix.cluster=<name> and are removed in every case: success,
failure, SIGINT and SIGTERM (both raise `cluster_teardown.Interrupted` while a run is in progress; cluster_teardown.teardown itself is not
interruptible). Failures are RuntimeFailure with the fix on a `fix:` line.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from packaging.utils import canonicalize_name

from imagematrix.assist import cluster_checks, cluster_teardown
from imagematrix.model import labels, lockfile, paths
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.matrix import Matrix, Row
from imagematrix.stages import locks
from imagematrix.tools import docker, nvidia

SCRIPT = paths.ROOT / "docs" / "multi-node" / "ray-node.sh"
SCRIPT_IN_IMAGE = "/usr/local/bin/ray-node.sh"  # where the compose recipe mounts it, too
LABEL = labels.CLUSTER
PREFIX = "imagematrix-cluster"
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}\Z")
RESULT_MARK = "IMAGEMATRIX-CLUSTER-RESULT "
# Light nodes: one CPU each, a small object store (Ray's minimum is 75 MiB), no dashboard.
RAY_OPTIONS = ["--num-cpus", "1", "--object-store-memory", str(100 * 1024 * 1024), "--disable-usage-stats"]
HEAD_OPTIONS = ["--include-dashboard=false"]
REACH_FIX = ("check that the worker's address (ray start --address) names the head's IP and port, that both nodes "
             "are on the same network through the NIC named by NCCL_SOCKET_IFNAME/GLOO_SOCKET_IFNAME, and that no "
             "firewall blocks TCP between them (Ray uses more ports than the head's)")
VERSION_FIX = ("run every node from the same image (a row-id tag or a digest, not a moving alias): Ray and Python "
               "must be the same version on all nodes")

Log = Callable[[str], None]


_docker = cluster_teardown.docker_on


def detect_gpus() -> bool:
    """True when nvidia-smi on this host lists a GPU."""
    return bool(nvidia.gpus())


def gpu_option(gpus: str | None) -> str | None:
    """The `docker run --gpus` value: 'auto' -> 'all' when this host has NVIDIA GPUs, None/'none'/'' -> no GPUs."""
    if gpus == "auto":
        return "all" if detect_gpus() else None
    if gpus in (None, "", "none"):
        return None
    return gpus


def locked_version(matrix: Matrix, row: Row, package: str = "ray") -> str | None:
    """The version the row's lock pins for package (None when the lock or the pin is missing)."""
    if not locks.lock_path(matrix, row).exists():
        return None
    entry = lockfile.parse(locks.read_lock(matrix, row)).get(canonicalize_name(package))
    return entry.version if entry else None


# --- the driver run in the head --------------------------------------------------------------------------------

DRIVER = paths.IN_IMAGE / "ray_driver.py"  # fed to `python -` in the head container


# --- the run ----------------------------------------------------------------------------------------------------


def run(cli: str, image: str, row: Row | None = None, log: Log = print, *, matrix: Matrix | None = None,
        worker_image: str | None = None, gpus: str | None = "auto", name: str | None = None,
        nic: str | None = "eth0", worker_address: str | None = None, head_wait: float = 60,
        join_timeout: float = 180, task_timeout: float = 120, check_versions: bool = True,
        expected_ray: str | None = None) -> cluster_checks.ClusterReport:
    """Start a head and a worker container, check both joined and each runs a task, tear everything down.

    row (with matrix) supplies the expected ray version (the lock's pin) unless expected_ray is given.
    worker_image: run the worker from another image (default: image). nic: the NIC passed as
    NCCL_SOCKET_IFNAME/GLOO_SOCKET_IFNAME (None: unset). worker_address: what the worker joins (default: the
    head's). check_versions=False skips the version comparison, leaving a mismatch to Ray and the start script.
    """
    started = time.monotonic()
    name = name or f"{PREFIX}-{uuid.uuid4().hex[:8]}"
    if not NAME_RE.fullmatch(name):
        raise InputError(f"invalid cluster name {name!r}", fix="use letters, digits, '_', '.', '-' (63 at most)")
    worker_image = worker_image or image
    if expected_ray is None and row is not None and matrix is not None:
        expected_ray = locked_version(matrix, row)
    docker_gpus = gpu_option(gpus)
    if not SCRIPT.is_file():
        raise cluster_checks._fail(f"the recipe's start script {SCRIPT} is missing", "run from a checkout of this repository "
                    "(pip install -e .): the containers start through docs/multi-node/ray-node.sh")
    docker.require_daemon()
    for ref in dict.fromkeys((image, worker_image)):
        if _docker(cli, "image", "inspect", ref).returncode != 0:
            raise cluster_checks._fail(f"no image {ref} on this Docker host", "build it (`python build.py build --row ID`) or "
                        "`docker pull` it first")
    network = f"{name}-net"
    roles = {"head": f"{name}-head", "worker": f"{name}-worker"}
    hostnames = {c: role for role, c in roles.items()}  # hostname = container name
    port = 6379
    address = worker_address or f"head:{port}"
    guard = cluster_teardown.SignalGuard()
    try:
        guard.install()
        log(f"cluster {name}: head and worker from {image}"
            + (f" (worker: {worker_image})" if worker_image != image else "")
            + (f", GPUs: --gpus {docker_gpus}" if docker_gpus else ", CPU only"))
        proc = _docker(cli, "network", "create", "--label", f"{LABEL}={name}", network)
        if proc.returncode != 0:
            raise RuntimeFailure(f"docker network create {network} failed: {proc.stderr.strip()}")
        env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_PORT": str(port), "RAY_NODES": "2",
               "RAY_HEAD_ADDRESS": address, "RAY_HEAD_WAIT": f"{head_wait:.0f}"}
        if nic is not None:
            env |= {"NCCL_SOCKET_IFNAME": nic, "GLOO_SOCKET_IFNAME": nic}
        commands = {"head": ["head", *RAY_OPTIONS, *HEAD_OPTIONS, "--", "sleep", "infinity"],
                    "worker": ["worker", *RAY_OPTIONS]}
        for role, container in roles.items():
            args = ["create", "--name", container, "--hostname", container, "--network", network,
                    "--label", f"{LABEL}={name}", "--shm-size", "512m", "--entrypoint", "bash"]
            if role == "head":
                args += ["--network-alias", "head"]
            if docker_gpus:
                args += ["--gpus", docker_gpus]
            for key, value in env.items():
                args += ["-e", f"{key}={value}"]
            ref = image if role == "head" else worker_image
            proc = _docker(cli, *args, ref, SCRIPT_IN_IMAGE, *commands[role])
            if proc.returncode != 0:
                raise _docker_failure(f"docker create {container}", proc.stderr, docker_gpus)
            proc = _docker(cli, "cp", str(SCRIPT), f"{container}:{SCRIPT_IN_IMAGE}")
            if proc.returncode != 0:
                raise RuntimeFailure(f"docker cp {SCRIPT.name} into {container} failed: {proc.stderr.strip()}")
        for container in roles.values():
            proc = _docker(cli, "start", container)
            if proc.returncode != 0:
                raise _docker_failure(f"docker start {container}", proc.stderr, docker_gpus)
        log(f"started {roles['head']} and {roles['worker']} on network {network}; the worker joins {address}")
        ray_version, python_version = _versions(cli, roles, expected_ray, check_versions, log)
        join_seconds, status = _wait_for_nodes(cli, roles, address, join_timeout, log)
        log(f"2 nodes joined in {join_seconds:.0f} s; running a task pinned to each node")
        entries = _drive(cli, roles["head"], bool(docker_gpus), task_timeout)
        _wait_for_head_command(cli, roles["head"], log)
        nodes = cluster_checks.verify(entries, hostnames, roles, bool(docker_gpus))
        for n in nodes:
            gpu = f", GPU {n.gpus:g}: {', '.join(n.cuda_devices)}" if docker_gpus else ""
            log(f"{n.role} {n.hostname} (node {n.node_id[:12]}, {n.ip}, CPU {n.cpus:g}{gpu}) ran its task")
        return cluster_checks.ClusterReport(name=name, image=image, worker_image=worker_image, ray_version=ray_version,
                             python_version=python_version, nodes=nodes, gpus=docker_gpus,
                             join_seconds=join_seconds, seconds=time.monotonic() - started, ray_status=status,
                             logs={role: _logs(cli, container) for role, container in roles.items()})
    finally:
        # Teardown is not interruptible: a signal now is remembered, and raised once everything is removed.
        guard.tearing_down = True
        try:
            cluster_teardown.teardown(cli, name, log)
        finally:
            guard.restore()
        if guard.pending:
            raise cluster_teardown.Interrupted(guard.pending[0])


def _docker_failure(what: str, stderr: str, docker_gpus: str | None) -> RuntimeFailure:
    text = stderr.strip()
    if docker_gpus and re.search(r"gpu|nvidia|device driver", text, re.I):
        return cluster_checks._fail(f"{what} failed with --gpus {docker_gpus}: {text}",
                     "install the NVIDIA Container Toolkit on this host (`nvidia-ctk runtime configure --runtime=docker`, "
                     "then restart dockerd), or run without GPUs (--gpus none)")
    return RuntimeFailure(f"{what} failed: {text}")


def _versions(cli: str, roles: dict[str, str], expected: str | None, check: bool, log: Log) -> tuple[str, str]:
    """`ray --version` and Python's version in each container; a difference is a failure (unless check is off)."""
    def ask(container: str) -> subprocess.CompletedProcess:
        return _docker(cli, "exec", container, "sh", "-c",
                       "ray --version && python -c 'import platform; print(platform.python_version())'")

    with ThreadPoolExecutor(2) as pool:  # both at once: each imports ray (seconds on a busy machine)
        answers = dict(zip(roles, pool.map(ask, roles.values()), strict=True))
    found: dict[str, tuple[str, str]] = {}
    for role, proc in answers.items():
        if proc.returncode != 0:
            _raise_if_exited(cli, roles, "")
            raise cluster_checks._fail(f"`ray --version` fails in the {role} ({roles[role]}): "
                        f"{(proc.stderr or proc.stdout).strip()[-800:]}",
                        "the image must carry a working ray CLI (every row's lock pins ray); rebuild it")
        ray_line, _, python = proc.stdout.strip().partition("\n")
        found[role] = (ray_line.split("version")[-1].strip(" ,:"), python.strip())
    (head_ray, head_py), (worker_ray, worker_py) = found["head"], found["worker"]
    log(f"ray {head_ray} (Python {head_py}) in the head, ray {worker_ray} (Python {worker_py}) in the worker")
    if check and (head_ray, head_py) != (worker_ray, worker_py):
        raise cluster_checks._fail(f"Ray version mismatch between the nodes: the head ({roles['head']}) runs ray {head_ray} with "
                    f"Python {head_py}, the worker ({roles['worker']}) ray {worker_ray} with Python {worker_py}",
                    VERSION_FIX)
    if check and expected and head_ray != expected:
        raise cluster_checks._fail(f"the image runs ray {head_ray}, but the row's lock pins ray=={expected}",
                    "rebuild the image from the current lock (`python build.py build --row ID`)")
    return head_ray, head_py


def _logs(cli: str, container: str) -> str:
    proc = _docker(cli, "logs", "--tail", "300", container)
    return proc.stdout + proc.stderr


def _raise_if_exited(cli: str, roles: dict[str, str], address: str) -> None:
    proc = _docker(cli, "inspect", "-f", "{{.Name}} {{.State.Status}} {{.State.ExitCode}}", *roles.values())
    for line in proc.stdout.splitlines():
        container, status, code = line.lstrip("/").split()
        if status == "running":
            continue
        role = "head" if container.endswith("-head") else "worker"
        logs = _logs(cli, container)
        found = cluster_checks.script_error(logs)
        if found:
            what, fix = found
            raise cluster_checks._fail(f"the {role} ({container}) stopped (exit code {code}): {what}", fix or REACH_FIX)
        tail = "\n    ".join(logs.strip().splitlines()[-15:])
        raise cluster_checks._fail(f"the {role} ({container}) stopped (exit code {code}); its last output:\n    {tail}",
                    REACH_FIX if role == "worker" and address else "read the output above")


def _wait_for_nodes(cli: str, roles: dict[str, str], address: str, timeout: float, log: Log) -> tuple[float, str]:
    started = time.monotonic()
    deadline = started + timeout
    log(f"waiting for `ray status` in the head to list 2 nodes (up to {timeout:.0f} s)")
    last = -1
    while True:
        _raise_if_exited(cli, roles, address)
        proc = _docker(cli, "exec", roles["head"], "ray", "status", timeout=60)
        nodes = cluster_checks.count_nodes(proc.stdout) if proc.returncode == 0 else 0
        if nodes != last:
            log(f"ray status: {nodes} of 2 nodes")
            last = nodes
        if nodes >= 2:
            return time.monotonic() - started, proc.stdout
        if time.monotonic() > deadline:
            tail = "\n    ".join(_logs(cli, roles["worker"]).strip().splitlines()[-10:])
            raise cluster_checks._fail(f"the worker did not join the head at {address} within {timeout:.0f} s "
                        f"(`ray status` lists {nodes} node(s)); the worker's last output:\n    {tail}", REACH_FIX)
        time.sleep(2)


def _wait_for_head_command(cli: str, head: str, log: Log, timeout: float = 60) -> None:
    """The head's start script runs its command (`sleep infinity` here, `vllm serve` in the recipe) once 2 nodes
    joined: it polls `ray status` on its own, so it may be a few seconds behind."""
    deadline = time.monotonic() + timeout
    while "ray-node: running: " not in (logs := _logs(cli, head)):
        if time.monotonic() > deadline:
            tail = "\n    ".join(logs.strip().splitlines()[-5:])
            raise cluster_checks._fail(f"the head's start script did not run its command within {timeout:.0f} s of both nodes "
                        f"joining; its last output:\n    {tail}",
                        "check RAY_NODES (the number of nodes the head waits for, head included) in its environment")
        time.sleep(1)
    log("the head's start script saw both nodes and ran its command")


def _drive(cli: str, head: str, gpus: bool, timeout: float) -> list[dict]:
    proc = _docker(cli, "exec", "-i", head, "python", "-", "1" if gpus else "0", str(timeout),
                   input=DRIVER.read_text(), timeout=timeout + 120)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    output = (proc.stderr + proc.stdout).strip()
    last = output.splitlines()[-1] if output else "(no output)"
    fix = "read the traceback; the driver runs `python -` in the head container"
    if re.search(r"requires NumPy|numpy\.core\.multiarray failed|compiled using NumPy", output):
        fix = ("the image's packages disagree on NumPy (Ray imports pyarrow for every task): pin a pyarrow built for "
               "the row's numpy in matrix.yaml `extras` (pyarrow 26 needs NumPy 2; 25.x works with NumPy 1.x), "
               "then lock, render and build the row again")
    tail = "\n    ".join(output.splitlines()[-12:])
    raise cluster_checks._fail(f"the driver in the head ({head}) failed before any task answered (exit {proc.returncode}): {last}\n"
                f"    {tail}", fix)
