"""Run inside the Ray head container by `build.py test --cluster` (fed to `python -` over docker exec):
checks that both nodes are alive and runs a task on each (on their GPUs when asked); prints one RESULT line.

Standard library and ray only: it runs in the image, where imagematrix is not installed.
"""

import json
import socket
import sys

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

want_gpus, timeout = sys.argv[1] == "1", float(sys.argv[2])
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)


def probe(cuda):
    answer = {"node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
              "ip": ray.util.get_node_ip_address()}
    if cuda:
        import torch
        answer["gpu_ids"] = [str(g) for g in ray.get_gpu_ids()]
        answer["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return answer


on_cpu = ray.remote(num_cpus=1)(probe)
on_gpu = ray.remote(num_cpus=0, num_gpus=1)(probe)
nodes = [n for n in ray.nodes() if n["Alive"]]
pending = []
for node in nodes:
    pin = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
    refs = {"cpu": on_cpu.options(scheduling_strategy=pin).remote(False)}
    if want_gpus and node["Resources"].get("GPU", 0) >= 1:
        refs["gpu"] = on_gpu.options(scheduling_strategy=pin).remote(True)
    pending.append((node, refs))
result = []
for node, refs in pending:
    answers = {}
    for kind, ref in refs.items():
        try:
            answers[kind] = ray.get(ref, timeout=timeout)
        except Exception as exc:
            answers[kind] = {"error": f"{type(exc).__name__}: {exc}"[-1500:]}
    result.append({"node_id": node["NodeID"], "address": node["NodeManagerAddress"],
                   "resources": node["Resources"], "answers": answers})
print("IMAGEMATRIX-CLUSTER-RESULT " + json.dumps(result), flush=True)
