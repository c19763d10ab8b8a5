"""`python -m bench`: measure, merge into bench/results.json, render docs/benchmarks.md. See bench/README.md."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagematrix.tools import docker

from .common import ROOT, WORK, Context, Janitor, log, machine, now, versions
from .report import met, render

RESULTS = ROOT / "bench" / "results.json"
DOC = ROOT / "docs" / "benchmarks.md"
QUICK = ["fail_fast", "validate_all", "noop_build"]
HEAVY = ["size_payload", "builds"]  # builds: metrics 4 (incremental), 6 (cold_vs_floor), 7 (peer)
OTHER = ["flash_attn", "outdated", "compression", "lazy"]  # only with --only: flash_attn needs the compiled wheel (bench/flash_attn.py)


def _measures() -> dict[str, Callable[[Context], dict[str, Any]]]:
    from . import compression, flash_attn, heavy, lazy, outdated, quick

    return {"fail_fast": quick.fail_fast, "validate_all": quick.validate_all, "noop_build": quick.noop_build,
            "size_payload": heavy.size_payload, "builds": heavy.builds, "flash_attn": flash_attn.flash_attn,
            "outdated": outdated.outdated, "compression": compression.compression,
            "lazy": lazy.lazy}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="metrics 1-3 only, one docker build for the fail-fast peer (CI)")
    p.add_argument("--only", action="append", choices=QUICK + HEAVY + OTHER, help="only this measurement (repeatable)")
    p.add_argument("--runs", type=int, default=5, help="timed runs of each short command (default 5)")
    p.add_argument("--docker-runs", type=int, help="docker builds of the fail-fast peer (default 3; --quick: 1)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results JSON, merged with what it holds (default: %(default)s)")
    p.add_argument("--doc", type=Path, default=DOC, help="markdown rendered from the results (default: %(default)s)")
    p.add_argument("--report-only", action="store_true", help="measure nothing: re-render --doc from --out")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when a measured target is missed (a failed measure always exits 1, writing nothing)")
    p.add_argument("--gate", action="store_true",
                   help="exit 1 when a ratio measured side by side in this run misses its target (CI); a missed target "
                        "on an absolute figure is reported, as information")
    p.add_argument("--keep-work", action="store_true",
                   help="keep all of bench/.work/<run>/ (build contexts, bake files), not only its logs/")
    return p


def _write(results: dict[str, Any], out: Path, doc: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render(results))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Clean up on Ctrl-C and on kill, also when started in the background (where SIGINT is ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.setdefault("schema", 1)
    results.setdefault("runs", {})
    results.setdefault("metrics", {})
    if args.report_only:
        _write(results, args.out, args.doc)
        return 0
    names = args.only or (QUICK if args.quick else QUICK + HEAVY)

    nonce = uuid.uuid4().hex[:8]
    run_id = f"{now()}-{nonce}"
    work = WORK / nonce
    work.mkdir(parents=True, exist_ok=True)
    cli = docker.cli()
    ctx = Context(cli=cli, nonce=nonce, work=work, janitor=Janitor(cli, f"imagematrix-bench-{nonce}"), runs=args.runs,
                  docker_runs=args.docker_runs if args.docker_runs is not None else 1 if args.quick else 3)
    run: dict[str, Any] = {"started_at": now(), "mode": "quick" if args.quick else "only " + ",".join(names)
                           if args.only else "full", "machine": machine(), "versions": versions()}
    results["runs"][run_id] = run
    failed: list[str] = []
    measures = _measures()
    try:
        for name in names:
            started = now()
            try:
                produced = measures[name](ctx)
                produced = produced if name == "builds" else {name: produced}
            except (Exception, SystemExit) as exc:  # a failed outcome (OutcomeError) or a failed measure
                traceback.print_exc()
                error = f"{type(exc).__name__}: {exc}"
                failed.append(f"{name}: {error}")
                produced = {key: {"title": key, "error": error}
                            for key in (["incremental", "cold_vs_floor", "peer"] if name == "builds" else [name])}
            for key, metric in produced.items():
                metric.update(run=run_id, measured_at=started, loadavg_after=machine()["loadavg"])
                results["metrics"][key] = metric
            if failed:
                break  # the run has failed: nothing of it is written, so measuring on would only cost time
    finally:
        log("cleaning up what this run created")
        run["cleanup"] = ctx.janitor.clean()
        run["finished_at"] = now()
        shutil.rmtree(work / "secrets", ignore_errors=True)
        for path in ([] if args.keep_work else [p for p in work.iterdir() if p.name != "logs"]):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if not any(work.rglob("*")):
            work.rmdir()
    _prune(results, run_id)
    if failed:
        # A failed run never rewrites the results (bench/results.json, docs/benchmarks.md by default): its numbers
        # would stand beside a failure, or a crash would pass for a measurement. Its record stays in its logs.
        kept = work / "logs" / "results.json"
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        for text in failed:
            log(f"failed: {text}")
        log(f"run failed: {args.out} and {args.doc} left as they were; this run's record: {kept}")
        return 1
    missed = [(key, item) for key, metric in results["metrics"].items() if metric.get("run") == run_id
              for item in metric.get("lines", []) if met(item) is False]
    for key, item in missed:
        kind = "ratio" if item["target"]["of"] == "ratio" else "absolute figure, information"
        log(f"target missed ({kind}): {key}: {item['what']}")
    _write(results, args.out, args.doc)
    log(f"wrote {args.out} and {args.doc}")
    ratios = [m for m in missed if m[1]["target"]["of"] == "ratio"]
    if args.gate:
        log(f"gate: {len(ratios)} ratio target(s) missed" if ratios else "gate: every ratio met its target")
    return 1 if (args.strict and missed) or (args.gate and ratios) else 0


def _prune(results: dict[str, Any], current: str) -> None:
    """Keep the runs some metric still names (and this one); stamp the results."""
    used = {metric.get("run") for metric in results["metrics"].values()} | {current}
    results["runs"] = {k: v for k, v in results["runs"].items() if k in used}
    results["generated_at"] = now()


if __name__ == "__main__":
    sys.exit(main())
