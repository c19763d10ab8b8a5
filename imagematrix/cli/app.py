"""The `build.py` command line. Exit codes: 0 ok, 1 runtime failure, 2 invalid input."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from imagematrix.assist import addrow, doctor
from imagematrix.assist import pick as pick_mod
from imagematrix.knowledge import patches
from imagematrix.model import lockfile, paths, tags, yamlio
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError, InputErrors, RuntimeFailure
from imagematrix.rules import engine as rules
from imagematrix.stages import builder, docs, locks, publish, render, resolve
from imagematrix.stages import plan as plan_mod
from imagematrix.tools import docker, host

# Wide enough for row ids when the output is not a terminal (CI logs, pipes).
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--matrix", type=Path, default=paths.MATRIX, help="matrix file (default: matrix.yaml)")
    parser.add_argument("--row", action="append", dest="rows", metavar="ID",
                        help="only this row (repeatable; default: every row)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="build.py", description="Version-matrix images for verl / vLLM.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check rows: schema, resolution with uv, CUDA of torch, locks, patches")
    _common(p)
    p.add_argument("--jobs", type=int, default=4, help="rows resolved in parallel (default 4)")
    p.add_argument("--explain", action="store_true",
                   help="list, per row, each compatibility rule (knowledge/rules.yaml): passed, warned, failed or "
                        "not applicable, and why")
    p.add_argument("--patches", type=Path, default=paths.PATCHES, help=argparse.SUPPRESS)

    p = sub.add_parser("lock", help="write hash-pinned locks/<row-id>.txt (and locks/tools.txt)")
    _common(p)
    p.add_argument("--jobs", type=int, default=4, help="rows resolved in parallel (default 4)")

    p = sub.add_parser("render", help="write dockerfiles/generated/<row-id>/ from the templates")
    _common(p)
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when committed output differs")
    p.add_argument("--patches", type=Path, default=paths.PATCHES, help=argparse.SUPPRESS)

    sub.add_parser("setup", help="install/start what builds need: dockerd, buildx, the embedded registry, debootstrap")

    p = sub.add_parser("plan", help="rows whose input digest differs from the registry's, as text, bake file or CI matrix")
    _common(p)
    p.add_argument("--match", action="append", metavar="PATTERN", help="rows whose id matches this shell pattern (repeatable)")
    p.add_argument("--all", action="store_true", help="every selected row, even when the registry has its input digest")
    out_format = p.add_mutually_exclusive_group()
    out_format.add_argument("--bake", action="store_true", help="print the buildx bake file (JSON), like `bake --print`")
    out_format.add_argument("--github", action="store_true",
                            help="print a GitHub Actions strategy.matrix (JSON); with $GITHUB_OUTPUT set, also write "
                                 "`matrix` and `count` there")
    _registry(p)

    p = sub.add_parser("build", help="build, smoke-test, then push each row (only when its tests pass)")
    _common(p)
    p.add_argument("--all", action="store_true", help="every row (the default when no --row is given)")
    _registry(p)
    p.add_argument("--push", choices=publish.PUSH_MODES, default="final",
                   help="after the smoke tests pass, push the final tags (default), only the candidate tag "
                        "(CI: GPU jobs test it, `promote` retags it), or nothing")
    p.add_argument("--cache-registry", action="store_true",
                   help="import/export the BuildKit cache as REGISTRY/verl:buildcache-<row> (needs a "
                        "docker-container buildx builder, as in CI)")
    _build_inputs(p)

    p = sub.add_parser("promote", help="retag tested candidates to their final tags in the registry (CI)")
    _common(p)
    _registry(p)
    p.add_argument("--plan-json", help="the `plan --github` matrix: promote its rows (instead of --row)")
    p.add_argument("--results", type=Path, help="directory of result files <job>--<row-id>, one per passed test job")
    p.add_argument("--need", action="append", default=[], metavar="JOB",
                   help="a row is promoted only with a result from this job (repeatable; needs --results)")

    p = sub.add_parser("add-row", help="propose the pins for a vLLM version, append the row, lock and render it")
    p.add_argument("--matrix", type=Path, default=paths.MATRIX, help="matrix file (default: matrix.yaml)")
    p.add_argument("--vllm", required=True, help="the vLLM version of the new row")
    p.add_argument("--verl", help="verl version (default: the newest whose [vllm] extra admits this vLLM)")
    p.add_argument("--python", help="Python version (default: the matrix's default)")
    p.add_argument("--dry-run", action="store_true", help="show the proposed row and write nothing")

    p = sub.add_parser("docs", help="write docs/images.md and the README image table from the matrix and the registry")
    p.add_argument("--matrix", type=Path, default=paths.MATRIX, help="matrix file (default: matrix.yaml)")
    _registry(p)
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when the committed docs differ")
    p.add_argument("--offline", action="store_true", help="do not ask the registry (size and status left out)")

    p = sub.add_parser("pick", help="the best image for a GPU, driver and version wishes, and why others are out")
    p.add_argument("--matrix", type=Path, default=paths.MATRIX, help="matrix file (default: matrix.yaml)")
    p.add_argument("--gpu", help="GPU model or capability: A100, H100, T4, sm_75, 8.6, ...")
    p.add_argument("--driver", help="NVIDIA driver version as nvidia-smi prints it, e.g. 535.104.05")
    p.add_argument("--vllm", help="vLLM version or specifier, e.g. 0.10.0 or '>=0.8'")
    p.add_argument("--verl", help="verl version or specifier, e.g. 0.5 (any 0.5.x) or '>=0.4'")
    p.add_argument("--registry", default=publish.DEFAULT_REGISTRY, help="host[:port]/namespace for the pull line")

    p = sub.add_parser("doctor", help="diagnose this Python environment (or --image) against the matrix, rules, GPU")
    p.add_argument("--matrix", type=Path, default=paths.MATRIX, help="matrix file (default: matrix.yaml)")
    p.add_argument("--image", help="diagnose this image instead of the current Python")
    p.add_argument("--gpus", action="store_true", help="with --image: run it with `--gpus all`")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("test", help="run the smoke tests on an existing image of a row")
    _common(p)
    _registry(p)
    p.add_argument("--image", help="image to test (default: REGISTRY/verl:<row-id>)")
    p.add_argument("--gpu", action="store_true",
                   help="run the GPU smoke suite (tests/smoke/gpu) inside the image with `docker run --gpus all`")
    p.add_argument("--gpu-tier", choices=sorted(GPU_TIERS), default="all",
                   help="with --gpu: single-GPU tests, multi-GPU tests (NCCL, 2-rank vLLM), or all (default)")
    p.add_argument("--cluster", action="store_true",
                   help="instead of the smoke tests: a Ray head and a worker container from the image on a private "
                        "docker network; `ray status` must list both and a task must run on each node (their GPUs "
                        "too on a GPU host); containers and network are removed afterwards, also on Ctrl-C")
    p.add_argument("--cluster-gpus", default="auto", metavar="GPUS",
                   help="with --cluster: the `docker run --gpus` value for both nodes; 'auto' (default: all, when "
                        "nvidia-smi lists a GPU) or 'none'")
    return top


# pytest marker expressions of the GPU tiers
GPU_TIERS = {"single": ["-m", "gpu and not multi_gpu"], "multi": ["-m", "multi_gpu"], "all": []}


def _registry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", default=publish.DEFAULT_REGISTRY,
                        help=f"host[:port]/namespace to publish to (default: the embedded {publish.DEFAULT_REGISTRY}); "
                             "credentials come from the docker config")
    parser.add_argument("--log-dir", type=Path, default=paths.ROOT / "build-logs", help="per-row logs and manifests")


def _build_inputs(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("build inputs (BuildKit secrets: never stored in an image)")
    g.add_argument("--ca-cert", type=Path, default=None,
                   help="CA bundle for HTTPS inside the build (default: $SSL_CERT_FILE when set)")
    g.add_argument("--pip-index-url")
    g.add_argument("--extra-index-url")
    g.add_argument("--apt-mirror", help="Debian/Ubuntu mirror for apt and debootstrap")
    g.add_argument("--http-proxy")
    g.add_argument("--https-proxy")
    g.add_argument("--no-proxy")
    g.add_argument("--flash-attn-mirror", help="base URL laid out like the flash-attention GitHub releases")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InputError as exc:
        err.print(f"[red]error:[/] {exc.render()}", markup=True, soft_wrap=True)
        return 2
    except RuntimeFailure as exc:
        err.print(f"[red]failed:[/] {exc}", soft_wrap=True)
        return 1
    except KeyboardInterrupt as exc:
        err.print("interrupted")
        return 128 + getattr(exc, "signum", 2)


def _load(args) -> tuple[matrix_mod.Matrix, list[matrix_mod.Row]]:
    m = matrix_mod.load(args.matrix)
    return m, m.select(args.rows)


def cmd_validate(args) -> int:
    m, rows = _load(args)
    patch_list = patches.load(args.patches)
    errors: list[InputError] = []
    failures: list[str] = []
    started = time.monotonic()
    with err.status(f"resolving {len(rows)} row(s) with uv"):
        results = resolve.parallel(lambda r: lockfile.parse(resolve.resolve(r)), rows, args.jobs)
    table = Table("row", "resolution", "torch CUDA", "lock", "patches", "rules", title=f"{m.path}")
    explained: list = []
    warned: list[str] = []
    for row, result in results:
        # Compatibility rules (knowledge/rules.yaml), with uv's resolution when there is one (for ray & co).
        # A row whose resolution stopped on Requires-Python has already reported what python-requires would.
        checks = rules.evaluate(row, result if isinstance(result, dict) else None,
                                skip=("python-requires",) if isinstance(result, InputError) else ())
        errors.extend(rules.to_errors(row, checks, m.path))
        warned.extend(rules.warnings(row, checks))
        explained.append((row, checks))
        rules_text = escape(rules.summary(checks))
        if any(c.failed for c in checks):
            rules_text = f"[red]{rules_text}[/]"
        elif any(c.warned for c in checks):
            rules_text = f"[yellow]{rules_text}[/]"
        try:
            selection = patches.select(row, patch_list)
            patch_text = str(len(selection.applied)) + (f" ({len(selection.skipped)} skipped)" if selection.skipped else "")
        except InputError as exc:
            errors.append(exc)
            patch_text = "[red]invalid[/]"
        if isinstance(result, InputError):
            errors.append(result)
            table.add_row(row.id, "[red]unsatisfiable[/]", "", "", patch_text, rules_text)
            continue
        if isinstance(result, RuntimeFailure):
            failures.append(str(result))
            table.add_row(row.id, "[red]failed[/]", "", "", patch_text, rules_text)
            continue
        cuda_problem = resolve.check_cuda(row, result)
        if cuda_problem:
            errors.append(cuda_problem)
        status = locks.lock_status(m, row)
        if status != "ok":
            errors.append(InputError(f"lock is {status} ({locks.lock_path(m, row).relative_to(m.root)})",
                                     where=f"row {row.id}", fix=f"run `python build.py lock --row {row.id}`"))
        table.add_row(row.id, f"ok, {len(result)} packages",
                      f"[red]{lockfile.torch_cuda(result)}[/]" if cuda_problem else str(lockfile.torch_cuda(result)),
                      status if status == "ok" else f"[red]{status}[/]", patch_text, rules_text)
    out.print(table)
    if args.explain:
        out.print(rules.explain(explained), markup=False, highlight=False, soft_wrap=True)
    for line in warned:
        err.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"validated {len(rows)} row(s) in {time.monotonic() - started:.1f} s")
    if errors:
        raise InputErrors(errors)
    if failures:
        raise RuntimeFailure("\n".join(failures))
    return 0


def cmd_lock(args) -> int:
    m, rows = _load(args)
    with err.status(f"locking {len(rows)} row(s) with uv (hashes)"):
        results = resolve.parallel(lambda r: resolve.resolve(r, hashes=True), rows, args.jobs)
        tools = locks.lock_tools(m)
    errors = [r for _, r in results if isinstance(r, InputError)]
    failures = [str(r) for _, r in results if isinstance(r, RuntimeFailure)]
    parsed = {row.id: lockfile.parse(r) for row, r in results if isinstance(r, str)}
    errors += [e for row, r in results if row.id in parsed and (e := resolve.check_cuda(row, parsed[row.id]))]
    if errors:
        raise InputErrors(errors)
    if failures:
        raise RuntimeFailure("\n".join(failures))
    paths.write_atomic(locks.tools_lock_path(m), tools)
    for row, compiled in results:
        path = locks.lock_path(m, row)
        text = locks.lock_text(row, compiled)
        changed = not path.exists() or path.read_text() != text
        paths.write_atomic(path, text)
        out.print(f"{'wrote' if changed else 'unchanged'} {path.relative_to(m.root)} "
                  f"({len(parsed[row.id])} packages)")
    return 0


def cmd_render(args) -> int:
    m, rows = _load(args)
    rendered = render.render(m, rows, args.patches)
    if args.check:
        problems = render.drift(m, rendered, full=not args.rows)
        if problems:
            err.print("generated Dockerfiles differ from what matrix.yaml renders:\n  " + "\n  ".join(problems)
                      + "\n  fix: run `python build.py render` and commit the result")
            return 1
        out.print(f"dockerfiles/generated is up to date ({len(rendered)} row(s))")
        return 0
    changed = render.write(m, rendered, prune=not args.rows)
    for item in rendered:
        mark = "wrote" if item.row.id in changed else "unchanged"
        out.print(f"{mark} dockerfiles/generated/{item.row.id}/ (input {item.context_digest()[:19]})")
    for name in changed:
        if name not in {item.row.id for item in rendered}:
            out.print(f"removed dockerfiles/generated/{name}/ (no longer in the matrix)")
    return 0


def cmd_setup(args) -> int:
    host.setup(lambda msg: out.print(msg))
    cli = docker.cli()
    out.print(f"docker: {cli} (buildx: {'yes' if docker.has_buildx(cli) else 'no'}); "
              f"registry: {host.REGISTRY}; debootstrap: yes")
    return 0


def _inputs(args) -> builder.BuildInputs:
    ca = args.ca_cert
    if ca is None and os.environ.get("SSL_CERT_FILE") and Path(os.environ["SSL_CERT_FILE"]).is_file():
        ca = Path(os.environ["SSL_CERT_FILE"])
        err.print(f"CA bundle for the build: {ca} (from SSL_CERT_FILE; --ca-cert to change)")
    if ca is not None and not ca.is_file():
        raise InputError(f"--ca-cert {ca}: no such file", fix="pass a PEM bundle")
    return builder.BuildInputs(ca_cert=ca, pip_index_url=args.pip_index_url, extra_index_url=args.extra_index_url,
                               apt_mirror=args.apt_mirror, http_proxy=args.http_proxy, https_proxy=args.https_proxy,
                               no_proxy=args.no_proxy, flash_attn_mirror=args.flash_attn_mirror)


def cmd_plan(args) -> int:
    m = matrix_mod.load(args.matrix)
    rows = plan_mod.select(m, args.rows, args.match)
    planned = plan_mod.plan(m, rows, args.registry, ask_registry=not (args.bake or args.all))
    if args.bake:
        secrets = {"build-env": Path("<secrets>/build-env"), "ca-cert": Path("<secrets>/ca-cert")}
        items = [(p.item, p.candidate) for p in planned]
        out.print_json(json.dumps(builder.bake_definition(items, render.generated_dir(m), secrets)))
        return 0
    todo = [p for p in planned if args.all or p.changed]
    if args.github:
        print(json.dumps(plan_mod.github_matrix(todo), separators=(",", ":")))
        if os.environ.get("GITHUB_OUTPUT"):
            with open(os.environ["GITHUB_OUTPUT"], "a") as f:
                f.write(plan_mod.github_outputs(todo))
        err.print(f"{len(todo)} of {len(planned)} row(s) to build")
        return 0
    for p in planned:
        state = "build" if p in todo else "up to date"
        out.print(f"{p.row.id}: {state} (input {p.digest[:19]}, registry {(p.published or 'none')[:19]}) "
                  f"-> {p.candidate}")
    return 0


def cmd_build(args) -> int:
    m, rows = _load(args)
    outcomes = publish.publish(m, rows, args.registry, _inputs(args), args.log_dir, out, args.push,
                               args.cache_registry)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        err.print(f"[red]{len(failed)} of {len(outcomes)} row(s) failed[/] (nothing of theirs was pushed; "
                  f"logs in {args.log_dir}/<row-id>/)")
    return 1 if failed else 0


def cmd_promote(args) -> int:
    m = matrix_mod.load(args.matrix)
    if args.plan_json is not None:
        try:
            ids = [entry["row"] for entry in json.loads(args.plan_json)["include"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"--plan-json is not a `plan --github` matrix ({exc})", fix="pass that command's output") from None
        rows = m.select(ids) if ids else []
    else:
        rows = m.select(args.rows)
    if args.need and args.results is None:
        raise InputError("--need needs --results DIR", fix="pass the directory of result files")
    missing = {row.id: [job for job in args.need if not (args.results / f"{job}--{row.id}").is_file()] for row in rows}
    outcomes = publish.promote(m, rows, args.registry, out, missing)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        err.print(f"[red]{len(failed)} of {len(outcomes)} row(s) not promoted[/]")
    return 1 if failed else 0


def cmd_add_row(args) -> int:
    m = matrix_mod.load(args.matrix)
    defaults = {k: str(v) for k, v in (yamlio.load(m.path).get("defaults") or {}).items() if isinstance(v, str)}
    python = args.python or defaults.get("python")
    if not python:
        raise InputError("no Python version: the matrix has no default", fix="pass --python, e.g. --python 3.11")
    with err.status(f"proposing pins for vLLM {args.vllm} (uv, PyPI metadata)"):
        proposal = addrow.propose(args.vllm, python, args.verl)
    table = Table("pin", "version", "why", title=f"proposed row for vLLM {args.vllm}")
    for key in addrow.ROW_ORDER:
        if key in proposal.pins:
            table.add_row(key, proposal.pins[key], escape(proposal.why.get(key, "")))
    for name, version in proposal.extras.items():
        table.add_row(f"extras.{name}", version, escape(proposal.why.get("extras", "")))
    out.print(table)
    pins = proposal.pins
    new_id = tags.row_id(verl=pins["verl"], vllm=pins["vllm"], torch=pins["torch"], cuda=pins["cuda"],
                         python=pins["python"])
    if new_id in {r.id for r in m.rows}:
        raise InputError(f"the matrix already has row {new_id} (same verl, vLLM, torch, CUDA and Python)",
                         where=str(m.path), fix="pass another --verl or --python, or edit that row")
    snippet = addrow.row_yaml(pins, defaults, f"vLLM {args.vllm}: proposed by `build.py add-row`", proposal.extras)
    text = addrow.appended(m.path, snippet)
    probe = m.path.with_name(f".{m.path.name}.add-row-{os.getpid()}")
    probe.write_text(text)
    try:
        new_matrix = matrix_mod.load(probe)  # schema, duplicate ids: the whole matrix as it would be
    finally:
        probe.unlink()
    row = new_matrix.rows[-1]
    if args.dry_run:
        out.print(snippet, end="")
        out.print(f"(dry run: nothing written; the row id would be {row.id})")
        return 0
    with err.status(f"locking {row.id}"):
        compiled = resolve.resolve(row, hashes=True)
    problems = rules.to_errors(row, rules.evaluate(row, lockfile.parse(compiled)), m.path)
    if problems:
        raise InputErrors(problems)  # a proposal the compatibility rules reject is refused, nothing written
    lock = locks.lock_text(row, compiled)
    paths.write_atomic(m.path, text)
    paths.write_atomic(locks.lock_path(m, row), lock)
    new_matrix = matrix_mod.load(m.path)
    render.write(new_matrix, render.render(new_matrix, [row]), prune=False)
    out.print(f"added {row.id} to {m.path.name}, wrote {locks.lock_path(m, row).relative_to(m.root)} and "
              f"dockerfiles/generated/{row.id}/; review them, then `python build.py build --row {row.id}`")
    return 0


def cmd_docs(args) -> int:
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


def cmd_pick(args) -> int:
    m = matrix_mod.load(args.matrix)
    result = pick_mod.pick(m, args.gpu, args.driver, args.vllm, args.verl)
    if result.excluded:
        table = Table("row", "left out because", title="other rows")
        for row_id, reasons in result.excluded.items():
            table.add_row(row_id, escape("; ".join(reasons)))
        out.print(table)
    if result.best is None:
        err.print("[red]no row fits[/]: see the reasons above (an older driver needs a row with an older CUDA; "
                  "an older GPU needs a torch built for its architecture)")
        return 1
    best = result.best
    out.print(f"best: [bold]{best.row.id}[/] (vLLM {best.row.vllm}, verl {best.row.verl}, torch {best.row.torch}, "
              f"CUDA {best.row.cuda})")
    for note in best.notes:
        out.print(f"  note: {escape(note)}")
    others = [c.row.id for c in result.candidates[1:]]
    if others:
        out.print(f"  also fits: {', '.join(others)}")
    out.print(pick_mod.pull_line(publish.repository(args.registry), best.row), highlight=False)
    return 0


def cmd_doctor(args) -> int:
    m = matrix_mod.load(args.matrix)
    if args.image is not None:
        doctor.check_image_ref(args.image)
    with err.status("probing " + (args.image or sys.executable)):
        facts = doctor.probe_image(args.image, args.gpus) if args.image else doctor.probe_here()
    report = doctor.analyse(m, facts)
    if args.json:
        print(report.as_json())
    else:
        for line in doctor.lines(report):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    return 1 if report.findings else 0


def cmd_test(args) -> int:
    m, rows = _load(args)
    docker.require_daemon()
    failed = 0
    for row in rows:
        image = args.image or f"{publish.repository(args.registry)}:{row.id}"
        docker.ensure_image(image, f"row {row.id}")
        if args.cluster:
            from imagematrix.assist import cluster  # docker network + two containers; only this command needs it

            try:
                report = cluster.run(docker.cli(), image, row,
                                     lambda msg, rid=row.id: out.print(f"{rid}: {msg}", markup=False),
                                     matrix=m, gpus=args.cluster_gpus)
            except RuntimeFailure as exc:
                err.print(f"{row.id}: cluster test FAILED on {image}: {exc}", markup=False, soft_wrap=True)
                failed += 1
                continue
            out.print(report.summary(), markup=False)
            out.print(f"{row.id}: cluster test passed on {image}")
            continue
        if args.gpu:
            from imagematrix.stages import smoke_gpu  # docker run --gpus all plumbing; only this command needs it

            log = args.log_dir / row.id / f"gpu-{args.gpu_tier}.log"
            ok = smoke_gpu.run(m, row, image, log, GPU_TIERS[args.gpu_tier])
        else:
            log = args.log_dir / row.id / "smoke.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            ok = publish.run_smoke(m, row, image, log)
        kind = f"GPU smoke tests ({args.gpu_tier})" if args.gpu else "smoke tests"
        out.print(f"{row.id}: {kind} {'passed' if ok else 'FAILED'} on {image} (log: {log})")
        failed += not ok
    return 1 if failed else 0


COMMANDS = {"validate": cmd_validate, "lock": cmd_lock, "render": cmd_render, "setup": cmd_setup,
            "plan": cmd_plan, "build": cmd_build, "promote": cmd_promote, "add-row": cmd_add_row, "docs": cmd_docs, "pick": cmd_pick,
            "doctor": cmd_doctor,
            "test": cmd_test}


if __name__ == "__main__":
    sys.exit(main())
