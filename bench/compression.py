"""Metric (issue 17): gzip against zstd layers, from publishing to the first command on a fresh store.

    python3 -m bench.compression [--image REF] [--level 3] [--out bench/records/compression.json]

For a published row image (gzip layers, as BuildKit pushes them):
1. publish: the zstd copy `promote --compression zstd` makes (imagematrix.tools.skopeo.copy, level 3), timed, into a
   namespace of the run's own; bytes = the sum of the manifest's layer sizes, for both.
2. pull: each variant into an empty containerd namespace (`ctr images pull --plain-http`, which also unpacks the
   layers into snapshots): wall time. containerd, not dockerd: the docker.io 20.10 daemon here cannot pull zstd
   layers ("failed to register layer: ... invalid tar header", seen by issue 17); its containerd 1.6 can.
3. first command: `ctr run --rm` of `python -c 'import vllm, verl, torch'` in the pulled image: wall time.
Single runs (each moves gigabytes); the record says so. Everything the run creates (its registry namespace,
containerd namespaces, images and snapshots) is removed at the end.

Build -> push, per format (`push_formats`), from the row image as the build leaves it in the daemon
(`imagematrix/verl:<row>`, or --local): BuildKit 0.8 here cannot export zstd, so
- gzip: `docker push` (dockerd gzips each layer as it uploads; what `build --push` does),
- zstd: `skopeo copy docker-daemon:<image> docker://...` with `--dest-compress-format zstd` (level 3, OCI manifest):
  straight from the daemon's store, no gzip step,
each into a registry of its own (Debian's docker-registry on a spare loopback port, empty storage for every push:
dockerd and skopeo would otherwise mount or reuse blobs they know are there), timed as a whole command; bytes = the
registry's blob store after the push (layers, config, manifest). `--push-runs` runs of each, alternating.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from imagematrix.tools import skopeo

from .common import median
from .report import line

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "127.0.0.1:5000/imagematrix/verl:verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
CTR = ["ctr", "--address", "/var/run/docker/containerd/containerd.sock"]
FIRST = ["/opt/venv/bin/python", "-c", "import vllm, verl, torch"]
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
LOCAL = "127.0.0.1:5000/imagematrix/verl:verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"  # as `build` tags it
PUSH_RUNS = 3


def _layers(ref: str) -> tuple[int, str]:
    host, rest = ref.split("/", 1)
    name, tag = rest.rsplit(":", 1)
    request = urllib.request.Request(f"http://{host}/v2/{name}/manifests/{tag}", headers={"Accept": ACCEPT})
    manifest = json.load(urllib.request.urlopen(request, timeout=60))
    kinds = sorted({layer["mediaType"].rsplit(".", 1)[-1] for layer in manifest["layers"]})
    return sum(layer["size"] for layer in manifest["layers"]), "/".join(kinds)


def _timed(cmd: list[str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])}... failed: {(proc.stderr or proc.stdout)[-800:]}")
    return round(time.monotonic() - started, 1)


def _cleanup(namespace: str, ref: str) -> None:
    ctr = [*CTR, "-n", namespace]
    subprocess.run([*ctr, "images", "rm", "--sync", ref], capture_output=True)
    snapshots = subprocess.run([*ctr, "snapshots", "ls"], capture_output=True, text=True).stdout.splitlines()[1:]
    for _ in range(len(snapshots) + 1):  # children first: retry until none is left
        names = [line.split()[0] for line in
                 subprocess.run([*ctr, "snapshots", "ls"], capture_output=True, text=True).stdout.splitlines()[1:]]
        if not names:
            break
        for name in names:
            subprocess.run([*ctr, "snapshots", "rm", name], capture_output=True)
    for blob in subprocess.run([*ctr, "content", "ls", "-q"], capture_output=True, text=True).stdout.split():
        subprocess.run([*ctr, "content", "rm", blob], capture_output=True)
    subprocess.run([*CTR, "namespaces", "rm", namespace], capture_output=True)


def _drop_namespace(namespace: str) -> list[str]:
    """Remove a namespace of the bench's own from the embedded registry's storage, and the blobs that only it
    linked (the zstd copy's layers: no other repository has them unless it made the same copy, then they stay).
    Returns the blob digests removed."""
    repos = _registry_storage().parent.parent / "repositories"
    mine = repos / namespace
    if not namespace.startswith("imagematrix-bench-") or not mine.is_dir():
        return []
    links = ("_layers/sha256/*/link", "_manifests/revisions/sha256/*/link")
    ours = {p.parent.name for pattern in links for p in mine.rglob(pattern)}
    others = {p.parent.name for pattern in links for p in repos.rglob(pattern) if not p.is_relative_to(mine)}
    shutil.rmtree(mine)
    removed = []
    for digest in sorted(ours - others):
        blob = _registry_storage() / digest[:2] / digest
        if blob.is_dir():
            shutil.rmtree(blob)
            removed.append(f"sha256:{digest}")
    return removed


def measure(image: str = IMAGE, level: int = 3) -> dict:
    """The raw figures of one run (see the module docstring)."""
    nonce = secrets.token_hex(4)
    host = image.split("/", 1)[0]
    zstd_ref = f"{host}/imagematrix-bench-{nonce}/verl:zstd{level}"
    record: dict = {"image": image, "level": level, "runs": 1}
    try:
        return _measure(image, level, nonce, zstd_ref, record)
    finally:
        record["cleanup_blobs_removed"] = len(_drop_namespace(f"imagematrix-bench-{nonce}"))


def _measure(image: str, level: int, nonce: str, zstd_ref: str, record: dict) -> dict:
    started = time.monotonic()
    skopeo.copy(image, zstd_ref, compress="zstd", level=level)
    record["zstd_publish_s"] = round(time.monotonic() - started, 1)
    for kind, ref in (("gzip", image), ("zstd", zstd_ref)):
        size, media = _layers(ref)
        namespace = f"imagematrix-bench-{nonce}-{kind}"
        try:
            pull = _timed([*CTR, "-n", namespace, "images", "pull", "--plain-http", ref])
            first = _timed([*CTR, "-n", namespace, "run", "--rm", ref, f"bench-{nonce}-{kind}", *FIRST])
        finally:
            _cleanup(namespace, ref)
        record[kind] = {"layers": media, "bytes": size, "pull_unpack_s": pull, "first_command_s": first}
        print(f"{kind}: {size / 1e9:.2f} GB ({media}), pull+unpack {pull} s, first command {first} s", flush=True)
    return record


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _registry_storage() -> Path:
    from imagematrix.model.paths import cache_dir

    return cache_dir() / "registry" / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256"


def _blob_files(ref: str) -> list[Path]:
    """The files of ref's layers in the embedded registry's storage (the gzip bytes a push of it uploads)."""
    host, rest = ref.split("/", 1)
    name, tag = rest.rsplit(":", 1)
    request = urllib.request.Request(f"http://{host}/v2/{name}/manifests/{tag}", headers={"Accept": ACCEPT})
    manifest = json.load(urllib.request.urlopen(request, timeout=60))
    files = [_registry_storage() / layer["digest"][7:9] / layer["digest"][7:] / "data" for layer in manifest["layers"]]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"{ref}: layer files not in the embedded registry's storage: {missing[:2]}")
    return files


def _ceiling(port: int, files: list[Path]) -> None:
    """The upload ceiling: the image's gzip layers, already compressed, each uploaded by curl in one PUT (POST
    for an upload URL, then PUT ?digest= with the file), one after another."""
    import hashlib

    for path in files:
        digest = "sha256:" + path.parent.name
        if hashlib.sha256(b"").hexdigest() == path.parent.name:
            continue
        location = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{redirect_url}%header{location}", "-X",
                                   "POST", f"http://127.0.0.1:{port}/v2/imagematrix-bench/ceiling/blobs/uploads/"],
                                  capture_output=True, text=True, check=True).stdout.strip()
        url = location if location.startswith("http") else f"http://127.0.0.1:{port}{location}"
        url += ("&" if "?" in url else "?") + f"digest={digest}"
        subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", "-X", "PUT", "-H",
                        "Content-Type: application/octet-stream", "-T", str(path), url], check=True,
                       capture_output=True)


def _buildkit_push(context: Path, target: str, secrets: dict[str, Path], tag_only: str | None = None) -> list[str]:
    """`docker buildx build` of the row's context; with tag_only, a plain build tagged so (the priming build);
    else BuildKit itself pushes to target (`--output type=image,name=...,push=true`)."""
    output = ["-t", tag_only] if tag_only else ["--output", f"type=image,name={target},push=true"]
    return ["docker", "buildx", "build", "--progress=plain", *[f"--secret=id={k},src={v}" for k, v in secrets.items()],
            *output, str(context)]


def _push_once(kind: str, image: str, level: int, work: Path, extra: dict | None = None) -> tuple[float, int]:
    """One push of the daemon's image into a fresh, empty registry: (wall seconds, bytes stored)."""
    port = _free_port()
    storage = work / f"registry-{kind}"
    storage.mkdir(parents=True)
    config = work / f"registry-{kind}.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    server = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}/imagematrix-bench/verl:{kind}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        if kind == "ceiling":
            started = time.monotonic()
            _ceiling(port, (extra or {})["files"])
            seconds = round(time.monotonic() - started, 1)
        else:
            if kind == "gzip":
                subprocess.run(["docker", "tag", image, target], check=True, capture_output=True)
                cmd = ["docker", "push", target]
            elif kind == "buildkit":
                cmd = _buildkit_push((extra or {})["context"], target, (extra or {})["secrets"])
            else:
                cmd = [skopeo.require(), "copy", "--format", "oci", "--dest-tls-verify=false", "--dest-compress",
                       "--dest-compress-format", "zstd", "--dest-compress-level", str(level),
                       f"docker-daemon:{image}", f"docker://{target}"]
            seconds = _timed(cmd)
        stored = sum(f.stat().st_size for f in (storage / "docker" / "registry" / "v2" / "blobs").rglob("*")
                     if f.is_file())
        return seconds, stored
    finally:
        server.terminate()
        server.wait(timeout=30)
        if kind in ("gzip", "buildkit"):  # docker tag, or the name BuildKit's image exporter gave it
            subprocess.run(["docker", "rmi", target], capture_output=True)
        shutil.rmtree(storage, ignore_errors=True)
        config.unlink(missing_ok=True)


