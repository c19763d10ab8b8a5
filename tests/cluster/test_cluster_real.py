"""A real two-node Ray cluster from a real image (marked `slow`): what `build.py test --cluster` runs.

Every test uses a cluster name of its own and checks that no container or network carrying it is left, whatever
happened: success, failure, SIGINT, SIGTERM.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from imagematrix.assist import cluster, cluster_checks, cluster_teardown
from imagematrix.model.errors import RuntimeFailure
from tests.cluster.conftest import derived_image, wheel
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _run_failing(cli, image, name, **kw) -> tuple[str, list[str], float]:
    logs: list[str] = []
    started = time.monotonic()
    with pytest.raises(RuntimeFailure) as info:
        cluster.run(cli, image, None, logs.append, name=name, gpus="none", **kw)
    seconds = time.monotonic() - started
    print(f"{info.value}\n({seconds:.0f} s)")
    assert cluster_teardown.leftovers(cli, name) == [], logs
    return str(info.value), logs, seconds


@pytest.fixture(scope="module")
def joined(cli, image, row, matrix):
    """One real cluster (GPUs when this host has them); the run's report, or its failure."""
    logs: list[str] = []
    started = time.monotonic()
    try:
        report = cluster.run(cli, image, row, logs.append, matrix=matrix)
    except RuntimeFailure as exc:
        report = exc
    print(f"cluster run on {image}: {time.monotonic() - started:.0f} s")
    return report, logs


def test_head_and_worker_join_and_each_node_runs_its_task(cli, joined, row, matrix):
    report, logs = joined
    if isinstance(report, RuntimeFailure):
        pytest.fail(f"{report}\nprogress:\n  " + "\n  ".join(logs))
    heads = [n for n in report.nodes if n.role == "head"]
    assert [n.role for n in report.nodes] == ["head", "worker"] and len(heads) == 1
    assert {n.hostname for n in report.nodes} == {f"{report.name}-head", f"{report.name}-worker"}
    assert len({n.node_id for n in report.nodes}) == 2 and all(len(n.node_id) == 56 for n in report.nodes)
    assert len({n.ip for n in report.nodes}) == 2
    assert all(n.cpus == 1 for n in report.nodes)
    assert cluster_checks.count_nodes(report.ray_status) == 2
    assert report.ray_version == cluster.locked_version(matrix, row)  # the lock's Ray, and the ray CLI works
    if cluster.detect_gpus():
        assert report.gpus == "all" and all(n.gpus >= 1 and n.cuda_devices for n in report.nodes)
    else:
        assert report.gpus is None and all(n.gpus == 0 for n in report.nodes)
    # The recipe's start script ran both nodes: Ray on the NIC's address; the head ran its command after 2 nodes.
    head_log, worker_log = report.logs["head"], report.logs["worker"]
    assert "ray-node: head: ray " in head_log and "NIC eth0" in head_log
    assert "ray-node: 2 of 2 nodes joined" in head_log and "ray-node: running: sleep infinity" in head_log
    worker_ip = next(n.ip for n in report.nodes if n.role == "worker")
    assert f"ray-node: worker up: joined head:6379 as {worker_ip}" in worker_log
    assert cluster_teardown.leftovers(cli, report.name) == []
    assert any("removed the containers and the network" in line for line in logs)


