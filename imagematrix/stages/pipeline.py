"""One row through the stages, in order: check -> base -> build -> smoke -> size -> push -> manifest, with progress.

A row whose final tag already carries the same input digest is skipped. A failing row is reported, never pushed
under its final tag, and does not stop the others.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from imagematrix.model import labels, paths, tags
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.fields import bootstrap_suites
from imagematrix.model.matrix import Matrix, Row
from imagematrix.model.secrets import redact_text
from imagematrix.stages import attest, builder, flash_attn, locks, render, sizes, smoke
from imagematrix.stages.publish import Outcome, _push, remote_labels, remote_labels_of, write_manifest
from imagematrix.tools import docker, host
from imagematrix.tools import registry as registry_api


def publish_row(matrix: Matrix, item: render.Rendered, registry: str, inputs: builder.BuildInputs,
                log_dir: Path, status, final: list[str], push: str = "final", cache_registry: bool = False,
                rebuild: bool = False, size_margin: float = sizes.DEFAULT_MARGIN, record_size: bool = False,
                known: dict[str, dict | None] | None = None) -> Outcome:
    """One row: skip when its final tag has the same input digest (unless rebuild), else base -> flash-attn ->
    build -> smoke -> size -> push -> manifest -> attest.

    known: tags' labels read beforehand (publish reads every row's at once); a tag it lacks is read now, and a row
    it does not let skip is read again now, before anything is built (a push meanwhile may have made it current).

    size: against the row's baseline (sizes/<row-id>.json beside the matrix) when it was measured for the same
    input digest, the image may grow by size_margin (a fraction) at most, else the row fails before the push. A
    pushed row without a baseline, or whose inputs changed, records its size (record_size: whatever the check says,
    also with nothing pushed).

    push: "final" pushes the row's final tags; "candidate" pushes only the tested candidate tag (CI: GPU jobs pull
    it, `promote.promote` retags it); "none" pushes nothing (pull requests without registry credentials).
    """
    row = item.row
    started = time.monotonic()
    digest = item.context_digest()
    repo = tags.repository(registry)
    row_logs = log_dir / row.id
    row_logs.mkdir(parents=True, exist_ok=True)
    stage = "check"

    def done(state: str, detail: str = "") -> Outcome:
        return Outcome(row.id, state, stage, time.monotonic() - started, detail)

    started_at = attest.now()
    candidate_tag = tags.candidate_tag(row.id, digest)
    candidate = f"{repo}:{candidate_tag}"
    known = dict(known or {})

    def current(tag: str) -> bool:
        """Whether the tag carries this input digest: as read beforehand, else (or when not) as read now; read now,
        the row's other tags are read now too (what was read beforehand is older than what changed them)."""
        if tag in known and (known[tag] or {}).get(labels.INPUT_DIGEST) == digest:
            return True
        known.clear()
        found = remote_labels(registry, tag)
        return bool(found) and found.get(labels.INPUT_DIGEST) == digest

    try:
        status(row.id, "checking the registry")
        # rebuild (CI's schedule): base images and the daemon change without changing the input digest
        if push == "candidate" and not rebuild and current(candidate_tag):
            return done("skipped", f"{candidate} is already pushed")
        if push == "final" and not rebuild and current(row.id):
            moved = []
            for alias in final[1:]:  # an alias whose earlier push failed, or that moved to this row
                alias_labels = (known[alias] if alias in known else remote_labels(registry, alias)) or {}
                if alias_labels.get(labels.INPUT_DIGEST) != digest:
                    status(row.id, f"tagging {repo}:{alias}")
                    registry_api.retag(repo, row.id, alias)
                    moved.append(alias)
            return done("skipped", f"{repo}:{row.id} already has input {digest[:19]}"
                        + (f"; tagged {', '.join(moved)}" if moved else ""))
        stage = "base"
        status(row.id, "base image")
        docker.cli()  # no docker CLI fails this stage, before any work
        base_ref = builder.ensure_base(row, inputs, lambda msg: status(row.id, msg), registry)
        cache = f"{repo}:buildcache-{row.id}" if cache_registry else None
        with tempfile.TemporaryDirectory(prefix="secrets-", dir=paths.scratch_dir()) as secret_dir:
            secrets = inputs.write_secrets(Path(secret_dir))
            build_args, extra_labels = builder.base_build_args(row, registry), {}
            wheel = None
            if row.flash_attn:
                stage = "flash-attn"
                status(row.id, "the flash-attn wheel")
                wheel = flash_attn.ensure(
                    row, context=render.generated_dir(matrix) / row.id, registry=registry,
                    mirror=inputs.flash_attn_mirror, indexes=list(inputs.flash_attn_indexes),
                    secrets_files=secrets, log_dir=row_logs, log=lambda msg: status(row.id, msg),
                    allow_compile=inputs.flash_attn_compile, push=push != "none", build_args=dict(build_args))
                build_args["FLASH_ATTN_WHEELS"] = wheel.ref
                extra_labels.update(wheel.build_labels())
            stage = "build"
            status(row.id, "building (BuildKit)")
            builder.build(item, candidate, render.generated_dir(matrix), secrets, row_logs / "build.log",
                          lambda step: status(row.id, f"building {step}"), cache=cache, build_args=build_args,
                          extra_labels=extra_labels)
        stage = "smoke"
        status(row.id, "smoke tests")
        if not smoke.run_smoke(matrix, row, candidate, row_logs / "smoke.log"):
            return done("failed", f"smoke tests failed, nothing pushed; log {row_logs / 'smoke.log'}; "
                                  f"the untested image stays here as {candidate}")
        stage = "size"
        status(row.id, "size against the baseline")
        verdict, measured = _check_size(matrix, row, digest, candidate, row_logs, size_margin, record_size)
        status(row.id, f"size: {verdict.message}")
        stage = "push"
        pushed = {}
        if push != "final":
            if push == "candidate":
                status(row.id, f"pushing {candidate}")
                pushed[candidate_tag] = _push(row, candidate)
            size_note = _record_size(matrix, verdict, measured, bool(pushed) or record_size)
            stage = "manifest"
            write_manifest(candidate, pushed, row_logs / "manifest.json")
            if pushed:
                stage = "attest"
                _attest(matrix, item, f"{repo}@{pushed[candidate_tag]}", inputs, row_logs, wheel, started_at, status,
                        base_ref)
            return done("pushed" if pushed else "tested",
                        (candidate if pushed else f"{candidate} (local, not pushed)") + "\n" + size_note)
        for tag in final:  # the row's own tag first: a rerun repairs an alias whose push failed
            status(row.id, f"pushing {repo}:{tag}")
            ref = f"{repo}:{tag}"
            proc = docker.run("tag", candidate, ref)
            if proc.returncode != 0:
                raise RuntimeFailure(f"row {row.id}, stage push: docker tag {ref} failed: {proc.stderr.strip()}")
            pushed[tag] = _push(row, ref)
        size_note = _record_size(matrix, verdict, measured, True)
        stage = "manifest"
        status(row.id, "writing the manifest")
        write_manifest(f"{repo}:{row.id}", pushed, row_logs / "manifest.json")
        stage = "attest"
        _attest(matrix, item, f"{repo}@{pushed[row.id]}", inputs, row_logs, wheel, started_at, status, base_ref)
        docker.run("rmi", candidate)  # the candidate tag only; layers stay with the final tag
        return done("pushed", f"{', '.join(f'{repo}:{t}' for t in final)} {pushed.get(row.id, '')}\n{size_note}")
    except (RuntimeFailure, InputError) as exc:
        message = redact_text(str(exc))  # a tool's output quoted in a failure may hold an index or mirror URL's userinfo
        (row_logs / "error.txt").write_text(message + "\n")
        return done("failed", message)


