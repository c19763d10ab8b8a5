"""Metric 11 (issue 30, item 7): lazy pulling (SOCI) beside full pulls of gzip and zstd, to the first command.

    python3 -m bench --only lazy

Everything runs on processes of the run's own, so one empty store per format is guaranteed and nothing of the
machine's own daemons changes: a registry (Debian's docker-registry) with TLS on the host's own non-loopback address
(soci 0.4.1 fetches its index over HTTPS only, and its layer reader speaks plain HTTP to a loopback name: a registry
on 127.0.0.1 serves neither, tools/soci.py), a containerd (1.6, the distribution's) with its own root and socket, and
soci-snapshotter-grpc (Debian trixie's 0.4.1) as its proxy snapshotter `soci`. The certificate is self-signed for
the run; the Go programs trust it through SSL_CERT_FILE (the system bundle plus it).

For the verl 0.3 row image (gzip layers, from the embedded registry):
1. the image is copied into the run's registry (skopeo, blobs as they are), and its zstd copy made there the way
   `promote --compression zstd` makes it (skopeo, level 3);
2. promote's SOCI step, timed: `imagematrix.tools.soci.index` (ctr content fetch, soci create, soci push);
3. per format, gzip, zstd, then SOCI (its background fetch would load a later pull), into an empty namespace: pull (gzip, zstd: `ctr images pull`, which unpacks with
   overlayfs; soci: `soci image rpull`, which mounts each layer lazily over FUSE), then `ctr run --rm` of
   `python -c 'import vllm, verl, torch'`; wall time of each; bytes = what the registry sent during the pull and
   the first command (its access log: http.response.written); the namespace is removed before the next format.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from imagematrix.tools import soci

from .common import OutcomeError, log
from .report import line

SOURCE = "127.0.0.1:5000/imagematrix/verl:verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
FIRST = ["/opt/venv/bin/python", "-c", "import vllm, verl, torch"]
SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _host_address() -> str:
    """The host's address on its default route (not loopback: see the module docstring)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route's source address
        return s.getsockname()[0]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None, timeout: float = 1800) -> float:
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise OutcomeError(f"{what}: exit {proc.returncode}: {(proc.stderr or proc.stdout)[-600:]}")
    return round(time.monotonic() - started, 1)


def _wait_socket(path: Path, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise OutcomeError(f"{what} did not start: no {path}")
        time.sleep(0.2)


class Stack:
    """The run's registry (TLS), containerd and SOCI snapshotter; stop() ends them and removes their files."""

    def __init__(self, work: Path) -> None:
        self.work, self.procs = work, []
        self.host = _host_address()
        self.port = _free_port(self.host)
        self.registry = f"{self.host}:{self.port}"
        self.sock = work / "containerd.sock"
        self.soci_sock = work / "soci.sock"
        self.reglog = work / "registry.log"
        ca = work / "ca"
        ca.mkdir(parents=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca / "key.pem"),
                        "-out", str(ca / "cert.pem"), "-subj", f"/CN={self.host}", "-addext",
                        f"subjectAltName=IP:{self.host}", "-days", "1"], check=True, capture_output=True)
        (ca / "bundle.pem").write_bytes(SYSTEM_CA.read_bytes() + (ca / "cert.pem").read_bytes())
        self.env = {**os.environ, "SSL_CERT_FILE": str(ca / "bundle.pem")}
        (work / "skopeo-certs").mkdir()
        shutil.copy(ca / "cert.pem", work / "skopeo-certs" / "ca.crt")
        (work / "registry.yml").write_text(
            f"version: 0.1\nlog:\n  level: info\n  formatter: json\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {work / 'registry'}\nhttp:\n  addr: {self.registry}\n  tls:\n"
            f"    certificate: {ca / 'cert.pem'}\n    key: {ca / 'key.pem'}\n")
        (work / "containerd.toml").write_text(
            f'version = 2\nroot = "{work / "ctd-root"}"\nstate = "{work / "ctd-state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.sock}"\n[ttrpc]\n  address = "{self.sock}.ttrpc"\n'
            f'[proxy_plugins]\n  [proxy_plugins.soci]\n    type = "snapshot"\n    address = "{self.soci_sock}"\n')
        (work / "soci.toml").write_text("")
        self._spawn(["docker-registry", "serve", str(work / "registry.yml")], self.reglog)
        self._spawn([shutil.which("soci-snapshotter-grpc") or "soci-snapshotter-grpc", "-address", str(self.soci_sock),
                     "-root", str(work / "soci-root"), "-config", str(work / "soci.toml")], work / "soci.log")
        _wait_socket(self.soci_sock, "soci-snapshotter-grpc")
        self._spawn(["containerd", "--config", str(work / "containerd.toml")], work / "containerd.log")
        _wait_socket(self.sock, "containerd")
        time.sleep(1)

    def _spawn(self, cmd: list[str], logfile: Path) -> None:
        self.procs.append(subprocess.Popen(cmd, stdout=logfile.open("ab"), stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True))

    def ctr(self, namespace: str) -> list[str]:
        return ["ctr", "--address", str(self.sock), "--namespace", namespace]

    def served_bytes(self) -> int:
        """Bytes the registry has sent so far (its access log)."""
        total = 0
        for text in self.reglog.read_text(errors="replace").splitlines():
            if '"http.response.written"' in text:
                try:
                    total += int(json.loads(text).get("http.response.written") or 0)
                except ValueError:
                    continue
        return total

    def drop(self, namespace: str) -> None:
        soci.forget(namespace, str(self.sock))
        c = self.ctr(namespace)
        for _ in range(20):  # snapshots: children first, retried until none is left
            names = [row.split()[0] for row in subprocess.run([*c, "snapshots", "--snapshotter", "soci", "ls"],
                                                              capture_output=True, text=True).stdout.splitlines()[1:]]
            names += [row.split()[0] for row in subprocess.run([*c, "snapshots", "ls"], capture_output=True,
                                                               text=True).stdout.splitlines()[1:]]
            if not names:
                break
            for name in names:
                for snapshotter in ("soci", "overlayfs"):
                    subprocess.run([*c, "snapshots", "--snapshotter", snapshotter, "rm", name], capture_output=True)
        subprocess.run(["ctr", "--address", str(self.sock), "namespaces", "rm", namespace], capture_output=True)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        mounts = [row.split()[1] for row in Path("/proc/mounts").read_text().splitlines()
                  if row.split()[1].startswith(str(self.work))]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)


