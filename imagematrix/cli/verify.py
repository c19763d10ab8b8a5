"""`build.py verify REF --key cosign.pub`: signature, SBOM and provenance of a published image, and that the
provenance's lock digest is the committed lock's."""

from __future__ import annotations

from pathlib import Path

from imagematrix.cli.common import err, matrix_option, out
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.stages import verify


def add_arguments(p) -> None:
    matrix_option(p)
    p.add_argument("ref", help="the image: REGISTRY/NAME:TAG or REGISTRY/NAME@sha256:DIGEST")
    p.add_argument("--key", type=Path, required=True, help="the cosign public key (cosign.pub)")


def run(args) -> int:
    if not args.key.is_file():
        raise InputError(f"--key {args.key}: no such file", fix="pass the publisher's cosign.pub")
    m = matrix_mod.load(args.matrix)
    try:
        lines = verify.verify(m, args.ref, args.key)
    except RuntimeFailure as exc:
        err.print(f"[red]NOT VERIFIED[/]: {exc}", highlight=False, markup=True)
        return 1
    for line in lines:
        out.print(f"ok  {line}", highlight=False)
    out.print(f"verified: {args.ref}", highlight=False)
    return 0