def _check_size(matrix: Matrix, row: Row, digest: str, image: str, row_logs: Path, margin: float,
                rerecord: bool) -> tuple[sizes.Verdict, sizes.Baseline]:
    """The size stage: the image measured (also into build-logs/<row>/size.json, in the baseline's format) and
    checked against the row's baseline; a RuntimeFailure, naming the layers that grew, when it grew too much."""
    measured = sizes.measure(image)
    now = sizes.Baseline(row.id, digest, measured.size, measured.layers, attest.now())
    (row_logs / "size.json").write_text(sizes.to_json(now))
    verdict = sizes.check(row.id, digest, measured, sizes.load(sizes.baseline_path(matrix.root, row.id)), margin,
                          rerecord)
    if verdict.action == "fail":
        raise RuntimeFailure(f"{verdict.message}\nthe image stays here as {image}")
    return verdict, now


def _record_size(matrix: Matrix, verdict: sizes.Verdict, measured: sizes.Baseline, write: bool) -> str:
    """After the push: the size note of the row's outcome; the new baseline written when the verdict says to record
    and write (something was pushed, or --record-size)."""
    if verdict.action != "record":
        return f"size: {verdict.message}"
    if not write:
        return f"size: {verdict.message} - not recorded, nothing was pushed (--record-size records it)"
    path = sizes.baseline_path(matrix.root, measured.row)
    sizes.write(path, measured)
    return f"size: {verdict.message}, in {path}"