def _primed_context(ctx, work: Path) -> dict:
    """The row's committed context, its image stage marked with the run's marker (so the janitor prunes the cache
    records it makes), built once and tagged (os and torch stages from BuildKit's cache when it has them), so the
    `buildkit` push is BuildKit's export + push alone."""
    row = IMAGE.rsplit(":", 1)[1]
    context = work / "ctx" / row
    shutil.copytree(ROOT / "dockerfiles" / "generated" / row, context)
    text = (context / "Dockerfile").read_text()
    head, sep, tail = text.partition("FROM torch AS image")
    (context / "Dockerfile").write_text(head + sep + tail.replace("set -eu;", f"set -eu; : {ctx.marker};"))
    secrets = ctx.build_secrets()
    tag = ctx.janitor.image(f"imagematrix-bench-{ctx.nonce}/verl:buildkit-prime")
    proc = subprocess.run(_buildkit_push(context, "", secrets, tag_only=tag), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"priming build of {row} failed: {proc.stdout[-800:]}")
    return {"context": context, "secrets": secrets}


KINDS = ("ceiling", "gzip", "zstd", "buildkit")


def push_formats(image: str = LOCAL, level: int = 3, runs: int = PUSH_RUNS, ctx=None) -> dict:
    """Build -> push wall time and bytes per way (module docstring), `runs` of each, alternating: the upload
    ceiling (curl of the published gzip layers), docker push (gzip), skopeo (zstd from the daemon) and, with a
    bench context, BuildKit pushing itself."""
    kinds = KINDS if ctx is not None else ("gzip", "zstd")
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    stored: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-push-", dir=ROOT / "bench") as work:
        extra = {"files": _blob_files(IMAGE)}
        disk = _disk_copy(extra["files"], Path(work))
        if ctx is not None:
            extra.update(_primed_context(ctx, Path(work)))
        for index in range(runs):
            for kind in kinds:
                seconds, stored[kind] = _push_once(kind, image, level, Path(work) / str(index), extra)
                samples[kind].append(seconds)
                print(f"push {kind} run {index + 1}/{runs}: {seconds} s, {stored[kind] / 1e9:.2f} GB", flush=True)
    return {"image": image, "level": level, "runs": runs, "samples_s": samples,
            "median_s": {kind: median(v) for kind, v in samples.items()}, "bytes": stored,
            "ceiling_bytes": sum(f.stat().st_size for f in extra["files"]), "disk_copy": disk}


