"""Publish stage: per row, build -> candidate -> smoke tests -> push final tags -> manifest.

A row whose final tag already carries the same input digest is skipped. A failing row is reported, never pushed
under its final tag, and does not stop the others.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from imagematrix.knowledge import flashattn
from imagematrix.model import labels, tags
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.matrix import Matrix, Row
from imagematrix.model.paths import ROOT
from imagematrix.stages import builder, render
from imagematrix.tools import docker, host, process
from imagematrix.tools import registry as registry_api

DEFAULT_REGISTRY = f"{host.REGISTRY}/imagematrix"
IMAGE_NAME = "verl"


@dataclass
class Outcome:
    row: str
    status: str  # pushed | skipped | failed
    stage: str
    seconds: float
    detail: str = ""


def repository(registry: str) -> str:
    return f"{registry.rstrip('/')}/{IMAGE_NAME}"


def remote_labels(registry: str, tag: str) -> dict | None:
    """Labels of repository:tag in the registry (credentials from the docker config), None when the tag is absent."""
    return registry_api.labels(repository(registry), tag)



def run_smoke(matrix: Matrix, row: Row, image: str, log_path: Path, extra: list[str] | None = None) -> bool:
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "smoke"), "-p", "no:cacheprovider", "-q", "-rs",
           "--image", image, "--row", row.id, "--matrix", str(matrix.path), *(extra or [])]
    return process.run_logged(cmd, log_path, cwd=ROOT) == 0


def write_manifest(image: str, pushed: dict[str, str], path: Path) -> None:
    """pip freeze, dpkg list, labels, digest and size of the image, as JSON."""
    inspect = json.loads(docker.run("image", "inspect", image).stdout)[0]

    def inside(command: str) -> list[str]:
        proc = docker.run("run", "--rm", "--entrypoint", "sh", image, "-c", command)
        return proc.stdout.splitlines()

    manifest = {
        "image": image,
        "pushed": pushed,
        "image_id": inspect["Id"],
        "size_bytes": inspect["Size"],
        "labels": inspect["Config"]["Labels"],
        "env": inspect["Config"]["Env"],
        "pip_freeze": inside("uv pip freeze --python /opt/venv/bin/python"),
        "dpkg": inside("dpkg-query -W -f '${Package} ${Version}\\n'"),
    }
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def check_flash_attn(row: Row, mirror: str | None) -> None:
    """Fail before any build step when the row's flash-attn wheel cannot be fetched (pip would compile for hours)."""
    base = mirror or flashattn.RELEASES
    host = urllib.parse.urlsplit(base).hostname or ""
    if registry_api.is_loopback(host):
        raise RuntimeFailure(f"row {row.id}, stage inputs: the flash-attn mirror {flashattn.redact(base)} is on "
                             "loopback, which build steps cannot reach\n"
                             "  fix: serve it on an address the build can reach (e.g. the docker bridge 172.17.0.1)")
    url = flashattn.wheel_url(flash_attn=row.flash_attn, cuda=row.cuda, torch=row.torch, python=row.python, base=base)
    problem = flashattn.check_reachable(url)
    if problem:
        raise RuntimeFailure(
            f"row {row.id}, stage inputs: the flash-attn {row.flash_attn} wheel {problem}\n"
            "  fix: pass --flash-attn-mirror URL, a base URL laid out like the GitHub releases "
            f"(v<version>/<wheel>: here {flashattn.wheel_path(flash_attn=row.flash_attn, cuda=row.cuda, torch=row.torch, python=row.python)})")


PUSH_MODES = ("final", "candidate", "none")


def _push(row: Row, ref: str) -> str:
    """docker push ref; returns the manifest digest the registry reported."""
    proc = docker.run("push", ref)
    if proc.returncode != 0:
        raise RuntimeFailure(f"row {row.id}, stage push: docker push {ref} failed: {proc.stderr.strip()[-600:]}")
    found = re.search(r"digest: (sha256:[0-9a-f]{64})", proc.stdout)
    return found.group(1) if found else ""