def _attest(matrix: Matrix, item: render.Rendered, ref_digest: str, inputs: builder.BuildInputs, row_logs: Path,
            wheel, started: str, status, base_ref: str | None = None) -> None:
    """SBOM and provenance of the pushed digest into build-logs/<row>/; attested and signed with a key."""
    row = item.row
    if not ref_digest.split("@", 1)[1]:
        raise RuntimeFailure(f"row {row.id}, stage attest: the registry reported no digest for the push")
    status(row.id, "SBOM and provenance")
    manifest = json.loads((row_logs / "manifest.json").read_text())
    lock_text = locks.read_lock(matrix, row)
    distro = bootstrap_suites()[row.bootstrap_suite]["distro"] if row.bootstrap_suite else "debian"
    base_ref = base_ref or row.base_image
    # a published base is pulled by BuildKit, by digest: its digest is its identity (no local image to inspect)
    base_id = (row.base_digest if row.base_digest else
               docker.run("image", "inspect", "--format", "{{.Id}}", base_ref).stdout.strip())
    tools = {"imagematrix": _version(), "docker": docker.run("version", "--format", "{{.Server.Version}}").stdout.strip()}
    predicate = attest.provenance(
        row, image=manifest["image"], digest=ref_digest.split("@", 1)[1], lock_text=lock_text,
        input_digest=item.context_digest(), base=base_ref, base_id=base_id,
        smoke=attest.smoke_summary(row_logs / "smoke.log"), tools=tools, started=started, finished=attest.now(),
        flash_attn={"file": wheel.filename, "sha256": wheel.sha256, "origin": wheel.origin} if wheel else None)
    sbom_path, prov_path = attest.write(row_logs, attest.sbom(row, manifest, lock_text, distro), predicate)
    if inputs.sign_key:
        status(row.id, f"attesting and signing {ref_digest}")
        attest.attach(ref_digest, sbom_path, prov_path, inputs.sign_key, os.environ.get("COSIGN_PASSWORD", ""))


def _version() -> str:
    try:
        return importlib.metadata.version("imagematrix")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _read_tags(registry: str, rendered: list[render.Rendered], final: dict[str, list[str]], push: str,
               rebuild: bool) -> dict[str, dict | None]:
    """The labels of the tags that decide which rows are up to date (each row's final tags, or its candidate tag),
    read together in parallel; {} when nothing is to be read, or when the reading fails (each row then reads its
    own, and fails naming why)."""
    if rebuild or push not in ("final", "candidate"):
        return {}
    wanted = [tag for item in rendered for tag in (
        final[item.row.id] if push == "final" else [tags.candidate_tag(item.row.id, item.context_digest())])]
    try:
        return remote_labels_of(registry, wanted)
    except RuntimeFailure:
        return {}


def publish(matrix: Matrix, rows: list[Row], registry: str, inputs: builder.BuildInputs, log_dir: Path,
            console: Console, push: str = "final", cache_registry: bool = False,
            rebuild: bool = False, size_margin: float = sizes.DEFAULT_MARGIN,
            record_size: bool = False) -> list[Outcome]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        daemon = pool.submit(docker.require_daemon)  # `docker info` runs while the rows render
        try:
            if registry == tags.DEFAULT_REGISTRY:
                host.ensure_registry(lambda msg: console.print(msg))
            rendered = render.render(matrix, rows)
        finally:
            daemon.result()  # no daemon is said first, as before anything else
    drift = render.drift(matrix, rendered, full=False)
    if drift:
        raise InputError("the generated build contexts differ from the matrix:\n  " + "\n  ".join(drift),
                         fix="run `python build.py render` (and commit the result)")
    final = tags.published_tags([(r.id, r.vllm) for r in matrix.rows])
    known = _read_tags(registry, rendered, final, push, rebuild)
    outcomes = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        for index, item in enumerate(rendered, 1):
            label = f"[{index}/{len(rendered)}] {item.row.id}"
            task = progress.add_task(label)

            def status(row_id: str, stage: str, task=task, label=label) -> None:
                progress.update(task, description=f"{label}: {stage}")
                # A log (CI) gets stage changes as lines; a terminal keeps the flash-attn source decisions too.
                if (not console.is_terminal and not stage.startswith("building [")) or stage.startswith("flash-attn:"):
                    progress.console.print(escape(f"{label}: {stage}"))

            outcome = publish_row(matrix, item, registry, inputs, log_dir, status, final[item.row.id], push,
                                  cache_registry, rebuild, size_margin, record_size, known)
            progress.remove_task(task)
            progress.console.print(f"{outcome.row}: {outcome.status} at {outcome.stage} in {outcome.seconds:.0f} s")
            if outcome.status != "failed":  # a failure's detail comes whole after the summary
                for line in outcome.detail.splitlines()[1:]:  # the size check's note
                    progress.console.print(escape(f"  {line}"))
            outcomes.append(outcome)
    table = Table("row", "result", "stage", "time", "detail", title="build summary")
    for o in outcomes:
        colour = {"pushed": "green", "tested": "green", "skipped": "cyan", "failed": "red"}[o.status]
        first = o.detail.splitlines()[0] if o.detail else ""
        table.add_row(o.row, f"[{colour}]{o.status}[/]", o.stage, f"{o.seconds:.0f} s",
                      escape(first if len(first) <= 100 else first[:97] + "..."))
    console.print(table)
    for o in outcomes:
        if o.status == "failed":
            console.print(f"[red]{o.row}[/] failed at stage {o.stage}:\n  " + escape(o.detail.replace("\n", "\n  ")))
    return outcomes