def _disk_copy(files: list[Path], work: Path) -> dict:
    """The disk's own rate: the largest layer file copied with dd (16 MiB blocks, fdatasync), as a registry writes."""
    largest = max(files, key=lambda f: f.stat().st_size)
    started = time.monotonic()
    subprocess.run(["dd", f"if={largest}", f"of={work / 'dd.out'}", "bs=16M", "conv=fdatasync"], check=True,
                   capture_output=True)
    seconds = time.monotonic() - started
    (work / "dd.out").unlink()
    return {"bytes": largest.stat().st_size, "seconds": round(seconds, 1)}


def compression(ctx) -> dict:
    """Metric 10, in the shape of the other measures (bench/__main__.py: --only compression)."""
    r = measure()
    gz, zs = r["gzip"], r["zstd"]
    p = push_formats(runs=min(ctx.runs, PUSH_RUNS), ctx=ctx)
    n = p["runs"]
    r["push"] = p
    return {
        "title": "zstd against gzip layers: bytes, pull + unpack, first command",
        "method": ("The verl 0.3 row's published image (gzip layers, as BuildKit pushes them) and its zstd copy made "
                   "the way `promote --compression zstd` makes it (skopeo 1.9, level 3, through a local OCI layout), "
                   "each pulled with `ctr images pull` (containerd 1.6.20, which also unpacks) into an empty "
                   "containerd namespace, then `ctr run --rm` of `python -c 'import vllm, verl, torch'`. One run of "
                   "each (gigabytes per run). dockerd 20.10 cannot pull zstd layers, so containerd is the client. "
                   "Build -> push per format, from the row image in the daemon (BuildKit 0.8 cannot export zstd): "
                   "gzip = `docker push` (dockerd gzips as it uploads), zstd = `skopeo copy docker-daemon:... "
                   "docker://...` with zstd level 3 (straight from the daemon, no gzip step), each into an empty "
                   "registry of its own (Debian's docker-registry on a spare port, fresh storage per push, so "
                   "nothing is mounted or reused); bytes = the registry's blob store after the push; median of "
                   f"{n} runs of each, alternating. Beside them, in the same loop: the upload ceiling (the published "
                   "image's gzip layer files, already compressed, each uploaded by `curl -T` in one PUT into such a "
                   "registry, one after another: no compression, no daemon) and BuildKit pushing itself (`docker "
                   "buildx build --output type=image,name=...,push=true` of the row's committed context after one "
                   "priming build of it, so every step is cached and the time is export + push; with the docker driver, "
                   "the only one here, buildx hands the push to the daemon: its log says `pushing ... with docker`, "
                   "and `compression=zstd,force-compression=true,oci-mediatypes=true` still gives gzip layers in a "
                   "Docker v2 manifest, seen 2026-12-07)."),
        "notes": [f"raw: {json.dumps(r)}",
                  "docker.io 20.10's dockerd cannot pull the zstd copy (issue 17: 'invalid tar header'); "
                  "promote --compression both keeps gzip tags for such clients"],
        "lines": [
            line("layer bytes, zstd vs gzip", zs["bytes"], "B", ref=gz["bytes"], ref_what="gzip",
                 ratio=zs["bytes"] / gz["bytes"], ratio_what="zstd / gzip"),
            line("pull + unpack on an empty store", zs["pull_unpack_s"], "s", ours_note="zstd, 1 run",
                 ref=gz["pull_unpack_s"], ref_what="gzip, 1 run", ratio=zs["pull_unpack_s"] / gz["pull_unpack_s"],
                 ratio_what="zstd / gzip"),
            line("first command after the pull", zs["first_command_s"], "s", ours_note="zstd",
                 ref=gz["first_command_s"], ref_what="gzip", ratio=zs["first_command_s"] / gz["first_command_s"],
                 ratio_what="zstd / gzip"),
            line("publishing the zstd copy (skopeo, level 3)", r["zstd_publish_s"], "s", ours_note="1 run"),
            line("push from the daemon, zstd vs gzip", p["median_s"]["zstd"], "s",
                 ours_note=f"skopeo zstd, median of {n}", ref=p["median_s"]["gzip"],
                 ref_what=f"docker push (gzip), median of {n}", ratio=p["median_s"]["zstd"] / p["median_s"]["gzip"],
                 ratio_what="zstd / gzip"),
            line("bytes pushed, zstd vs gzip", p["bytes"]["zstd"], "B", ref=p["bytes"]["gzip"], ref_what="gzip",
                 ratio=p["bytes"]["zstd"] / p["bytes"]["gzip"], ratio_what="zstd / gzip"),
            *_push_lines(p),
        ],
        "details": r,
    }


