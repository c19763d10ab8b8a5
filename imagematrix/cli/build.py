"""`build.py build`: build, smoke-test, then push each row (only when its tests pass); the progress on the console
(ConsoleProgress: each row's current step with that step's timer) and the summary."""

from __future__ import annotations

import argparse
import time

from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from imagematrix.cli.common import (
    build_input_options,
    build_inputs,
    err,
    flash_attn_sources,
    load,
    out,
    registry_options,
    row_options,
    sign_key,
)
from imagematrix.model import fields
from imagematrix.stages import attest, pipeline, publish, sizes


def add_arguments(p) -> None:
    row_options(p)
    p.add_argument("--all", action="store_true", help="every row (the default when no --row is given)")
    registry_options(p)
    p.add_argument("--push", choices=publish.PUSH_MODES, default="final",
                   help="after the smoke tests pass, push the final tags (default), only the candidate tag "
                        "(CI: GPU jobs test it, `promote` retags it), or nothing")
    p.add_argument("--cache-registry", action="store_true",
                   help="import/export the BuildKit cache as REGISTRY/verl:buildcache-<row>, and the shared os and "
                        "torch stages' as REGISTRY/verl:buildcache-os-<key> / buildcache-torch-<key> (every row with "
                        "the same stage imports and exports it; needs a docker-container buildx builder, as in CI)")
    p.add_argument("--rebuild", action="store_true",
                   help="build, test and push even when the registry already has the row's input digest (scheduled "
                        "rebuilds: base images and the docker daemon change without changing the inputs)")
    p.add_argument("--size-margin", type=_margin, default=sizes.DEFAULT_MARGIN, metavar="FRACTION",
                   help="how much bigger than its recorded size (sizes/<row-id>.json) a row's image may get while the "
                        f"row is unchanged before it fails, unpushed (default: {sizes.DEFAULT_MARGIN})")
    p.add_argument("--record-size", action="store_true",
                   help="record the image's size as the row's new baseline instead of checking it (growth that is "
                        "intended); also with --push none")
    p.add_argument("--record-coverage", action="store_true",
                   help="record the GPU coverage read from the image's binaries as the row's new baseline "
                        "(coverage/<row-id>.json) instead of failing on a lost architecture (a loss that is "
                        "intended); also with --push none")
    p.add_argument("--platform", choices=fields.PLATFORMS, default=None,
                   help="build only this platform's image of each row (CI: native arm64 runners build the arm64 "
                        "images), pushed as its own candidate tag (--push candidate) or not at all; default: every "
                        "platform of a row, its final tags a multi-arch index")
    build_input_options(p)


def _margin(text: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction (0.05) or a percentage (5%)") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r}: the margin is a fraction from 0 up (0.05 is 5%)")
    return value


def run(args) -> int:
    m, rows = load(args)
    request = pipeline.BuildRequest(
        matrix=m, registry=args.registry, log_dir=args.log_dir, buildkit=build_inputs(args),
        flash_attn=flash_attn_sources(args), signing=attest.Signing(sign_key(args.sign_key)), push=args.push,
        cache_registry=args.cache_registry, rebuild=args.rebuild, size_margin=args.size_margin,
        record_size=args.record_size, record_coverage=args.record_coverage, platform=args.platform)
    with ConsoleProgress(out) as progress:
        outcomes = pipeline.publish(request, rows, progress)
    summary(outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        err.print(f"[red]{len(failed)} of {len(outcomes)} row(s) failed[/] (nothing of theirs was pushed; "
                  f"logs in {args.log_dir}/<row-id>/)")
    return 1 if failed else 0


class ConsoleProgress:
    """pipeline.Progress on a console. A terminal shows one line per row: its current step, what the step is doing
    (the BuildKit step, the layers being exported) and the step's own timer. A log (CI) gets a line per step and per
    message other than BuildKit's, and each row's step times when it ends."""

    def __init__(self, console) -> None:
        self.console = console
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                            transient=True)
        self.rows: dict[str, tuple] = {}  # row id -> (task, label, [(step, started)])

    def __enter__(self) -> ConsoleProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def _log(self, text: str) -> None:
        self.bar.console.print(escape(text), soft_wrap=True)

    def note(self, message: str) -> None:
        self._log(message)

    def row_started(self, row_id: str, index: int, total: int) -> None:
        label = f"[{index}/{total}] {row_id}"
        self.rows[row_id] = (self.bar.add_task(escape(label)), label, [])

    def step(self, row_id: str, name: str) -> None:
        task, label, times = self.rows[row_id]
        times.append((name, time.monotonic()))
        self.bar.reset(task, description=escape(f"{label}: {name}"))  # the timer counts this step
        if not self.console.is_terminal:
            self._log(f"{label}: {name}")

    def say(self, row_id: str, message: str) -> None:
        task, label, times = self.rows[row_id]
        step = times[-1][0] if times else ""
        self.bar.update(task, description=escape(f"{label}: {step}: {message}" if step else f"{label}: {message}"))
        # A log (CI) gets what a step does, but not BuildKit's lines (build.log has them); a terminal keeps the
        # flash-attn source decisions too.
        buildkit = message.startswith("[") or builder_export(message)
        if (not self.console.is_terminal and not buildkit) or message.startswith("flash-attn:"):
            self._log(f"{label}: {message}")

    def row_done(self, outcome: publish.Outcome) -> None:
        task, _, times = self.rows.pop(outcome.row)
        self.bar.remove_task(task)
        ended = [*(started for _, started in times[1:]), time.monotonic()]
        took = ", ".join(f"{name} {end - start:.0f} s" for (name, start), end in zip(times, ended, strict=False))
        where = f" at {outcome.stage}" if outcome.stage else ""
        self._log(f"{outcome.row}: {outcome.status}{where} in {outcome.seconds:.0f} s ({took})")
        if outcome.status != "failed":  # a failure's detail comes whole after the summary
            for line in outcome.detail.splitlines()[1:]:  # the size and coverage checks' notes
                self._log(f"  {line}")


def builder_export(message: str) -> bool:
    return message.split(" ", 1)[0] in ("exporting", "writing", "naming", "sending", "importing", "unpacking")


def summary(outcomes: list[publish.Outcome]) -> None:
    """The table of rows, then each row's whole reference (pushed, tested or already there): never cut, whatever the
    width, so it can be copied; then each failure's detail."""
    table = Table("row", "result", "stopped at", "time", title="build summary")
    for o in outcomes:
        colour = {"pushed": "green", "tested": "green", "skipped": "cyan", "failed": "red"}[o.status]
        table.add_row(o.row, f"[{colour}]{o.status}[/]", o.stage or "-", f"{o.seconds:.0f} s")
    out.print(table)
    for o in outcomes:
        first = o.detail.splitlines()[0] if o.detail else ""
        if o.status != "failed" and first:
            out.print(f"{o.row}: {o.status}: {escape(first)}", soft_wrap=True)
    for o in outcomes:
        if o.status == "failed":
            out.print(f"[red]{o.row}[/] failed at stage {o.stage}:\n  " + escape(o.detail.replace("\n", "\n  ")),
                      soft_wrap=True)
