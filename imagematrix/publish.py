"""Publish stage: per row, build -> candidate -> smoke tests -> push final tags -> manifest.

A row whose final tag already carries the same input digest is skipped. A failing row is reported, never pushed
under its final tag, and does not stop the others.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import builder, render, setup, tags
from .errors import InputError, RuntimeFailure
from .matrix import Matrix, Row
from .paths import ROOT

DEFAULT_REGISTRY = f"{setup.REGISTRY}/imagematrix"
IMAGE_NAME = "verl"
MANIFEST_MEDIA = ("application/vnd.docker.distribution.manifest.v2+json,"
                  "application/vnd.oci.image.manifest.v1+json")


@dataclass
class Outcome:
    row: str
    status: str  # pushed | skipped | failed
    stage: str
    seconds: float
    detail: str = ""


def repository(registry: str) -> str:
    return f"{registry.rstrip('/')}/{IMAGE_NAME}"


def _loopback(registry: str) -> bool:
    return registry.startswith(("127.0.0.1", "localhost"))


def remote_labels(registry: str, tag: str) -> dict | None:
    """Labels of repository:tag in the registry, None when the tag does not exist."""
    repo = repository(registry)
    if _loopback(registry):
        host, _, path = repo.partition("/")
        try:
            req = urllib.request.Request(f"http://{host}/v2/{path}/manifests/{tag}", headers={"Accept": MANIFEST_MEDIA})
            manifest = json.load(urllib.request.urlopen(req, timeout=10))
            blob = f"http://{host}/v2/{path}/blobs/{manifest['config']['digest']}"
            config = json.load(urllib.request.urlopen(blob, timeout=10))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise RuntimeFailure(f"registry {host}: {exc}") from None
        except OSError as exc:
            raise RuntimeFailure(f"registry {host} is unreachable: {exc}") from None
        return (config.get("config") or {}).get("Labels") or {}
    cli = setup.docker_cli()
    proc = subprocess.run([cli, "buildx", "imagetools", "inspect", f"{repo}:{tag}", "--format", "{{json .Image}}"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        if "not found" in proc.stderr.lower():
            return None
        raise RuntimeFailure(f"cannot inspect {repo}:{tag}: {proc.stderr.strip()[-400:]}")
    return (json.loads(proc.stdout).get("config") or {}).get("Labels") or {}


def _docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([setup.docker_cli(), *args], capture_output=True, text=True)


def run_smoke(matrix: Matrix, row: Row, image: str, log_path: Path, extra: list[str] | None = None) -> bool:
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "smoke"), "-p", "no:cacheprovider", "-q", "-rs",
           "--image", image, "--row", row.id, "--matrix", str(matrix.path), *(extra or [])]
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode == 0


def write_manifest(image: str, pushed: dict[str, str], path: Path) -> None:
    """pip freeze, dpkg list, labels, digest and size of the image, as JSON."""
    inspect = json.loads(_docker("image", "inspect", image).stdout)[0]

    def inside(command: str) -> list[str]:
        proc = _docker("run", "--rm", "--entrypoint", "sh", image, "-c", command)
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


def publish_row(matrix: Matrix, item: render.Rendered, registry: str, inputs: builder.BuildInputs,
                log_dir: Path, status) -> Outcome:
    row = item.row
    started = time.monotonic()
    digest = item.context_digest()
    repo = repository(registry)
    row_logs = log_dir / row.id
    row_logs.mkdir(parents=True, exist_ok=True)
    stage = "check"

    def done(state: str, detail: str = "") -> Outcome:
        return Outcome(row.id, state, stage, time.monotonic() - started, detail)

    try:
        status(row.id, "checking the registry")
        labels = remote_labels(registry, row.id)
        if labels and labels.get(builder.INPUT_DIGEST_LABEL) == digest:
            return done("skipped", f"{repo}:{row.id} already has input {digest[:19]}")
        stage = "base"
        status(row.id, "base image")
        cli = setup.docker_cli()
        builder.ensure_base(row, cli, inputs, lambda msg: status(row.id, msg))
        stage = "build"
        status(row.id, "building (BuildKit)")
        candidate = f"{repo}:{tags.candidate_tag(row.id, digest)}"
        with tempfile.TemporaryDirectory(prefix="imagematrix-secrets-") as secret_dir:
            secrets = inputs.write_secrets(Path(secret_dir))
            builder.build(item, candidate, render.generated_dir(matrix), secrets, row_logs / "build.log")
        stage = "smoke"
        status(row.id, "smoke tests")
        if not run_smoke(matrix, row, candidate, row_logs / "smoke.log"):
            return done("failed", f"smoke tests failed, not pushed (log: {row_logs / 'smoke.log'})")
        stage = "push"
        pushed = {}
        for tag in tags.final_tags(row.id, row.vllm):
            status(row.id, f"pushing {repo}:{tag}")
            ref = f"{repo}:{tag}"
            for cmd in (("tag", candidate, ref), ("push", ref)):
                proc = _docker(*cmd)
                if proc.returncode != 0:
                    raise RuntimeFailure(f"docker {cmd[0]} {ref} failed: {proc.stderr.strip()[-600:]}")
            found = re.search(r"digest: (sha256:[0-9a-f]{64})", proc.stdout)
            pushed[tag] = found.group(1) if found else ""
        stage = "manifest"
        status(row.id, "writing the manifest")
        write_manifest(f"{repo}:{row.id}", pushed, row_logs / "manifest.json")
        _docker("rmi", candidate)  # the candidate tag only; layers stay with the final tag
        return done("pushed", f"{repo}:{row.id} {pushed.get(row.id, '')}")
    except (RuntimeFailure, InputError) as exc:
        (row_logs / "error.txt").write_text(str(exc) + "\n")
        return done("failed", str(exc))


def publish(matrix: Matrix, rows: list[Row], registry: str, inputs: builder.BuildInputs, log_dir: Path,
            console: Console) -> list[Outcome]:
    setup.require_daemon()
    if registry == DEFAULT_REGISTRY:
        setup.ensure_registry(lambda msg: console.print(msg))
    rendered = render.render(matrix, rows)
    drift = render.drift(matrix, rendered, full=False)
    if drift:
        raise InputError("the generated build contexts differ from the matrix:\n  " + "\n  ".join(drift),
                         fix="run `python build.py render` (and commit the result)")
    outcomes = []
    for index, item in enumerate(rendered, 1):
        t0 = time.monotonic()
        with console.status(f"[{index}/{len(rendered)}] {item.row.id}") as spinner:
            def status(row_id: str, stage: str, spinner=spinner, index=index, t0=t0) -> None:
                spinner.update(f"[{index}/{len(rendered)}] {row_id}: {stage} ({time.monotonic() - t0:.0f} s)")
            outcome = publish_row(matrix, item, registry, inputs, log_dir, status)
        console.print(f"{outcome.row}: {outcome.status} at {outcome.stage} in {outcome.seconds:.0f} s")
        outcomes.append(outcome)
    table = Table("row", "result", "stage", "time", "detail", title="build summary")
    for o in outcomes:
        colour = {"pushed": "green", "skipped": "cyan", "failed": "red"}[o.status]
        table.add_row(o.row, f"[{colour}]{o.status}[/]", o.stage, f"{o.seconds:.0f} s", o.detail)
    console.print(table)
    return outcomes