def _push_lines(p: dict) -> list[dict]:
    """Push throughput against the upload ceiling (bytes per second, each way's own bytes)."""
    if "ceiling" not in p["median_s"]:
        return []
    n, med, stored = p["runs"], p["median_s"], p["bytes"]
    rate = {kind: stored[kind] / med[kind] for kind in med if med[kind]}
    ceiling = p["ceiling_bytes"] / med["ceiling"]
    names = {"gzip": "docker push (gzip)", "zstd": "skopeo zstd from the daemon", "buildkit": "buildx build --output push=true"}
    disk = p["disk_copy"]
    disk_rate = disk["bytes"] / disk["seconds"] / 1e6 if disk["seconds"] else None
    lines = [line("disk: dd copy of the largest layer file (16 MiB blocks, fdatasync)", disk_rate, "MB/s",
                  ours_note=f"{disk['bytes'] / 1e9:.2f} GB in {disk['seconds']} s, 1 run"),
             line("upload ceiling: curl PUT of the gzip layer files into an empty registry", ceiling / 1e6, "MB/s",
                  ours_note=f"{med['ceiling']:.0f} s, median of {n}", ref=disk_rate, ref_what="disk copy",
                  ratio=ceiling / 1e6 / disk_rate if disk_rate else None, ratio_what="upload / disk")]
    for kind, name in names.items():
        if kind in rate:
            lines.append(line(f"push rate, {name}, vs the ceiling", rate[kind] / 1e6, "MB/s",
                              ours_note=f"{med[kind]:.0f} s, median of {n}", ref=ceiling / 1e6, ref_what="curl upload",
                              ratio=rate[kind] / ceiling, ratio_what="push / ceiling"))
    if "buildkit" in med:
        lines.append(line("push time, buildx build --output push=true (cached build) vs docker push", med["buildkit"],
                          "s", ref=med["gzip"],
                          ref_what="docker push", ratio=med["buildkit"] / med["gzip"], ratio_what="buildkit / docker"))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=IMAGE)
    parser.add_argument("--level", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "records" / "compression.json")
    parser.add_argument("--local", default=LOCAL, help="the row image in the daemon, for the push times")
    parser.add_argument("--push-runs", type=int, default=PUSH_RUNS)
    parser.add_argument("--push-only", action="store_true", help="only the build -> push times per format")
    args = parser.parse_args(argv)
    if args.push_only:
        record = push_formats(args.local, args.level, args.push_runs)
        print(json.dumps(record))
        return 0
    record = measure(args.image, args.level)
    record["push"] = push_formats(args.local, args.level, args.push_runs)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"zstd copy (publish) {record['zstd_publish_s']} s; record: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
