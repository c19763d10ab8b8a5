"""`build.py docs`: docs/images.md, docs/gpu-runs.md and the README image table from the matrix, the registry
and the GPU run records."""

from __future__ import annotations

from imagematrix.cli.common import err, matrix_option, out, registry_options
from imagematrix.model import matrix as matrix_mod
from imagematrix.model import paths
from imagematrix.stages import docs


def add_arguments(p) -> None:
    matrix_option(p)
    registry_options(p)
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when the committed docs differ")
    p.add_argument("--offline", action="store_true", help="do not ask the registry (size and status left out)")


def run(args) -> int:
    m = matrix_mod.load(args.matrix)
    wanted = docs.outputs(m, args.registry, args.offline)
    stale = [path for path, text in wanted.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        if stale:
            err.print("generated docs differ from the matrix and the registry: "
                      + ", ".join(str(p.relative_to(m.root)) for p in stale)
                      + "\n  fix: run `python build.py docs` and commit the result")
            return 1
        out.print("docs are up to date")
        return 0
    for path, text in wanted.items():
        paths.write_atomic(path, text)
        out.print(f"{'wrote' if path in stale else 'unchanged'} {path.relative_to(m.root)}")
    return 0