def _first_pull(stack: Stack, kind: str, ref: str, nonce: str) -> dict[str, Any]:
    namespace = f"imagematrix-bench-{nonce}-{kind}"
    c = stack.ctr(namespace)
    before = stack.served_bytes()
    try:
        if kind == "soci":
            pull = _run([soci.require(), "--address", str(stack.sock), "--namespace", namespace, "image", "rpull",
                         ref], f"soci image rpull {ref}", stack.env)
            snapshotter = ["--snapshotter", "soci"]
        else:
            pull = _run([*c, "images", "pull", ref], f"ctr images pull {ref}", stack.env)
            snapshotter = []
        pulled = stack.served_bytes() - before
        first = _run([*c, "run", "--rm", *snapshotter, ref, f"bench-{nonce}-{kind}", *FIRST],
                     f"first command in {ref} ({kind})", stack.env)
        total = stack.served_bytes() - before
    finally:
        stack.drop(namespace)
    log(f"lazy bench: {kind}: pull {pull} s ({pulled / 1e9:.2f} GB), first command {first} s "
        f"({total / 1e9:.2f} GB by then)")
    return {"pull_s": pull, "first_command_s": first, "to_first_s": round(pull + first, 1), "pull_bytes": pulled,
            "bytes_by_first_command": total}


def measure(ctx, source: str = SOURCE) -> dict[str, Any]:
    if not soci.find() or not shutil.which("soci-snapshotter-grpc"):
        raise OutcomeError("soci and soci-snapshotter-grpc are not installed: `python3 build.py setup --soci`")
    work = ctx.work / "lazy"
    stack = Stack(work)
    nonce = ctx.nonce
    try:
        gzip_ref = f"{stack.registry}/bench/verl:gzip"
        zstd_ref = f"{stack.registry}/bench/verl:zstd"
        certs = str(work / "skopeo-certs")
        log(f"lazy bench: copying {source} into the run's registry ({stack.registry})")
        copy_s = _run(["skopeo", "copy", "--src-tls-verify=false", "--dest-cert-dir", certs, f"docker://{source}",
                       f"docker://{gzip_ref}"], "skopeo copy (gzip)")
        log("lazy bench: the zstd copy (skopeo, level 3, through an OCI layout as promote does)")
        layout = f"oci:{work / 'layout'}:image"
        zstd_s = _run(["skopeo", "copy", "--src-cert-dir", certs, "--dest-compress", "--dest-compress-format", "zstd",
                       "--dest-compress-level", "3", f"docker://{gzip_ref}", layout], "skopeo copy -> zstd layout")
        zstd_s += _run(["skopeo", "copy", "--dest-cert-dir", certs, layout, f"docker://{zstd_ref}"],
                       "skopeo copy zstd layout -> registry")
        shutil.rmtree(work / "layout")
        log("lazy bench: promote's SOCI step (ctr content fetch, soci create, soci push)")
        saved = os.environ.get("SSL_CERT_FILE")
        os.environ["SSL_CERT_FILE"] = stack.env["SSL_CERT_FILE"]
        try:
            started = time.monotonic()
            index = soci.index(gzip_ref, namespace=f"imagematrix-bench-{nonce}-index", address=str(stack.sock))
            index_s = round(time.monotonic() - started, 1)
            log(f"lazy bench: SOCI index {index[:19]} made and pushed in {index_s} s")
        finally:
            if saved is None:
                os.environ.pop("SSL_CERT_FILE", None)
            else:
                os.environ["SSL_CERT_FILE"] = saved
        stack.drop(f"imagematrix-bench-{nonce}-index")
        blobs = work / "registry" / "docker" / "registry" / "v2" / "blobs"
        manifest = json.loads(next(p for p in blobs.rglob("data") if p.parent.name == index[7:]).read_text())
        index_bytes = sum(layer["size"] for layer in manifest["layers"])
        results = {kind: _first_pull(stack, kind, ref, nonce)
                   for kind, ref in (("gzip", gzip_ref), ("zstd", zstd_ref), ("soci", gzip_ref))}
        log_text = (work / "soci.log").read_text(errors="replace").splitlines()
        lazy_mounts = sum(1 for text in log_text if "preparing filesystem mount" in text)
        local_layers = sum(1 for text in log_text if "preparing local filesystem" in text)
        # warnings are expected: layers under soci's minimum size have no zTOC and are pulled whole, and without
        # fusermount the snapshotter mounts FUSE directly
        errors = [text[:300] for text in log_text if '"level":"error"' in text or '"level":"fatal"' in text]
        if not lazy_mounts or errors or min(r["pull_bytes"] for r in results.values()) <= 0:
            raise OutcomeError(f"the SOCI pull did not mount layers lazily or the registry log counted nothing: "
                               f"{lazy_mounts} lazy mounts, errors {errors[:2]}, bytes "
                               f"{[r['pull_bytes'] for r in results.values()]}")
    finally:
        stack.stop()
    return {"source": source, "registry": "run's own, TLS on the host address", "copy_s": copy_s,
            "zstd_copy_s": zstd_s, "soci_index_s": index_s, "soci_index": index, "soci_ztoc_bytes": index_bytes,
            "soci_version": soci.version(), "soci_lazy_mounts": lazy_mounts,
            "soci_local_layers": local_layers, **results}


