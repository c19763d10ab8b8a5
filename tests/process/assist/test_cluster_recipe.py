"""The multi-node recipe (docs/multi-node/): compose file, start script and guide agree with each other and with
the matrix (fast: YAML, the script's configuration checks run on this machine, `docker compose config` if there)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from imagematrix.assist import cluster
from imagematrix.model import matrix as matrix_mod
from imagematrix.model import tags
from tests.conftest import ROOT

RECIPE = ROOT / "docs" / "multi-node"
COMPOSE = RECIPE / "docker-compose.yml"
GUIDE = RECIPE / "README.md"
SCRIPT = RECIPE / "ray-node.sh"
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return YAML(typ="safe").load(COMPOSE.read_text())


def _defaults(value: str) -> str:
    """A compose value with each ${VAR:-default} replaced by its default (unset variables -> '')."""
    return VAR_RE.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "", value)


def test_compose_has_a_head_and_a_worker_from_the_same_image(compose):
    head, worker = compose["services"]["head"], compose["services"]["worker"]
    assert head["profiles"] == ["head"] and worker["profiles"] == ["worker"]
    for service in (head, worker):
        assert service["network_mode"] == "host"
        assert service["shm_size"]
        assert service["runtime"] == "nvidia"
        env = service["environment"]
        assert env["NCCL_SOCKET_IFNAME"].startswith("${NIC:?") and env["GLOO_SOCKET_IFNAME"].startswith("${NIC:?")
        assert env["NVIDIA_VISIBLE_DEVICES"] == "${NVIDIA_VISIBLE_DEVICES:-all}"
        assert env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
        assert env["RAY_HEAD_ADDRESS"].startswith("${HEAD_IP:?")
    assert head["image"] == worker["image"] and head["volumes"] == worker["volumes"]
    model = next(v for v in head["volumes"] if v.startswith("${MODEL_DIR"))
    assert model.endswith(":${MODEL_DIR}:ro")  # the same path inside as outside, on every machine


def test_compose_starts_both_through_the_start_script_the_cluster_test_runs(compose):
    for name, service in compose["services"].items():
        assert f"./ray-node.sh:{cluster.SCRIPT_IN_IMAGE}:ro" in service["volumes"]
        assert service["command"][:3] == ["bash", cluster.SCRIPT_IN_IMAGE, name]
    assert cluster.SCRIPT == SCRIPT


def test_head_serves_vllm_with_tensor_and_pipeline_parallelism_over_ray(compose):
    command = compose["services"]["head"]["command"]
    serve = command[command.index("--") + 1:]
    assert serve[:3] == ["vllm", "serve", "${MODEL_DIR}"]
    options = dict(zip(serve[3::2], serve[4::2], strict=True))
    assert options["--distributed-executor-backend"] == "ray"
    assert options["--tensor-parallel-size"] == "${TP_SIZE:-8}"
    assert options["--pipeline-parallel-size"] == "${PP_SIZE:-2}"


def test_the_image_is_a_row_of_the_matrix(compose):
    rows = matrix_mod.load(ROOT / "matrix.yaml").rows
    published = {tag for row in rows for tag in tags.final_tags(row.id, row.vllm)}
    for service in compose["services"].values():
        repo, _, tag = _defaults(service["image"]).rpartition(":")
        assert repo == tags.repository(tags.DEFAULT_REGISTRY)
        assert tag in {row.id for row in rows}, f"{tag} is not a row id of matrix.yaml (aliases move: use a row id)"
        assert tag in published


def test_tags_named_in_the_guide_are_rows():
    ids = {row.id for row in matrix_mod.load(ROOT / "matrix.yaml").rows}
    named = set(re.findall(r"verl\d[\w.]*-vllm[\w.]+-torch[\w.]+-cu\d+-py\d+(?:-fa[\w.]+)?", GUIDE.read_text()))
    assert named and named <= ids, named - ids


def test_every_variable_is_documented_in_the_guide():
    guide = GUIDE.read_text()
    used = {m.group(1) for m in VAR_RE.finditer(COMPOSE.read_text())}
    assert {"NIC", "HEAD_IP", "MODEL_DIR", "TAG", "TP_SIZE", "PP_SIZE", "NVIDIA_VISIBLE_DEVICES"} <= used
    table = {m.group(1) for m in re.finditer(r"^\| `([A-Z_0-9]+)` \|", guide, re.M)}
    assert used <= table, f"not in the guide's variable table: {sorted(used - table)}"
    # and what the start script reads (its header lists it)
    header = SCRIPT.read_text().split("set -uo pipefail", 1)[0]
    read = set(re.findall(r"^#   ([A-Z][A-Z0-9_]+)", header, re.M)) | {"GLOO_SOCKET_IFNAME"}
    assert {"NCCL_SOCKET_IFNAME", "RAY_HEAD_ADDRESS", "RAY_NODES", "RAY_HEAD_WAIT"} <= read
    missing = [name for name in read if f"`{name}`" not in guide]
    assert not missing, f"the guide does not mention {missing}"


def test_start_script_is_valid_bash():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _script(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.endswith("_SOCKET_IFNAME")}
    return subprocess.run(["bash", str(SCRIPT), *args], env=base | env, capture_output=True, text=True, timeout=60)


def _nics() -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir())


@pytest.mark.parametrize("env, problem", [
    ({}, "NCCL_SOCKET_IFNAME is not set"),
    ({"NCCL_SOCKET_IFNAME": "lo"}, "GLOO_SOCKET_IFNAME is not set"),
    ({"NCCL_SOCKET_IFNAME": "nosuchnic0", "GLOO_SOCKET_IFNAME": "nosuchnic0"},
     "no network interface here matches NCCL_SOCKET_IFNAME=nosuchnic0"),
    ({"NCCL_SOCKET_IFNAME": "lo", "GLOO_SOCKET_IFNAME": "nosuchnic0"},
     "GLOO_SOCKET_IFNAME=nosuchnic0 names nosuchnic0, which is not a network interface here"),
    ({"NCCL_SOCKET_IFNAME": "^docker,lo", "GLOO_SOCKET_IFNAME": "lo"},
     "NCCL_SOCKET_IFNAME=^docker,lo only excludes interfaces"),
], ids=["nccl-unset", "gloo-unset", "nccl-absent", "gloo-absent", "nccl-exclusion"])
def test_start_script_stops_on_a_missing_nic_with_the_fix(env, problem):
    proc = _script("worker", **env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"ray-node: error: {problem}" in proc.stderr
    fix = re.search(r"^ray-node: fix: (.*)$", proc.stderr, re.M).group(1)
    assert "set NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME to the NIC that connects the machines" in fix
    assert "NIC=<name> in this machine's .env" in fix
    others = [n for n in _nics() if n != "lo"]
    assert all(n in fix for n in others), (others, fix)  # this machine's NICs are offered


def test_start_script_rejects_an_unknown_role_and_a_worker_command():
    proc = _script("leader")
    assert proc.returncode == 2 and "unknown role 'leader'" in proc.stderr
    proc = _script("worker", "--num-cpus", "1", "--", "vllm", "serve")
    assert proc.returncode == 2 and "a worker takes no COMMAND" in proc.stderr
