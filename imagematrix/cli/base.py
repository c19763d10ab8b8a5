"""`build.py base`: publish a debootstrap base to a registry once, so rows build FROM it by digest anywhere."""

from __future__ import annotations

from imagematrix.cli.common import build_input_options, build_inputs, out, registry_options
from imagematrix.model import fields, paths, tags
from imagematrix.stages import bases
from imagematrix.tools import docker, host


def add_arguments(p) -> None:
    p.add_argument("--suite", required=True, help="a suite of knowledge/bases.yaml (e.g. bookworm)")
    registry_options(p)
    p.add_argument("--record", action="store_true",
                   help="write the pushed digest into knowledge/bases.yaml: rows on the suite are then built FROM "
                        "REGISTRY/imagematrix-base@<digest> (run `build.py render` after it and commit both)")
    p.add_argument("--image", help="publish this local image as the suite's base instead of bootstrapping one")
    build_input_options(p)


def run(args) -> int:
    docker.require_daemon()
    if args.registry == tags.DEFAULT_REGISTRY:
        host.ensure_registry(lambda msg: out.print(msg, soft_wrap=True))
    digest = bases.publish_base(args.suite, args.registry, build_inputs(args),
                                  lambda msg: out.print(msg, soft_wrap=True), image=args.image)
    ref = f"{args.registry.rstrip('/')}/{fields.BASE_REPOSITORY}@{digest}"
    out.print(f"published {ref}", soft_wrap=True)
    if not args.record:
        out.print(f"not recorded: `--record` writes {digest} into {paths.BASES.relative_to(paths.ROOT)}", soft_wrap=True)
        return 0
    changed = bases.record_base_digest(args.suite, digest)
    out.print(f"{'recorded' if changed else 'already recorded'}: suite {args.suite} digest {digest} in "
              f"{paths.BASES.relative_to(paths.ROOT)}; run `python build.py render` and commit both "
              "(the input digest of every row on this suite changes)", soft_wrap=True)
    return 0
