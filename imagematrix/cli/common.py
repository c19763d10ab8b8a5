"""What every command shares: the consoles, the option groups, loading the matrix."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console  # noqa: E402  (kept beside the consoles it makes)

from imagematrix.model import fields, paths, secrets, tags
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError
from imagematrix.stages import builder, flash_attn


class RedactingConsole(Console):
    """A console that never prints URL userinfo (model/secrets.redact_text): text is redacted before rich wraps it
    (a wrapped URL would hide from the pattern) and once more as rendered (tables, panels)."""

    def print(self, *objects, **kwargs) -> None:
        super().print(*(secrets.redact_text(o) if isinstance(o, str) else o for o in objects), **kwargs)

    def _render_buffer(self, buffer) -> str:
        return secrets.redact_text(super()._render_buffer(buffer))


# Wide enough for row ids when the output is not a terminal (CI logs, pipes).
out = RedactingConsole(highlight=False, width=None if sys.stdout.isatty() else 160)
err = RedactingConsole(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)


def checked(check):
    """An argparse `type=` from a model check: a bad value on the command line is bad input (exit 2) too."""

    def convert(text: str) -> str:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def matrix_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--matrix", type=Path, default=paths.MATRIX, help="matrix file (default: matrix.yaml)")


def row_options(parser: argparse.ArgumentParser) -> None:
    matrix_option(parser)
    parser.add_argument("--row", action="append", dest="rows", metavar="ID",
                        help="only this row (repeatable; default: every row)")


def registry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", default=tags.DEFAULT_REGISTRY, type=checked(fields.check_registry),
                        help=f"host[:port]/namespace to publish to (default: the embedded {tags.DEFAULT_REGISTRY}); "
                             "credentials come from the docker config")
    parser.add_argument("--log-dir", type=Path, default=paths.ROOT / "build-logs", help="per-row logs and manifests")


def build_input_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("build inputs (BuildKit secrets: never stored in an image)")
    g.add_argument("--ca-cert", type=Path, default=None,
                   help="CA bundle for HTTPS inside the build (default: $SSL_CERT_FILE when set)")
    g.add_argument("--pip-index-url")
    g.add_argument("--extra-index-url")
    g.add_argument("--apt-mirror", help="Debian/Ubuntu mirror for apt and debootstrap")
    g.add_argument("--http-proxy")
    g.add_argument("--https-proxy")
    g.add_argument("--no-proxy")
    g.add_argument("--flash-attn-mirror", help="base URL laid out like the flash-attention GitHub releases "
                   "(v<version>/<wheel>); the first flash-attn source tried")
    g.add_argument("--flash-attn-index", action="append", default=[], metavar="URL",
                   help="a PEP 503 index with prebuilt flash-attn wheels (repeatable), tried after the mirror")
    g.add_argument("--sign-key", type=Path, metavar="FILE",
                   help="cosign private key: attest each pushed digest's SBOM and provenance and sign it "
                        "(password in COSIGN_PASSWORD)")
    g.add_argument("--no-flash-attn-compile", action="store_true",
                   help="fail a flash-attn row when no mirror, index or registry has its wheel, instead of "
                        "compiling it from the sdist (hours on few cores)")
    g.add_argument("--flash-attn-wheel", metavar="REF",
                   help="take the row's flash-attn wheel from this wheel image (REGISTRY/flash-attn-wheels:<key>, "
                        "the key `plan` names) without searching any source (CI: the flash-attn job's wheel)")


def sign_key(key: Path | None) -> Path | None:
    """--sign-key (build, promote): the cosign private key file; its password must be in COSIGN_PASSWORD."""
    if key is not None:
        if not key.is_file():
            raise InputError(f"--sign-key {key}: no such file", fix="pass a cosign private key (cosign generate-key-pair)")
        if "COSIGN_PASSWORD" not in os.environ:
            raise InputError("--sign-key needs the key's password in COSIGN_PASSWORD",
                             fix="export COSIGN_PASSWORD (empty for a key without a password); never pass it as an argument")
    return key


def build_inputs(args) -> builder.BuildInputs:
    """The BuildKit secrets and network settings of --ca-cert, the indexes, the apt mirror and the proxies."""
    ca = args.ca_cert
    if ca is None and os.environ.get("SSL_CERT_FILE") and Path(os.environ["SSL_CERT_FILE"]).is_file():
        ca = Path(os.environ["SSL_CERT_FILE"])
        err.print(f"CA bundle for the build: {ca} (from SSL_CERT_FILE; --ca-cert to change)")
    if ca is not None and not ca.is_file():
        raise InputError(f"--ca-cert {ca}: no such file", fix="pass a PEM bundle")
    return builder.BuildInputs(ca_cert=ca, pip_index_url=args.pip_index_url, extra_index_url=args.extra_index_url,
                               apt_mirror=args.apt_mirror, http_proxy=args.http_proxy, https_proxy=args.https_proxy,
                               no_proxy=args.no_proxy)


def flash_attn_sources(args) -> flash_attn.Sources:
    """Where the flash-attn wheel may come from: --flash-attn-mirror, --flash-attn-index, the compile, or one wheel
    image (--flash-attn-wheel)."""
    return flash_attn.Sources(mirror=args.flash_attn_mirror, indexes=tuple(args.flash_attn_index),
                              compile=not args.no_flash_attn_compile, wheel=args.flash_attn_wheel)


def load(args) -> tuple[matrix_mod.Matrix, list[matrix_mod.Row]]:
    m = matrix_mod.load(args.matrix)
    return m, m.select(getattr(args, "rows", None))
