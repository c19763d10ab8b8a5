"""The `build.py` command line: one module per command under imagematrix/cli/, each with HELP,
add_arguments(parser) and run(args). Exit codes: 0 ok, 1 runtime failure, 2 invalid input."""

from __future__ import annotations

import argparse
import sys

from imagematrix.cli import (
    add_row,
    base,
    build,
    disk,
    docs,
    doctor,
    export,
    flash_attn,
    gpu_record,
    lock,
    outdated,
    pick,
    plan,
    promote,
    render,
    sbom,
    setup,
    test,
    validate,
    verify,
)
from imagematrix.cli.common import err
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.secrets import redact_text

COMMANDS = {"validate": validate, "lock": lock, "render": render, "setup": setup, "plan": plan, "build": build,
            "promote": promote, "add-row": add_row, "docs": docs, "pick": pick, "doctor": doctor, "test": test,
            "gpu-record": gpu_record, "flash-attn": flash_attn, "verify": verify, "sbom": sbom, "outdated": outdated,
            "base": base, "disk": disk, "export": export}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="build.py", description="Version-matrix images for verl / vLLM.")
    top.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP))
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # every message below passes secrets.redact_text: a cause may quote a URL with credentials (an index, a mirror)
    try:
        return COMMANDS[args.command].run(args)
    except InputError as exc:
        err.print(f"[red]error:[/] {redact_text(exc.render())}", markup=True, soft_wrap=True)
        return 2
    except RuntimeFailure as exc:
        err.print(f"[red]failed:[/] {redact_text(str(exc))}", soft_wrap=True)
        return 1
    except KeyboardInterrupt as exc:
        err.print("interrupted")
        return 128 + getattr(exc, "signum", 2)
    except Exception as exc:  # a bug, not bad input or a fault the stages name: one line, the traceback on request
        if args.debug:
            raise
        cause = " / ".join(line.strip() for line in redact_text(str(exc)).splitlines() if line.strip())  # one line
        err.print(f"internal error: {exc.__class__.__name__}: {cause} (rerun with --debug for the traceback)",
                  markup=False, soft_wrap=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