def publish_row(matrix: Matrix, item: render.Rendered, registry: str, inputs: builder.BuildInputs,
                log_dir: Path, status, final: list[str], push: str = "final", cache_registry: bool = False) -> Outcome:
    """One row: skip when its final tag has the same input digest, else base -> build -> smoke -> push.

    push: "final" pushes the row's final tags; "candidate" pushes only the tested candidate tag (CI: GPU jobs pull
    it, `promote` retags it); "none" pushes nothing (pull requests without registry credentials).
    """
    row = item.row
    started = time.monotonic()
    digest = item.context_digest()
    repo = repository(registry)
    row_logs = log_dir / row.id
    row_logs.mkdir(parents=True, exist_ok=True)
    stage = "check"

    def done(state: str, detail: str = "") -> Outcome:
        return Outcome(row.id, state, stage, time.monotonic() - started, detail)

    candidate_tag = tags.candidate_tag(row.id, digest)
    candidate = f"{repo}:{candidate_tag}"
    try:
        status(row.id, "checking the registry")
        if push == "candidate":
            remote = remote_labels(registry, candidate_tag)
            if remote and remote.get(labels.INPUT_DIGEST) == digest:
                return done("skipped", f"{candidate} is already pushed")
        remote = remote_labels(registry, row.id) if push == "final" else None
        if remote and remote.get(labels.INPUT_DIGEST) == digest:
            moved = []
            for alias in final[1:]:  # an alias whose earlier push failed, or that moved to this row
                alias_labels = remote_labels(registry, alias) or {}
                if alias_labels.get(labels.INPUT_DIGEST) != digest:
                    status(row.id, f"tagging {repo}:{alias}")
                    registry_api.retag(repo, row.id, alias)
                    moved.append(alias)
            return done("skipped", f"{repo}:{row.id} already has input {digest[:19]}"
                        + (f"; tagged {', '.join(moved)}" if moved else ""))
        if row.flash_attn:
            stage = "inputs"
            status(row.id, "checking the flash-attn wheel")
            check_flash_attn(row, inputs.flash_attn_mirror)
        stage = "base"
        status(row.id, "base image")
        docker.cli()  # no docker CLI fails this stage, before any work
        builder.ensure_base(row, inputs, lambda msg: status(row.id, msg))
        stage = "build"
        status(row.id, "building (BuildKit)")
        cache = f"{repo}:buildcache-{row.id}" if cache_registry else None
        with tempfile.TemporaryDirectory(prefix="imagematrix-secrets-") as secret_dir:
            secrets = inputs.write_secrets(Path(secret_dir))
            builder.build(item, candidate, render.generated_dir(matrix), secrets, row_logs / "build.log",
                          lambda step: status(row.id, f"building {step}"), cache=cache)
        stage = "smoke"
        status(row.id, "smoke tests")
        if not run_smoke(matrix, row, candidate, row_logs / "smoke.log"):
            return done("failed", f"smoke tests failed, nothing pushed; log {row_logs / 'smoke.log'}; "
                                  f"the untested image stays here as {candidate}")
        stage = "push"
        pushed = {}
        if push != "final":
            if push == "candidate":
                status(row.id, f"pushing {candidate}")
                pushed[candidate_tag] = _push(row, candidate)
            stage = "manifest"
            write_manifest(candidate, pushed, row_logs / "manifest.json")
            return done("pushed" if pushed else "tested", candidate if pushed else f"{candidate} (local, not pushed)")
        for tag in final:  # the row's own tag first: a rerun repairs an alias whose push failed
            status(row.id, f"pushing {repo}:{tag}")
            ref = f"{repo}:{tag}"
            proc = docker.run("tag", candidate, ref)
            if proc.returncode != 0:
                raise RuntimeFailure(f"row {row.id}, stage push: docker tag {ref} failed: {proc.stderr.strip()}")
            pushed[tag] = _push(row, ref)
        stage = "manifest"
        status(row.id, "writing the manifest")
        write_manifest(f"{repo}:{row.id}", pushed, row_logs / "manifest.json")
        docker.run("rmi", candidate)  # the candidate tag only; layers stay with the final tag
        return done("pushed", f"{', '.join(f'{repo}:{t}' for t in final)} {pushed.get(row.id, '')}")
    except (RuntimeFailure, InputError) as exc:
        (row_logs / "error.txt").write_text(str(exc) + "\n")
        return done("failed", str(exc))


