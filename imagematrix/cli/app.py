"""The `build.py` command line: one module per command under imagematrix/cli/, each with add_arguments(parser) and
run(args); COMMANDS names them with the line `build.py --help` shows. Exit codes: 0 ok, 1 runtime failure,
2 invalid input.

A command's module is imported only when that command is parsed (CommandParser): `build.py --help` imports no
command, and a command imports its own module and what that needs, no other command's (tests/process/cli/test_startup.py)."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from types import ModuleType

from imagematrix.model.errors import InputError, RuntimeFailure

# name -> its line in `build.py --help`; its module is imagematrix/cli/<name with `_` for `-`>.py
COMMANDS = {
    "validate": "check rows: schema, resolution with uv, CUDA of torch, locks, patches",
    "lock": "write hash-pinned locks/<row-id>.txt (and locks/tools.txt); --check: are they what their cutoffs resolve to",
    "render": "write dockerfiles/generated/<row-id>/ from the templates",
    "setup": "install/start what builds need: dockerd, buildx, the embedded registry, debootstrap, cosign",
    "plan": "rows whose input digest differs from the registry's, as text, bake file or CI matrix",
    "build": "build, smoke-test, then push each row (only when its tests pass)",
    "promote": "retag tested candidates to their final tags in the registry (CI)",
    "add-row": "propose the pins for a vLLM version, append the row, lock and render it",
    "docs": "write docs/images.md, docs/gpu-runs.md and the README image table from the matrix, registry and GPU runs",
    "pick": "the best image for a GPU, driver and version wishes, and why others are out",
    "doctor": "diagnose this Python environment (or --image) against the matrix, rules, GPU",
    "test": "run the smoke tests on an existing image of a row",
    "gpu-record": "write docs/gpu-runs/<date>-<row>-N.json from a GPU run's raw results (then `build.py docs`)",
    "flash-attn": "a row's flash-attn wheel: show its source, get or compile it into the registry, or import a wheel",
    "verify": "check a published image: cosign signature, SBOM and provenance attestations, lock digest",
    "sbom": "print an image's SBOM (CycloneDX): from build-logs/<row>/ or the registry's signed attestation",
    "outdated": "releases newer than the matrix covers, and the row add-row would propose for each new vLLM / verl",
    "base": "bootstrap a debootstrap:<suite> base, push it as REGISTRY/imagematrix-base:<suite>, record its digest",
    "disk": "check the free disk against what each row's build needs (from sizes/<row>.json); exit 1 when short",
    "coverage": "which GPUs a row's image runs on, read from its binaries (SASS/PTX per library); compare with coverage/<row>.json",
    "export": "write a row's image as carried parts and manifest.json for image mode on a GPU host (docs/image-mode.md)",
}


def command(name: str) -> ModuleType:
    """A command's module (imported on first use)."""
    if name not in COMMANDS:
        raise KeyError(name)
    return importlib.import_module(f"imagematrix.cli.{name.replace('-', '_')}")


class CommandParser(argparse.ArgumentParser):
    """One command's parser: its module adds the arguments the first time the command is parsed (or fill() asks)."""

    def __init__(self, *args, command: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.command, self.filled = command, command is None  # a command's own subparsers have nothing to fill

    def fill(self) -> CommandParser:
        if not self.filled:
            self.filled = True
            command(self.command).add_arguments(self)
        return self

    def parse_known_args(self, args=None, namespace=None):
        self.fill()
        return super().parse_known_args(args, namespace)


def parser(*, fill: bool = False) -> argparse.ArgumentParser:
    """The whole command line; fill=True adds every command's arguments at once (to inspect them)."""
    top = argparse.ArgumentParser(prog="build.py", description="Version-matrix images for verl / vLLM.")
    top.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)
    for name, help_line in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_line, command=name)
        if fill:
            command_parser.fill()
    return top


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (a CI job cancelled, `kill`): raised like Ctrl-C, so that every `finally` of the command runs
    (temporary root filesystems and work folders removed, child processes killed by subprocess.run)."""

    signum = signal.SIGTERM


def _terminated(_signum, _frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    handle = main_thread and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if handle:
        signal.signal(signal.SIGTERM, _terminated)  # commands with their own handling (cluster) set theirs over it
    try:
        return _run(args)
    finally:
        if handle:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run(args: argparse.Namespace) -> int:
    from imagematrix.cli.common import err  # the consoles (rich), once a command runs: not for --help
    from imagematrix.model.secrets import redact_text

    # every message below passes secrets.redact_text: a cause may quote a URL with credentials (an index, a mirror)
    try:
        return command(args.command).run(args)
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