CHILD = """
import sys
from imagematrix.assist import cluster, cluster_teardown

try:
    cluster.run(sys.argv[1], sys.argv[2], None, lambda msg: print(msg, flush=True), name=sys.argv[3], gpus="none")
except cluster_teardown.Interrupted as exc:
    print(f"interrupted: {exc}", flush=True)
    sys.exit(128 + exc.signum)
print("not interrupted", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_leaves_nothing_behind(cli, image, name, sig):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, cli, image, name], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 180
    try:
        while not any("waiting for `ray status`" in line for line in seen):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        up = cluster_teardown.leftovers(cli, name)
        assert sorted(up) == sorted([f"container {name}-head", f"container {name}-worker", f"network {name}-net"])
        proc.send_signal(sig)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            cluster_teardown.teardown(cli, name, print)
    time.sleep(0.5)
    while not lines.empty():
        seen.append(lines.get())
    output = "".join(seen)
    assert code == 128 + sig, output
    assert f"interrupted: interrupted by {sig.name}" in output
    assert f"removed the containers and the network of {name}" in output
    assert cluster_teardown.leftovers(cli, name) == []


@pytest.mark.parametrize("address, problem", [
    ("head:6390", "nothing listens on port 6390 of head (connection refused)"),
    ("no-such-head:6379", "the name no-such-head does not resolve"),
], ids=["wrong-port", "wrong-host"])
def test_a_worker_that_cannot_reach_the_head_names_the_address_and_what_to_check(cli, image, name, address, problem):
    message, _, seconds = _run_failing(cli, image, name, worker_address=address, head_wait=5)
    print(f"unreachable head reported in {seconds:.0f} s")
    assert f"cannot reach the Ray head at {address} within 5 s: {problem}" in message
    assert "the worker (" in message and "stopped (exit code 1)" in message
    fix = message.split("fix:", 1)[1]
    for what in ("RAY_HEAD_ADDRESS / ray start --address", "same network", "NIC", "NCCL_SOCKET_IFNAME=eth0",
                 "firewall"):
        assert what in fix, fix


@pytest.mark.parametrize("nic, problem", [
    (None, "NCCL_SOCKET_IFNAME is not set"),
    ("ens9f0", "no network interface here matches NCCL_SOCKET_IFNAME=ens9f0"),
], ids=["unset", "absent"])
def test_a_missing_nic_stops_the_node_with_the_fix(cli, image, name, nic, problem):
    message, _, seconds = _run_failing(cli, image, name, nic=nic)
    print(f"NIC problem reported in {seconds:.0f} s")
    assert f"the head ({name}-head) stopped (exit code 2): {problem}" in message
    fix = message.split("fix:", 1)[1]
    assert "set NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME to the NIC" in fix
    assert re.search(r"this machine has: eth0 \(\d+\.\d+\.\d+\.\d+\)", fix)  # the container's NIC and address


@pytest.fixture(scope="module")
def other_ray(cli, image, row, matrix):
    """The same image with another Ray release over its venv (that of the verl 0.4.1 row, or 2.60.0 if it is it)."""
    mine = cluster.locked_version(matrix, row)
    version = "2.47.1" if mine != "2.47.1" else "2.60.0"
    tag = f"imagematrix-cluster-test:ray{version}-{row.id[:40]}"
    derived_image(cli, image, wheel("ray", version, row.python), tag)
    yield tag, version, mine
    subprocess.run([cli, "rmi", tag], capture_output=True)


@pytest.mark.network
def test_a_ray_version_mismatch_is_found_before_joining(cli, image, name, other_ray):
    worker_image, version, mine = other_ray
    message, _, seconds = _run_failing(cli, image, name, worker_image=worker_image)
    print(f"version mismatch reported in {seconds:.0f} s")
    assert "Ray version mismatch between the nodes" in message
    assert f"runs ray {mine} with Python" in message and f"ray {version} with Python" in message
    assert "run every node from the same image" in message.split("fix:", 1)[1]


@pytest.mark.network
def test_a_ray_version_mismatch_is_explained_by_the_start_script(cli, image, name, other_ray):
    """What happens across machines, where nothing compares versions first: Ray fails, the script explains."""
    worker_image, version, mine = other_ray
    message, _, seconds = _run_failing(cli, image, name, worker_image=worker_image, check_versions=False,
                                       join_timeout=300)
    print(f"version mismatch (left to Ray) reported in {seconds:.0f} s")
    assert "the worker (" in message and "stopped (exit code 1)" in message
    assert f"this node (ray {version}, Python 3." in message
    assert "Ray version mismatch" in message or "most often the head runs another Ray or Python version" in message
    assert "run the same image" in message.split("fix:", 1)[1]


def test_gpus_asked_for_on_a_host_without_nvidia_runtime(cli, image, name):
    if cluster.detect_gpus():
        pytest.skip("this host has NVIDIA GPUs; the GPU path is checked by the cluster test itself")
    logs: list[str] = []
    with pytest.raises(RuntimeFailure) as info:
        cluster.run(cli, image, None, logs.append, name=name, gpus="all")
    message = str(info.value)
    print(message)
    assert "failed with --gpus all: " in message and "NVIDIA Container Toolkit" in message.split("fix:", 1)[1]
    assert cluster_teardown.leftovers(cli, name) == []
