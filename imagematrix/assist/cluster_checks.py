"""What `test --cluster` checks, without docker: the driver's answers per node, `ray status` output, the start
script's own error lines; and the reports it prints."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from imagematrix.model.errors import RuntimeFailure


@dataclass
class NodeReport:
    role: str  # head | worker
    container: str
    hostname: str
    node_id: str
    ip: str
    cpus: float
    gpus: float = 0
    cuda_devices: list[str] = field(default_factory=list)


@dataclass
class ClusterReport:
    name: str
    image: str
    worker_image: str
    ray_version: str
    python_version: str
    nodes: list[NodeReport]
    gpus: str | None
    join_seconds: float
    seconds: float = 0.0
    ray_status: str = ""
    logs: dict[str, str] = field(default_factory=dict)  # role -> the container's output (the start script's)

    def summary(self) -> str:
        lines = [f"cluster {self.name}: {len(self.nodes)} nodes joined in {self.join_seconds:.0f} s, "
                 f"ray {self.ray_version} (Python {self.python_version}), {self.seconds:.0f} s in all"]
        for n in self.nodes:
            gpu = f", GPU {n.gpus:g} ({', '.join(n.cuda_devices)})" if self.gpus else ""
            lines.append(f"  {n.role}: {n.hostname} node {n.node_id[:12]} at {n.ip}, CPU {n.cpus:g}{gpu}: task ran there")
        return "\n".join(lines)


def count_nodes(status_text: str) -> int:
    """Active nodes in `ray status` output."""
    count, active = 0, False
    for line in status_text.splitlines():
        if line.startswith("Active:"):
            active = True
        elif line[:1].isalpha():
            active = False
        elif active and "node_" in line:
            count += 1
    return count


def script_error(logs: str) -> tuple[str, str] | None:
    """The `ray-node: error:` / `ray-node: fix:` lines the start script printed, if any."""
    what = re.findall(r"^ray-node: error: (.*)$", logs, re.M)
    fix = re.findall(r"^ray-node: fix: (.*)$", logs, re.M)
    return (what[-1], fix[-1] if fix else "") if what else None


def verify(entries: list[dict], hostnames: dict[str, str], containers: dict[str, str], gpus: bool) -> list[NodeReport]:
    """Check the driver's answers: every node ran its task itself, and (gpus) reports GPUs its task saw.

    hostnames maps each container's hostname to its role; containers maps role to container name.
    """
    problems: list[str] = []
    reports: list[NodeReport] = []
    if len(entries) != len(hostnames):
        problems.append(f"the driver sees {len(entries)} alive node(s), expected {len(hostnames)}")
    seen: dict[str, str] = {}
    for entry in entries:
        node_id, resources = entry["node_id"], entry["resources"]
        answer = entry["answers"].get("cpu", {})
        if "error" in answer:
            problems.append(f"the task pinned to node {node_id[:12]} ({entry['address']}) failed: {answer['error']}")
            continue
        host = answer.get("hostname", "")
        if answer.get("node_id") != node_id:
            problems.append(f"the task pinned to node {node_id[:12]} ran on node {str(answer.get('node_id'))[:12]}")
        if host not in hostnames:
            problems.append(f"node {node_id[:12]} answered from hostname {host!r}, not one of {sorted(hostnames)}")
            continue
        if host in seen:
            problems.append(f"nodes {seen[host][:12]} and {node_id[:12]} both answered from {host}")
        seen[host] = node_id
        role = hostnames[host]
        report = NodeReport(role=role, container=containers[role], hostname=host, node_id=node_id,
                            ip=answer.get("ip", entry["address"]), cpus=resources.get("CPU", 0),
                            gpus=resources.get("GPU", 0))
        if gpus:
            if report.gpus < 1:
                problems.append(f"{role} {host} reports no GPU to Ray (resources: {sorted(resources)})")
            else:
                cuda = entry["answers"].get("gpu", {})
                if "error" in cuda:
                    problems.append(f"the GPU task on {role} {host} failed: {cuda['error']}")
                elif cuda.get("node_id") != node_id or not cuda.get("cuda_devices"):
                    problems.append(f"the GPU task on {role} {host} saw no CUDA device (Ray GPU ids {cuda.get('gpu_ids')})")
                else:
                    report.cuda_devices = cuda["cuda_devices"]
        reports.append(report)
    missing = set(hostnames) - set(seen)
    if missing and not problems:
        problems.append(f"no task answered from {', '.join(sorted(missing))}")
    if problems:
        fix = ("give the containers their GPUs (the NVIDIA Container Toolkit on the host, `--gpus`; inside, "
               "NVIDIA_VISIBLE_DEVICES must not be empty or void)" if gpus and any("GPU" in p for p in problems)
               else "read the messages above; the node's Ray logs are in /tmp/ray/session_latest/logs of its container")
        raise _fail("the per-node task check failed:\n  " + "\n  ".join(problems), fix)
    return sorted(reports, key=lambda r: r.role != "head")


def _fail(what: str, fix: str) -> RuntimeFailure:
    return RuntimeFailure(f"{what}\n  fix: {fix}")
