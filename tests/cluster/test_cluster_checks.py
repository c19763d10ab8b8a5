"""The checks cluster.run applies to what the containers say (fast: no daemon; the inputs are real outputs)."""

from __future__ import annotations

import pytest

from imagematrix.assist import cluster, cluster_checks
from imagematrix.model.errors import RuntimeFailure

# `ray status` in the head of a real two-node cluster (ray 2.60.0).
RAY_STATUS = """\
======== Autoscaler status: 2026-11-21 20:02:56.432374 ========
Node status
---------------------------------------------------------------
Active:
 1 node_7526a32b80f40df3f59d72b9a4c21803f510e82dd9019db4dc01dfac
 1 node_7436ee35e77b2c412808279f589d4696d4f43a0c4a57c910f5d4b4bc
Pending:
 (no pending nodes)
Recent failures:
 (no failures)

Resources
---------------------------------------------------------------
Total Usage:
 0.0/2.0 CPU
 0B/46.42GiB memory
 0B/152.59MiB object_store_memory
"""
HEAD, WORKER = "7526a32b80f40df3f59d72b9a4c21803f510e82dd9019db4dc01dfac", "7436ee35e77b2c412808279f589d4696d4f43a0c4a57c910f5d4b4bc"
HOSTS = {"c-head": "head", "c-worker": "worker"}
CONTAINERS = {"head": "c-head", "worker": "c-worker"}


def test_count_nodes_reads_the_active_section_only():
    assert cluster_checks.count_nodes(RAY_STATUS) == 2
    one = RAY_STATUS.replace(f" 1 node_{WORKER}\n", "").replace(" (no pending nodes)", f" node_{WORKER}: starting")
    assert cluster_checks.count_nodes(one) == 1
    assert cluster_checks.count_nodes("") == 0


def _entry(node_id, host, *, gpu=0, cuda=None, ran_on=None, ip="172.18.0.2"):
    resources = {"CPU": 1.0, "memory": 1e9} | ({"GPU": float(gpu)} if gpu else {})
    answers = {"cpu": {"node_id": ran_on or node_id, "hostname": host, "ip": ip}}
    if cuda is not None:
        answers["gpu"] = {"node_id": node_id, "hostname": host, "gpu_ids": ["0"], "cuda_devices": cuda}
    return {"node_id": node_id, "address": ip, "resources": resources, "answers": answers}


def test_each_node_answering_itself_passes():
    nodes = cluster_checks.verify([_entry(WORKER, "c-worker", ip="172.18.0.3"), _entry(HEAD, "c-head")], HOSTS,
                           CONTAINERS, gpus=False)
    assert [(n.role, n.node_id, n.ip) for n in nodes] == [("head", HEAD, "172.18.0.2"), ("worker", WORKER, "172.18.0.3")]


@pytest.mark.parametrize("entries, problem", [
    ([_entry(HEAD, "c-head")], "the driver sees 1 alive node(s), expected 2"),
    ([_entry(HEAD, "c-head"), _entry(WORKER, "c-head")], "both answered from c-head"),
    ([_entry(HEAD, "c-head"), _entry(WORKER, "c-worker", ran_on=HEAD)], "ran on node 7526a32b80f4"),
    ([_entry(HEAD, "c-head"), _entry(WORKER, "elsewhere")], "answered from hostname 'elsewhere'"),
    ([_entry(HEAD, "c-head"), {**_entry(WORKER, "c-worker"), "answers": {"cpu": {"error": "GetTimeoutError: x"}}}],
     "failed: GetTimeoutError: x"),
])
def test_a_node_that_did_not_run_its_own_task_fails(entries, problem):
    with pytest.raises(RuntimeFailure, match="the per-node task check failed") as info:
        cluster_checks.verify(entries, HOSTS, CONTAINERS, gpus=False)
    assert problem in str(info.value)


def test_with_gpus_each_node_must_report_and_use_them():
    good = [_entry(HEAD, "c-head", gpu=8, cuda=["NVIDIA H100 80GB HBM3"]),
            _entry(WORKER, "c-worker", gpu=8, cuda=["NVIDIA H100 80GB HBM3"])]
    nodes = cluster_checks.verify(good, HOSTS, CONTAINERS, gpus=True)
    assert [(n.gpus, n.cuda_devices) for n in nodes] == [(8, ["NVIDIA H100 80GB HBM3"])] * 2
    no_gpu = [good[0], _entry(WORKER, "c-worker")]
    with pytest.raises(RuntimeFailure, match="worker c-worker reports no GPU to Ray") as info:
        cluster_checks.verify(no_gpu, HOSTS, CONTAINERS, gpus=True)
    assert "NVIDIA Container Toolkit" in str(info.value).split("fix:")[1]
    blind = [good[0], _entry(WORKER, "c-worker", gpu=8, cuda=[])]
    with pytest.raises(RuntimeFailure, match="the GPU task on worker c-worker saw no CUDA device"):
        cluster_checks.verify(blind, HOSTS, CONTAINERS, gpus=True)


def test_the_start_scripts_last_error_and_fix_are_picked_from_the_logs():
    logs = ("ray-node: worker: ray 2.60.0\nsome Ray output\nray-node: error: cannot reach the Ray head at h:1\n"
            "ray-node: fix: check it\n")
    assert cluster_checks.script_error(logs) == ("cannot reach the Ray head at h:1", "check it")
    assert cluster_checks.script_error("Traceback ...\n") is None


@pytest.mark.parametrize("value, expected", [("none", None), (None, None), ("", None), ("all", "all"),
                                             ('"device=0,1"', '"device=0,1"')])
def test_gpu_option(value, expected):
    assert cluster.gpu_option(value) == expected


def test_gpu_option_auto_follows_nvidia_smi(monkeypatch):
    monkeypatch.setattr(cluster, "detect_gpus", lambda: True)
    assert cluster.gpu_option("auto") == "all"
    monkeypatch.setattr(cluster, "detect_gpus", lambda: False)
    assert cluster.gpu_option("auto") is None


def test_every_row_lock_pins_ray():
    from imagematrix.model import matrix as matrix_mod
    from imagematrix.model import paths

    m = matrix_mod.load(paths.MATRIX)
    assert all(cluster.locked_version(m, row) for row in m.rows)
