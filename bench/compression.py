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


def measure(image: str = IMAGE, level: int = 3) -> dict:
    """The raw figures of one run (see the module docstring)."""
    nonce = secrets.token_hex(4)
    host = image.split("/", 1)[0]
    zstd_ref = f"{host}/imagematrix-bench-{nonce}/verl:zstd{level}"
    record: dict = {"image": image, "level": level, "runs": 1}
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


def _push_once(kind: str, image: str, level: int, work: Path) -> tuple[float, int]:
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
        if kind == "gzip":
            subprocess.run(["docker", "tag", image, target], check=True, capture_output=True)
            cmd = ["docker", "push", target]
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
        if kind == "gzip":
            subprocess.run(["docker", "rmi", target], capture_output=True)
        shutil.rmtree(storage, ignore_errors=True)
        config.unlink(missing_ok=True)


def push_formats(image: str = LOCAL, level: int = 3, runs: int = PUSH_RUNS) -> dict:
    """Build -> push wall time and bytes per format (module docstring), `runs` of each, gzip and zstd alternating."""
    samples: dict[str, list[float]] = {"gzip": [], "zstd": []}
    stored: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-push-", dir=ROOT / "bench") as work:
        for index in range(runs):
            for kind in ("gzip", "zstd"):
                seconds, stored[kind] = _push_once(kind, image, level, Path(work) / str(index))
                samples[kind].append(seconds)
                print(f"push {kind} run {index + 1}/{runs}: {seconds} s, {stored[kind] / 1e9:.2f} GB", flush=True)
    return {"image": image, "level": level, "runs": runs, "samples_s": samples,
            "median_s": {kind: median(v) for kind, v in samples.items()}, "bytes": stored}


def compression(ctx) -> dict:
    """Metric 10, in the shape of the other measures (bench/__main__.py: --only compression)."""
    r = measure()
    gz, zs = r["gzip"], r["zstd"]
    p = push_formats(runs=min(ctx.runs, PUSH_RUNS))
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
                   f"{n} runs of each, alternating."),
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
        ],
        "details": r,
    }


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
