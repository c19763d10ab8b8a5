"""`build.py test`: the smoke tests (CPU), the GPU suite (--gpu) or a two-node Ray cluster (--cluster) on an
existing image of a row."""

from __future__ import annotations

from imagematrix.cli.common import err, load, out, registry_options, row_options
from imagematrix.model import fields, tags
from imagematrix.model.errors import RuntimeFailure
from imagematrix.stages import smoke, smoke_gpu
from imagematrix.tools import docker


def add_arguments(p) -> None:
    row_options(p)
    registry_options(p)
    p.add_argument("--image", help="image to test (default: REGISTRY/verl:<row-id>)")
    p.add_argument("--platform", choices=fields.PLATFORMS, default=fields.DEFAULT_PLATFORM,
                   help="the platform of the image (CPU suite): linux/arm64 runs emulated on an amd64 host and is "
                        "checked against the row's arm64 build context (default linux/amd64)")
    p.add_argument("--gpu", action="store_true",
                   help="run the GPU smoke suite (imagematrix/suites/gpu) inside the image with `docker run --gpus all`")
    p.add_argument("--gpu-tier", choices=sorted(smoke_gpu.TIERS), default="all",
                   help="with --gpu: single-GPU tests, multi-GPU tests (NCCL, 2-rank vLLM), or all (default)")
    p.add_argument("--cluster", action="store_true",
                   help="instead of the smoke tests: a Ray head and a worker container from the image on a private "
                        "docker network; `ray status` must list both and a task must run on each node (their GPUs "
                        "too on a GPU host); containers and network are removed afterwards, also on Ctrl-C")
    p.add_argument("--cluster-gpus", default="auto", metavar="GPUS",
                   help="with --cluster: the `docker run --gpus` value for both nodes; 'auto' (default: all, when "
                        "nvidia-smi lists a GPU) or 'none'")


def _cluster(m, row, image, gpus: str) -> bool:
    from imagematrix.assist import cluster  # docker network + two containers; only this command needs it

    try:
        report = cluster.run(docker.cli(), image, row, lambda msg, rid=row.id: out.print(f"{rid}: {msg}", markup=False),
                             matrix=m, gpus=gpus)
    except RuntimeFailure as exc:
        err.print(f"{row.id}: cluster test FAILED on {image}: {exc}", markup=False, soft_wrap=True)
        return False
    out.print(report.summary(), markup=False)
    out.print(f"{row.id}: cluster test passed on {image}")
    return True


def run(args) -> int:
    m, rows = load(args)
    docker.require_daemon()
    failed = 0
    for row in rows:
        image = args.image or f"{tags.repository(args.registry)}:{row.id}"
        docker.ensure_image(image, f"row {row.id}")
        if args.cluster:
            failed += not _cluster(m, row, image, args.cluster_gpus)
            continue
        if args.gpu:
            log = args.log_dir / row.id / f"gpu-{args.gpu_tier}.log"
            ok = smoke_gpu.run(m, row, image, log, smoke_gpu.TIERS[args.gpu_tier])
        else:
            log = args.log_dir / row.id / "smoke.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            ok = smoke.run_smoke(m, row, image, log, platform=args.platform)
        kind = f"GPU smoke tests ({args.gpu_tier})" if args.gpu else "smoke tests"
        out.print(f"{row.id}: {kind} {'passed' if ok else 'FAILED'} on {image} (log: {log})")
        failed += not ok
    return 1 if failed else 0
