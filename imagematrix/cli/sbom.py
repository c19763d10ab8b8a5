"""`build.py sbom`: print an image's SBOM (CycloneDX JSON): the one a build wrote (--row), or the signed attestation
in the registry (--image REF --key cosign.pub)."""

from __future__ import annotations

import json
from pathlib import Path

from imagematrix.cli.common import matrix_option, out
from imagematrix.model import datafile, paths
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError
from imagematrix.stages import attest
from imagematrix.tools import cosign

SBOM_MAX_BYTES = 100 * datafile.MAX_BYTES  # an image's SBOM lists thousands of packages: megabytes, not kB


def add_arguments(p) -> None:
    matrix_option(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--row", metavar="ID", help="the SBOM the last build of this row wrote")
    where.add_argument("--image", metavar="REF", help="the signed SBOM attestation of this image (needs --key)")
    p.add_argument("--key", type=Path, help="with --image: the cosign public key")
    p.add_argument("--log-dir", type=Path, default=paths.ROOT / "build-logs", help="where builds wrote their logs")


def run(args) -> int:
    if args.row:
        row = matrix_mod.load(args.matrix).select([args.row])[0]
        path = args.log_dir / row.id / "sbom.cdx.json"
        if not path.is_file():
            raise InputError(f"{path}: no SBOM", fix=f"build the row first (python build.py build --row {row.id})")
        fix = f"build the row again (python build.py build --row {row.id}): the build writes its SBOM there"
        sbom = datafile.load_json(path, limit=SBOM_MAX_BYTES, fix=fix)
        datafile.expect(sbom, dict, str(path), what="a CycloneDX SBOM is a JSON object", fix=fix)
        out.print_json(data=sbom)
        return 0
    if args.key is None or not args.key.is_file():
        raise InputError("--image needs --key with the publisher's cosign.pub", fix="pass --key cosign.pub")
    statements = cosign.verify_attestation(args.image, args.key, attest.SBOM_TYPE)
    out.print_json(json.dumps(statements[-1]["predicate"]))
    return 0
