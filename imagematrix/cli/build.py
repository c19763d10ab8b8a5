"""`build.py build`: build, smoke-test, then push each row (only when its tests pass)."""

from __future__ import annotations

import argparse

from imagematrix.cli.common import build_input_options, build_inputs, err, load, out, registry_options, row_options
from imagematrix.stages import pipeline, publish, sizes


def add_arguments(p) -> None:
    row_options(p)
    p.add_argument("--all", action="store_true", help="every row (the default when no --row is given)")
    registry_options(p)
    p.add_argument("--push", choices=publish.PUSH_MODES, default="final",
                   help="after the smoke tests pass, push the final tags (default), only the candidate tag "
                        "(CI: GPU jobs test it, `promote` retags it), or nothing")
    p.add_argument("--cache-registry", action="store_true",
                   help="import/export the BuildKit cache as REGISTRY/verl:buildcache-<row>, and the shared os and "
                        "torch stages' as REGISTRY/verl:buildcache-os-<key> / buildcache-torch-<key> (every row with "
                        "the same stage imports and exports it; needs a docker-container buildx builder, as in CI)")
    p.add_argument("--rebuild", action="store_true",
                   help="build, test and push even when the registry already has the row's input digest (scheduled "
                        "rebuilds: base images and the docker daemon change without changing the inputs)")
    p.add_argument("--size-margin", type=_margin, default=sizes.DEFAULT_MARGIN, metavar="FRACTION",
                   help="how much bigger than its recorded size (sizes/<row-id>.json) a row's image may get while the "
                        f"row is unchanged before it fails, unpushed (default: {sizes.DEFAULT_MARGIN})")
    p.add_argument("--record-size", action="store_true",
                   help="record the image's size as the row's new baseline instead of checking it (growth that is "
                        "intended); also with --push none")
    build_input_options(p)


def _margin(text: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction (0.05) or a percentage (5%)") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r}: the margin is a fraction from 0 up (0.05 is 5%)")
    return value


def run(args) -> int:
    m, rows = load(args)
    outcomes = pipeline.publish(m, rows, args.registry, build_inputs(args), args.log_dir, out, args.push,
                                args.cache_registry, args.rebuild, args.size_margin, args.record_size)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        err.print(f"[red]{len(failed)} of {len(outcomes)} row(s) failed[/] (nothing of theirs was pushed; "
                  f"logs in {args.log_dir}/<row-id>/)")
    return 1 if failed else 0
