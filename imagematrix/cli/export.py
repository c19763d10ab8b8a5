"""`build.py export --row ID --out DIR`: a row's image as parts small enough to carry to a GPU host without docker
(the format of docs/image-mode.md)."""

from __future__ import annotations

from pathlib import Path

from imagematrix.cli.common import checked, err, matrix_option, out
from imagematrix.model import fields, tags
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import export


def add_arguments(p) -> None:
    matrix_option(p)
    p.add_argument("--row", required=True, metavar="ID", help="the row whose image this is")
    p.add_argument("--image", metavar="REF", help="the image (default: REGISTRY/verl:<row-id>)")
    p.add_argument("--registry", default=tags.DEFAULT_REGISTRY, type=checked(fields.check_registry),
                   help=f"host[:port]/namespace of the default image (default: {tags.DEFAULT_REGISTRY})")
    p.add_argument("--from", dest="source", choices=("registry", "daemon"), default="registry",
                   help="read the image from the registry (default; the manifest digest as served) or the local "
                        "Docker daemon")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="where manifest.json and the parts go (parts already there are reused)")
    p.add_argument("--part-mib", type=int, default=export.DEFAULT_PART_MIB, metavar="N",
                   help=f"largest part in MiB, {export.PART_MIB_MIN} to {export.PART_MIB_MAX} "
                        f"(default {export.DEFAULT_PART_MIB}): a carry is at most 64 MiB with the repository")
    p.add_argument("--codec", choices=tuple(export.CODECS), default="xz",
                   help="stream compression: xz (preset 1, default: 40%% smaller than gzip -6 on an image's CUDA "
                        "binaries, no slower here; docs/image-mode.md) or gzip (level 6)")
    p.add_argument("--inventory", type=Path, metavar="FILE",
                   help="the GPU host's host-inventory.json (imagefs.py inventory): files >= 1 MiB it already "
                        "holds are carried as stubs")


def run(args) -> int:
    export.check_part_mib(args.part_mib)
    row = matrix_mod.load(args.matrix).select([args.row])[0]
    image = args.image or f"{tags.repository(args.registry)}:{row.id}"
    manifest = export.export(row, image, args.out, args.part_mib, args.codec, args.inventory,
                             lambda line: err.print(f"{row.id}: {line}", markup=False, soft_wrap=True),
                             daemon=args.source == "daemon")
    layers = manifest["layers"]
    carried = sum(layer["stream_size"] for layer in layers)
    parts = sum(len(layer["parts"]) for layer in layers)
    thinned = sum(layer["thinned_files"] for layer in layers)
    out.print(f"{row.id}: {args.out / export.MANIFEST}: {len(layers)} layers, {parts} parts, "
              f"{carried / 1e6:.1f} MB carried, {thinned} files thinned ({manifest['manifest_digest']})",
              markup=False, soft_wrap=True)
    return 0
