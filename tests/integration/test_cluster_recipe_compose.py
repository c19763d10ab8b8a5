"""The multi-node recipe's compose file as Docker Compose itself reads it (`docker compose config`; skips without
Compose v2). The recipe's static checks are in tests/process/assist/test_cluster_recipe.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

RECIPE = ROOT / "docs" / "multi-node"
ENV = {"NIC": "eth0", "HEAD_IP": "10.0.0.1", "MODEL_DIR": "/models/m"}


def test_docker_compose_config_accepts_it():
    cmd = _compose_cli()
    if not cmd:
        pytest.skip("Docker Compose v2 is not installed (`docker compose` plugin or docker-compose 2.x)")
    base = {k: v for k, v in os.environ.items() if k not in ENV and k not in ("TAG", "IMAGE_REPO")}
    proc = subprocess.run([*cmd, "--profile", "head", "--profile", "worker", "config", "--format", "json"],
                          cwd=RECIPE, env=base | ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    assert services["worker"]["environment"]["RAY_HEAD_ADDRESS"] == "10.0.0.1:6379"
    assert services["head"]["environment"]["NCCL_SOCKET_IFNAME"] == "eth0"
    assert services["head"]["command"][-1] == "8000" and "/models/m" in services["head"]["command"]
    missing = subprocess.run([*cmd, "--profile", "worker", "config"], cwd=RECIPE, capture_output=True, text=True,
                             env=base | {k: v for k, v in ENV.items() if k != "NIC"})
    assert missing.returncode != 0 and "set NIC in this machine's .env" in missing.stderr


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        version = subprocess.run([standalone, "version", "--short"], capture_output=True, text=True).stdout
        if version.strip().lstrip("v").startswith("2"):
            return [standalone]
    return None
