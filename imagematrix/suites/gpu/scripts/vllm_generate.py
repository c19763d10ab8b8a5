"""Generate a few tokens with vLLM from the tiny model with random weights; print `RESULT {json}`.

Run by test_gpu_vllm.py (one process per engine, so each starts on a clean GPU) and, with --external-launcher,
by torchrun as one rank of verl's layout: torch.distributed is set up first (as verl's trainer does), then vLLM
joins it with distributed_executor_backend="external_launcher" and a tensor-parallel size below the world size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", required=True)
    parser.add_argument("--eager", action="store_true")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.25)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--external-launcher", action="store_true")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM's own workers over this many GPUs")
    args = parser.parse_args()

    kwargs = {"tensor_parallel_size": args.tensor_parallel_size} if args.tensor_parallel_size > 1 else {}
    if args.external_launcher:
        import torch
        import torch.distributed as dist

        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl")
        kwargs = {"distributed_executor_backend": "external_launcher", "tensor_parallel_size": 1}

    from vllm import LLM, SamplingParams

    llm = LLM(model=args.model, tokenizer=args.model, load_format="dummy", dtype=args.dtype, seed=0,
              enforce_eager=args.eager, gpu_memory_utilization=args.gpu_memory_utilization,
              max_model_len=256, max_num_seqs=4, **kwargs)
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    outputs = llm.generate(["The matrix pins known-good combinations", "Smoke tests for one image"], params)
    result = {"token_ids": [list(o.outputs[0].token_ids) for o in outputs],
              "text": [o.outputs[0].text for o in outputs],
              "rank": os.environ.get("RANK"), "local_rank": os.environ.get("LOCAL_RANK")}
    sys.stdout.flush()
    os.write(1, f"RESULT {json.dumps(result)}\n".encode())  # one write: ranks share the pipe
    if args.external_launcher:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
