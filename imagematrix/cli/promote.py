"""`build.py promote` (CI): retag tested candidates to their final tags in the registry."""

from __future__ import annotations

import os
from pathlib import Path

from imagematrix.cli.common import err, out, registry_options, row_options, sign_key
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import promote


def add_arguments(p) -> None:
    row_options(p)
    registry_options(p)
    p.add_argument("--plan-json", help="the `plan --github` matrix: promote its rows (instead of --row)")
    p.add_argument("--results", type=Path, help="directory of result files <job>--<row-id>, one per passed test job")
    p.add_argument("--need", action="append", default=[], metavar="JOB",
                   help="a row is promoted only with a result from this job (repeatable; needs --results)")
    p.add_argument("--compression", choices=promote.COMPRESSIONS, default="gzip",
                   help="layers of the final tags: gzip (default: the candidate's, any docker pulls it), zstd "
                        "(recompressed with skopeo: smaller, faster to unpack; docker >= 23 / containerd >= 1.5 "
                        "pull it, docker 20.10 cannot), or both (gzip tags plus <tag>-zstd)")
    p.add_argument("--soci", action="store_true",
                   help="also push a SOCI index beside each promoted gzip image, for lazy pulling (containerd with "
                        "the SOCI snapshotter starts a container before the layers are downloaded); the image is "
                        "unchanged. Needs `setup --soci`; not with --compression zstd")
    p.add_argument("--sign-key", type=Path, metavar="FILE",
                   help="cosign private key (password in COSIGN_PASSWORD): sign every digest a final tag will point "
                        "at, the zstd copy included, and attest the build's SBOM and provenance to it (the zstd "
                        "copy's provenance names the gzip digest it was recompressed from)")
    p.add_argument("--attestations", type=Path, metavar="DIR",
                   help="build's --log-dir: the SBOM and provenance in DIR/<row>/, for a candidate that `build` did "
                        "not sign (default: the candidate's own attestations in the registry, checked with the key)")


def run(args) -> int:
    m = matrix_mod.load(args.matrix)
    rows = promote.rows_from_plan(m, args.plan_json) if args.plan_json is not None else m.select(args.rows)
    missing = promote.missing_results(rows, args.need, args.results)
    key = sign_key(args.sign_key)
    signing = promote.Signing(key, os.environ["COSIGN_PASSWORD"], args.attestations) if key else None
    outcomes = promote.promote(m, rows, args.registry, out, missing, args.compression, signing, args.soci)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        err.print(f"[red]{len(failed)} of {len(outcomes)} row(s) not promoted[/]")
    return 1 if failed else 0