def lazy(ctx) -> dict[str, Any]:
    r = measure(ctx)
    s, g, z = r["soci"], r["gzip"], r["zstd"]
    return {
        "title": "Lazy pulling (SOCI) beside full pulls of gzip and zstd: to the first command",
        "method": ("On the run's own registry (TLS, the host's address), containerd 1.6 and soci-snapshotter-grpc "
                   "0.4.1 (Debian trixie): the verl 0.3 row's gzip image copied in, its zstd copy made (skopeo, "
                   "level 3), its SOCI index made and pushed by `imagematrix.tools.soci.index` (what `promote "
                   "--soci` runs: ctr content fetch, soci create, soci push); then per format, into an empty "
                   "containerd namespace, the pull (`soci image rpull` for SOCI: layers mounted lazily over FUSE; "
                   "`ctr images pull` for gzip and zstd: downloaded and unpacked) and `ctr run --rm` of `python -c "
                   "'import vllm, verl, torch'`, wall time each, one run each, in the order gzip, zstd, SOCI (SOCI "
                   "last: its snapshotter goes on fetching the rest of the layers in the background, which would "
                   "load the later pulls); bytes = what the registry sent (its access log). bench/lazy.py's "
                   "docstring has the details."),
        "notes": [f"raw: {json.dumps(r)}",
                  "eStargz is not measured: Debian packages its converter (ctr-remote, stargz-snapshotter 0.12 in "
                  "bookworm, 0.14 in trixie) but not its snapshotter containerd-stargz-grpc; Docker Hub and GitHub "
                  "releases are unreachable here",
                  "the SOCI snapshotter keeps fetching the rest of each layer in the background after the first "
                  "command; the bytes are those fetched by the time the first command ended"],
        "lines": [
            line("pull, empty store: SOCI (lazy) vs gzip", s["pull_s"], "s", ours_note="soci rpull, 1 run",
                 ref=g["pull_s"], ref_what="gzip, ctr pull + unpack", ratio=s["pull_s"] / g["pull_s"],
                 ratio_what="soci / gzip"),
            line("pull + first `import vllm, verl, torch`: SOCI vs gzip", s["to_first_s"], "s",
                 ref=g["to_first_s"], ref_what="gzip", ratio=s["to_first_s"] / g["to_first_s"],
                 ratio_what="soci / gzip"),
            line("… SOCI vs zstd", s["to_first_s"], "s", ref=z["to_first_s"], ref_what="zstd",
                 ratio=s["to_first_s"] / z["to_first_s"], ratio_what="soci / zstd"),
            line("… zstd vs gzip (same run)", z["to_first_s"], "s", ref=g["to_first_s"], ref_what="gzip",
                 ratio=z["to_first_s"] / g["to_first_s"], ratio_what="zstd / gzip"),
            line("first command alone: SOCI vs gzip", s["first_command_s"], "s", ref=g["first_command_s"],
                 ref_what="gzip, layers local", ratio=s["first_command_s"] / g["first_command_s"],
                 ratio_what="soci / gzip"),
            line("bytes sent by the registry until the first command ended", s["bytes_by_first_command"], "B",
                 ours_note="soci", ref=g["bytes_by_first_command"], ref_what="gzip",
                 ratio=s["bytes_by_first_command"] / g["bytes_by_first_command"], ratio_what="soci / gzip"),
            line("promote --soci: index made and pushed", r["soci_index_s"], "s",
                 ours_note=f"zTOCs {r['soci_ztoc_bytes'] / 1e6:.0f} MB"),
        ],
        "details": r,
    }
