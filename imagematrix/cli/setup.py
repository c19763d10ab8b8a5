"""`build.py setup`: install and start what builds need on this machine."""

from __future__ import annotations

from imagematrix.cli.common import out
from imagematrix.tools import docker, host


def add_arguments(p) -> None:
    p.add_argument("--soci", action="store_true",
                   help="also install soci and soci-snapshotter-grpc (Debian trixie's soci-snapshotter) for "
                        "`promote --soci` and lazy pulls")


def run(args) -> int:
    host.setup(lambda msg: out.print(msg))
    if args.soci:
        host.ensure_soci(lambda msg: out.print(msg))
    cli = docker.cli()
    out.print(f"docker: {cli} (buildx: {'yes' if docker.has_buildx(cli) else 'no'}); "
              f"registry: {host.REGISTRY}; debootstrap: yes; skopeo: yes; cosign: yes"
              + ("; emulation: linux/arm64 (qemu-user, binfmt_misc)" if host.native_platform() == "linux/amd64"
                 and host.emulation_missing("linux/arm64") is None else ""))
    return 0
