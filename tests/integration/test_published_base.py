"""A published base (issue 19, item 1): the base is pushed to the registry once and rows build FROM it by digest,
so a hosted CI runner (no root, no debootstrap, a builder that cannot see locally imported images) builds the same
row as the machine that bootstrapped it.

A tiny stand-in base (dash and its libraries, imported with `docker import`) takes the place of a debootstrapped
one: publishing, the by-digest FROM and the builds are the same code, only the root filesystem is smaller.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from imagematrix.model import fields
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import RuntimeFailure
from imagematrix.stages import bases, builder, render
from imagematrix.tools import docker
from imagematrix.tools import registry as registry_api

ROOT = Path(__file__).resolve().parents[2]


def _tiny_rootfs(dest: Path) -> None:
    """/bin/sh (dash) and the libraries it loads: enough for a RUN step."""
    (dest / "bin").mkdir(parents=True)
    shutil.copy2("/bin/dash", dest / "bin" / "sh")
    for line in subprocess.run(["ldd", "/bin/dash"], capture_output=True, text=True, check=True).stdout.splitlines():
        path = next((p for p in line.split() if p.startswith("/")), None)
        if path:
            target = dest / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    (dest / "tmp").mkdir()


@pytest.fixture
def published(registry_ns, tmp_path, monkeypatch):
    """The stand-in published as bookworm's base in a fresh namespace, its digest recorded (in a patched copy of
    knowledge/bases.yaml's data), and every local copy removed: the registry is the only place that has it."""
    rootfs = tmp_path / "rootfs"
    _tiny_rootfs(rootfs)
    local = f"imagematrix-test-base-{uuid.uuid4().hex[:8]}:tiny"
    assert docker.import_rootfs(rootfs, local) is None
    said = []
    digest = bases.publish_base("bookworm", registry_ns, builder.BuildInputs(), said.append, image=local)
    assert fields.MANIFEST_DIGEST_RE.match(digest) and any("pushing" in s for s in said)
    docker.run("image", "rm", local, f"{registry_ns}/{fields.BASE_REPOSITORY}:bookworm")
    suites = {name: dict(s) for name, s in fields.bootstrap_suites().items()}
    suites["bookworm"]["digest"] = digest
    monkeypatch.setattr(fields, "bootstrap_suites", lambda: suites)
    row = matrix_mod.load(ROOT / "matrix.yaml").rows[0]
    assert row.base == "debootstrap:bookworm" and row.base_digest == digest
    return row, digest


def _hosted_runner(monkeypatch):
    """As on an ubuntu-24.04 hosted runner: not root, no debootstrap; bootstrapping must not even be tried."""
    monkeypatch.setattr(builder.os, "geteuid", lambda: 1001)
    monkeypatch.setattr(builder.debootstrap, "available", lambda: False)
    monkeypatch.setattr(builder.debootstrap, "bootstrap", lambda *a, **k: pytest.fail("bootstrapped on a runner"))
    monkeypatch.setattr(builder.docker, "import_rootfs", lambda *a: pytest.fail("imported a base on a runner"))


def test_a_hosted_runner_builds_from_the_published_base_by_digest(published, registry_ns, tmp_path, monkeypatch):
    row, digest = published
    _hosted_runner(monkeypatch)
    ref = builder.ensure_base(row, builder.BuildInputs(), lambda msg: None, registry_ns)
    assert ref == f"{registry_ns}/{fields.BASE_REPOSITORY}@{digest}"
    assert not docker.image_exists(ref), "nothing local: the build must pull the base from the registry"

    # A Dockerfile starting as the rendered ones do for a published base (the real template's os stage line).
    m = matrix_mod.load(ROOT / "matrix.yaml")
    rendered = render.render(m, [row])[0].files["Dockerfile"].decode()
    from_line = next(line for line in rendered.splitlines() if line.startswith("FROM ") and line.endswith(" AS os"))
    assert from_line == f"FROM ${{BASE_REGISTRY}}/{fields.BASE_REPOSITORY}@{digest} AS os"
    dockerfile = (f"ARG BASE_REGISTRY\n{from_line}\nRUN echo built-from-the-published-base > /proof\n").encode()
    item = render.Rendered(row=replace(row, id="imagematrix-test-tiny"), files={"Dockerfile": dockerfile})
    context = tmp_path / "ctx"
    (context / item.row.id).mkdir(parents=True)
    (context / item.row.id / "Dockerfile").write_bytes(dockerfile)
    candidate = f"imagematrix-test-published:{uuid.uuid4().hex[:8]}"
    try:
        builder.build(item, candidate, context, {}, tmp_path / "logs" / "build.log",
                      build_args=builder.base_build_args(row, registry_ns))
        proc = docker.run("run", "--rm", "--entrypoint", "/bin/sh", candidate, "-c", "read -r line < /proof; echo \"$line\"")
        assert proc.stdout.strip() == "built-from-the-published-base", proc.stderr
        # the image's first layer is the published base's layer
        host, name = registry_api.split(f"{registry_ns}/{fields.BASE_REPOSITORY}")
        _, config = registry_api.Client(host).image(name, digest)
        layers = json.loads(docker.run("image", "inspect", "--format", "{{json .RootFS.Layers}}", candidate).stdout)
        assert layers[0] == config["rootfs"]["diff_ids"][0]
    finally:
        docker.run("image", "rm", "-f", candidate)


