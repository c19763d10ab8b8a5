"""One rank of an NCCL all-reduce (run by torchrun, one process per GPU); prints `RESULT {json}`."""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist


def main() -> None:
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    x = torch.full((1 << 20,), float(rank + 1), device="cuda")
    dist.all_reduce(x)
    torch.cuda.synchronize()
    want = world * (world + 1) / 2
    result = {"rank": rank, "world": world, "backend": dist.get_backend(), "device": torch.cuda.get_device_name(),
              "ok": bool(torch.all(x == want).item()), "got": x[0].item(), "want": want}
    sys.stdout.flush()
    os.write(1, f"RESULT {json.dumps(result)}\n".encode())  # one write: ranks share the pipe
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
