"""Multi-GPU: NCCL all-reduce over every visible GPU; vLLM generating with tensor parallelism 2; verl's
external-launcher layout on patched vLLM 0.7.x. (verl training on 2 GPUs: test_gpu_verl_train.py.)"""

from __future__ import annotations

import gpusmoke
import pytest

pytestmark = pytest.mark.multi_gpu


def _two_or_more(torch) -> int:
    count = torch.cuda.device_count()
    if count < 2:
        pytest.skip(f"needs 2 or more GPUs; {count} visible")
    return count


def test_nccl_all_reduce_across_all_visible_gpus(torch, run_python, report):
    count = _two_or_more(torch)
    ran = run_python(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", count,
                      gpusmoke.SCRIPTS / "nccl_allreduce.py"], timeout=300)
    assert ran.returncode == 0, ran.explain("NCCL all-reduce failed")
    assert sorted(r["rank"] for r in ran.results) == list(range(count)), ran.explain("not every rank reported")
    bad = [r for r in ran.results if not (r["ok"] and r["backend"] == "nccl" and r["world"] == count)]
    assert not bad, ran.explain(f"wrong all-reduce results: {bad}")
    report(f"NCCL all-reduce over {count} GPUs: sum {ran.results[0]['got']:.0f} on every rank")


def test_vllm_generates_with_tensor_parallelism_2(torch, need, capability, run_python, tiny_model, report):
    _two_or_more(torch)
    vllm = need("vllm")
    ran = run_python([gpusmoke.SCRIPTS / "vllm_generate.py", "--model", tiny_model, "--eager",
                      "--dtype", gpusmoke.dtype_advice(capability), "--tensor-parallel-size", 2], timeout=900)
    token_ids = gpusmoke.generated_tokens(ran, tiny_model, f"vLLM {vllm.__version__} with tensor parallelism 2")
    report(f"vLLM {vllm.__version__} (tensor parallel 2): generated {token_ids}")


def test_vllm_external_launcher_two_ranks(torch, smoke, need, capability, tiny_model, report):
    """verl's layout: torch.distributed first, then vLLM per rank with tensor parallel 1 < world size 2.

    The ranks are two torchrun 'nodes' of one process each, each seeing one GPU: rank 1 has LOCAL_RANK 0, so
    vLLM must take its device from LOCAL_RANK (patch vllm-external-launcher-local-rank) and accept a world
    larger than tp * pp (patch vllm-parallel-state-world-size).
    """
    _two_or_more(torch)
    vllm = need("vllm")
    reason = gpusmoke.launcher_test_reason(smoke, vllm.__version__)
    if reason:
        pytest.skip(reason)
    port, devices = gpusmoke.free_port(), gpusmoke.visible_devices(2)
    procs = [gpusmoke.start(["-m", "torch.distributed.run", "--nnodes", 2, "--node-rank", node, "--nproc-per-node", 1,
                             "--master-addr", "127.0.0.1", "--master-port", port,
                             gpusmoke.SCRIPTS / "vllm_generate.py", "--external-launcher", "--eager",
                             "--model", tiny_model, "--dtype", gpusmoke.dtype_advice(capability)],
                            env={"CUDA_VISIBLE_DEVICES": devices[node]}) for node in (0, 1)]
    runs = [gpusmoke.finish(p, timeout=900) for p in procs]
    for node, ran in enumerate(runs):
        assert ran.returncode == 0 and ran.results, ran.explain(f"vLLM {vllm.__version__} external launcher, node {node}")
        assert ran.results[0]["rank"] == str(node) and ran.results[0]["local_rank"] == "0", ran.explain("ranks")
    # Same seed, same dummy weights, greedy sampling: every rank generates the same tokens.
    assert runs[0].results[0]["token_ids"] == runs[1].results[0]["token_ids"], runs[1].explain("ranks disagree")
    report(f"vLLM {vllm.__version__} external launcher, 2 ranks: {runs[0].results[0]['token_ids']}")