def test_a_published_base_missing_from_the_registry_says_how_to_get_it_there(published, registry_ns, monkeypatch):
    row, digest = published
    _hosted_runner(monkeypatch)
    other = f"{registry_ns}-empty"
    with pytest.raises(RuntimeFailure) as exc:
        builder.ensure_base(row, builder.BuildInputs(), lambda msg: None, other)
    text = str(exc.value)
    assert f"the registry has no {other}/{fields.BASE_REPOSITORY}@{digest}" in text
    assert "skopeo copy" in text and "build.py base --suite bookworm" in text and "--record" in text


def test_an_unpublished_base_on_a_hosted_runner_fails_saying_what_and_how(registry_ns, monkeypatch):
    row = matrix_mod.load(ROOT / "matrix.yaml").rows[0]
    if row.base_digest:
        pytest.skip("bookworm is published in knowledge/bases.yaml")
    _hosted_runner(monkeypatch)
    monkeypatch.setattr(builder.docker, "image_exists", lambda ref: False)
    with pytest.raises(RuntimeFailure) as exc:
        builder.ensure_base(row, builder.BuildInputs(), lambda msg: None, registry_ns)
    text = str(exc.value)
    assert "stage base" in text and "cannot bootstrap it: debootstrap is not installed" in text
    assert f"build.py base --suite bookworm --registry {registry_ns} --record" in text


def test_a_docker_container_builder_builds_from_the_published_base(published, registry_ns, tmp_path):
    """setup-buildx-action's builder: BuildKit in a container, which sees no image of the daemon's store. It needs
    the moby/buildkit image, which only Docker Hub serves; where the daemon has it, the builder is made here."""
    image = next((i for i in ("moby/buildkit:buildx-stable-1", "moby/buildkit:latest") if docker.image_exists(i)), None)
    if image is None:
        pytest.skip("no moby/buildkit image in the daemon (Docker Hub unreachable): the docker-container driver "
                    "cannot be started here; the docker-driver build above covers the by-digest FROM")
    row, digest = published
    host = registry_ns.split("/", 1)[0]
    config = tmp_path / "buildkitd.toml"
    config.write_text(f'[registry."{host}"]\n  http = true\n  insecure = true\n')
    name = f"imagematrix-test-{uuid.uuid4().hex[:8]}"
    create = docker.run("buildx", "create", "--name", name, "--driver", "docker-container", "--driver-opt",
                        f"image={image}", "--driver-opt", "network=host", "--config", str(config))
    assert create.returncode == 0, create.stderr
    try:
        context = tmp_path / "ctx"
        context.mkdir()
        (context / "Dockerfile").write_text(f"ARG BASE_REGISTRY\nFROM ${{BASE_REGISTRY}}/{fields.BASE_REPOSITORY}"
                                            f"@{digest}\nRUN echo ok > /proof\n")
        proc = docker.run("buildx", "build", "--builder", name, "--build-arg", f"BASE_REGISTRY={registry_ns}",
                          "--output", "type=cacheonly", str(context))
        assert proc.returncode == 0, proc.stderr[-2000:]
    finally:
        docker.run("buildx", "rm", name)