def publish(matrix: Matrix, rows: list[Row], registry: str, inputs: builder.BuildInputs, log_dir: Path,
            console: Console, push: str = "final", cache_registry: bool = False) -> list[Outcome]:
    docker.require_daemon()
    if registry == DEFAULT_REGISTRY:
        host.ensure_registry(lambda msg: console.print(msg))
    rendered = render.render(matrix, rows)
    drift = render.drift(matrix, rendered, full=False)
    if drift:
        raise InputError("the generated build contexts differ from the matrix:\n  " + "\n  ".join(drift),
                         fix="run `python build.py render` (and commit the result)")
    final = tags.published_tags([(r.id, r.vllm) for r in matrix.rows])
    outcomes = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        for index, item in enumerate(rendered, 1):
            label = f"[{index}/{len(rendered)}] {item.row.id}"
            task = progress.add_task(label)

            def status(row_id: str, stage: str, task=task, label=label) -> None:
                progress.update(task, description=f"{label}: {stage}")
                if not console.is_terminal and not stage.startswith("building ["):
                    console.print(f"{label}: {stage}")  # a log (CI) gets stage changes as lines

            outcome = publish_row(matrix, item, registry, inputs, log_dir, status, final[item.row.id], push,
                                  cache_registry)
            progress.remove_task(task)
            progress.console.print(f"{outcome.row}: {outcome.status} at {outcome.stage} in {outcome.seconds:.0f} s")
            outcomes.append(outcome)
    table = Table("row", "result", "stage", "time", "detail", title="build summary")
    for o in outcomes:
        colour = {"pushed": "green", "tested": "green", "skipped": "cyan", "failed": "red"}[o.status]
        first = o.detail.splitlines()[0] if o.detail else ""
        table.add_row(o.row, f"[{colour}]{o.status}[/]", o.stage, f"{o.seconds:.0f} s",
                      first if len(first) <= 100 else first[:97] + "...")
    console.print(table)
    for o in outcomes:
        if o.status == "failed":
            console.print(f"[red]{o.row}[/] failed at stage {o.stage}:\n  " + o.detail.replace("\n", "\n  "))
    return outcomes


def promote(matrix: Matrix, rows: list[Row], registry: str, console: Console,
            missing: dict[str, list[str]] | None = None) -> list[Outcome]:
    """Retag each row's tested candidate to its final tags, in the registry (no pull, no rebuild).

    A row is held back when `missing` names test results it lacks, when its candidate is absent, or when the
    candidate was built from another input than the committed build context.
    """
    final = tags.published_tags([(r.id, r.vllm) for r in matrix.rows])
    repo = repository(registry)
    outcomes = []
    for item in render.render(matrix, rows):
        row, digest, started = item.row, item.context_digest(), time.monotonic()
        candidate = tags.candidate_tag(row.id, digest)

        def outcome(state: str, detail: str, row=row, started=started) -> Outcome:
            return Outcome(row.id, state, "promote", time.monotonic() - started, detail)

        lacking = (missing or {}).get(row.id)
        if lacking:
            outcomes.append(outcome("failed", f"held back: no passing result from {', '.join(lacking)}"))
            continue
        try:
            remote = remote_labels(registry, candidate)
            if remote is None:
                outcomes.append(outcome("failed", f"no candidate {repo}:{candidate} in the registry: build and push it "
                                                  f"with `build.py build --row {row.id} --push candidate`"))
                continue
            if remote.get(labels.INPUT_DIGEST) != digest:
                outcomes.append(outcome("failed", f"{repo}:{candidate} was built from input "
                                                  f"{remote.get(labels.INPUT_DIGEST)}, not {digest}: rebuild it"))
                continue
            for tag in final[row.id]:
                registry_api.retag(repo, candidate, tag)
            outcomes.append(outcome("pushed", f"{repo}:{candidate} -> {', '.join(final[row.id])}"))
        except RuntimeFailure as exc:
            outcomes.append(outcome("failed", str(exc)))
    for o in outcomes:
        console.print(f"{o.row}: {'promoted' if o.status == 'pushed' else 'NOT promoted'}: {o.detail}")
    return outcomes
