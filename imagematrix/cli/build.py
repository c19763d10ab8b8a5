"""`build.py build`: build, smoke-test, then push each row (only when its tests pass)."""

from __future__ import annotations

from imagematrix.cli.common import build_input_options, build_inputs, err, load, out, registry_options, row_options
from imagematrix.stages import pipeline, publish

HELP = "build, smoke-test, then push each row (only when its tests pass)"


def add_arguments(p) -> None:
    row_options(p)
    p.add_argument("--all", action="store_true", help="every row (the default when no --row is given)")
    registry_options(p)
    p.add_argument("--push", choices=publish.PUSH_MODES, default="final",
                   help="after the smoke tests pass, push the final tags (default), only the candidate tag "
                        "(CI: GPU jobs test it, `promote` retags it), or nothing")
    p.add_argument("--cache-registry", action="store_true",
                   help="import/export the BuildKit cache as REGISTRY/verl:buildcache-<row> (needs a "
                        "docker-container buildx builder, as in CI)")
    p.add_argument("--rebuild", action="store_true",
                   help="build, test and push even when the registry already has the row's input digest (scheduled "
                        "rebuilds: base images and the docker daemon change without changing the inputs)")
    build_input_options(p)


def run(args) -> int:
    m, rows = load(args)
    outcomes = pipeline.publish(m, rows, args.registry, build_inputs(args), args.log_dir, out, args.push,
                                args.cache_registry, args.rebuild)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        err.print(f"[red]{len(failed)} of {len(outcomes)} row(s) failed[/] (nothing of theirs was pushed; "
                  f"logs in {args.log_dir}/<row-id>/)")
    return 1 if failed else 0
