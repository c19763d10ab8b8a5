"""Set up the build machine: Docker daemon, BuildKit (buildx), the embedded registry, debootstrap, skopeo, cosign,
and emulation of linux/arm64 on an amd64 host (qemu-user >= 10 from Debian trixie, registered with binfmt_misc) for multi-arch rows.

Each step uses what is already there and installs only what is missing (Debian packages; buildx from Debian
trixie's docker-buildx package when the CLI has no buildx plugin). Used by `build.py setup` and `.ci/run`.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from imagematrix.model import tags
from imagematrix.model.errors import RuntimeFailure
from imagematrix.model.paths import cache_dir
from imagematrix.tools import cosign, docker, http, soci

REGISTRY = tags.EMBEDDED_REGISTRY


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def _apt_install(*packages: str, log) -> None:
    missing = [p for p in packages if _run(["dpkg-query", "-W", "-f=${Status}", p]).stdout != "install ok installed"]
    if not missing:
        return
    log(f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = _run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env)
    if proc.returncode != 0:
        update = _run(["apt-get", "update"], env=env)
        proc = _run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env)
        if proc.returncode != 0:
            raise RuntimeFailure(f"apt-get install {' '.join(missing)} failed:\n{update.stderr[-800:]}{proc.stderr[-1500:]}")


def _wait(check, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise RuntimeFailure(f"{what} did not come up within {seconds:.0f} s")


def _spawn(cmd: list[str], log_path: Path) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def ensure_daemon(log) -> None:
    if docker.daemon_running():
        return
    _apt_install("docker.io", log=log)
    log("starting dockerd")
    _spawn(["dockerd"], cache_dir() / "dockerd.log")
    _wait(docker.daemon_running, "dockerd", 90)


def _from_trixie(package: str, member: str, dest: Path) -> None:
    """Copy one file (member, a path inside the package) of Debian trixie's package to dest, without installing
    the package (its dependencies are bookworm's or none: buildx and cosign are static Go programs)."""
    with tempfile.TemporaryDirectory(prefix=f"imagematrix-{package}-") as tmp:
        t = Path(tmp)
        (t / "lists" / "partial").mkdir(parents=True)
        (t / "cache" / "archives" / "partial").mkdir(parents=True)
        (t / "sources.list").write_text("deb http://deb.debian.org/debian trixie main\n")
        opts = [f"-o=Dir::Etc::SourceList={t / 'sources.list'}", "-o=Dir::Etc::SourceParts=/dev/null",
                f"-o=Dir::State::Lists={t / 'lists'}", f"-o=Dir::Cache={t / 'cache'}"]
        for cmd in (["apt-get", *opts, "update"], ["apt-get", *opts, "download", package]):
            proc = _run(cmd, cwd=t)
            if proc.returncode != 0:
                raise RuntimeFailure(f"{' '.join(cmd[:1] + cmd[-2:])} failed:\n{proc.stderr[-1500:]}")
        deb = next(t.glob(f"{package}_*.deb"))
        proc = _run(["dpkg-deb", "-x", str(deb), str(t / "x")])
        if proc.returncode != 0:
            raise RuntimeFailure(f"dpkg-deb -x {deb.name} failed: {proc.stderr}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(t / "x" / member, dest)
        dest.chmod(0o755)


def ensure_buildx(log) -> None:
    cli = docker.cli()
    if docker.has_buildx(cli):
        return
    plugin_dir = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "cli-plugins"
    log("installing buildx from Debian trixie's docker-buildx package")
    _from_trixie("docker-buildx", "usr/libexec/docker/cli-plugins/docker-buildx", plugin_dir / "docker-buildx")
    docker.forget()  # the answers before the install are stale now
    if not docker.has_buildx(docker.cli()):
        raise RuntimeFailure(f"buildx installed in {plugin_dir}, but `docker buildx version` still fails")


def registry_up(address: str = REGISTRY) -> bool:
    try:
        return http.fetch(http.request(f"http://{address}/v2/"), limit=http.MANIFEST_LIMIT,
                          deadline=http.PROBE_DEADLINE).status == 200
    except (OSError, ValueError, http.Refused):
        return False


def _listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


def ensure_registry(log, address: str = REGISTRY) -> None:
    """Start Debian's docker-registry on address, storage in the user cache, unless something listens there."""
    if registry_up(address):
        return
    if _listening(address):
        raise RuntimeFailure(f"{address} is taken by something that is not a registry: free the port or pass --registry")
    _apt_install("docker-registry", log=log)
    root = cache_dir() / "registry"
    (root / "storage").mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}\n"
    )
    log(f"starting the embedded registry on {address} (storage {root / 'storage'})")
    _spawn(["docker-registry", "serve", str(config)], root / "registry.log")
    _wait(lambda: registry_up(address), f"registry on {address}", 30)


def ensure_debootstrap(log) -> None:
    if not shutil.which("debootstrap"):
        _apt_install("debootstrap", log=log)


def ensure_skopeo(log) -> None:
    """skopeo (bookworm's package) recompresses layers as zstd for `promote --compression zstd|both`."""
    if not shutil.which("skopeo"):
        _apt_install("skopeo", log=log)


def ensure_cosign(log) -> None:
    if cosign.find():
        return
    log("installing cosign from Debian trixie's cosign package")
    _from_trixie("cosign", "usr/bin/cosign", cosign.INSTALL_DIR / "cosign")
    if not cosign.find():
        raise RuntimeFailure(f"cosign installed in {cosign.INSTALL_DIR}, which is not on PATH")


BINFMT = Path("/proc/sys/fs/binfmt_misc")
# The emulator: Debian trixie's qemu-user (static binaries, 10.0), copied here without installing the package.
# Bookworm's qemu-user-static 7.2 ran torch 2.11's aarch64 wheel but not torch 2.13's: `import torch` died with
# SIGSEGV inside qemu after oneDNN's CPU probe ("Can't open MIDR_EL1 sysfs entry"), in the build of the vLLM 0.31
# row's arm64 image (2026-12-07); 10.0 runs it. An older registered interpreter is replaced by setup.
QEMU_DIR = Path("/usr/local/libexec/imagematrix")
MIN_QEMU = (10, 0)
QEMU_VERSION_RE = re.compile(r"qemu-[a-z0-9_]+ version (\d+)\.(\d+)(?:\.\d+)?(?: .*)?")
# platform -> (binfmt_misc entry, the ELF header it matches and the mask: qemu's own registration for aarch64
# binaries, as Debian's qemu-user-binfmt writes it). Flags: P keeps argv[0]; O opens the binary; F opens the
# interpreter at registration, so it also runs inside build containers and chroots, which do not see QEMU_DIR.
EMULATED = {"linux/arm64": ("qemu-aarch64",
                            r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
                            r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff")}


def native_platform() -> str:
    """This machine's platform as docker names it: linux/amd64 or linux/arm64."""
    machine = os.uname().machine
    return {"x86_64": "linux/amd64", "aarch64": "linux/arm64", "arm64": "linux/arm64"}.get(machine, f"linux/{machine}")


def qemu_version(interpreter: str) -> tuple[int, int] | None:
    """(major, minor) of a qemu-user interpreter (`<interpreter> --version`), None when it does not answer so."""
    try:
        proc = subprocess.run([interpreter, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    match = QEMU_VERSION_RE.fullmatch(proc.stdout.splitlines()[0].strip()) if proc.stdout.strip() else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def emulation_missing(platform: str, binfmt: Path = BINFMT) -> str | None:
    """None when this machine runs platform's binaries (natively, or qemu >= MIN_QEMU registered with binfmt_misc,
    enabled and with the F flag), else why not, with the fix."""
    if platform == native_platform():
        return None
    if platform not in EMULATED:
        return f"this machine ({native_platform()}) cannot emulate {platform}"
    path = binfmt / EMULATED[platform][0]
    fix = "  fix: run `python build.py setup` as root (it installs Debian trixie's qemu-user and registers it)"
    try:
        text = path.read_text()
    except OSError:
        return f"{platform} is not emulated here: no {path} (qemu not registered with binfmt_misc)\n{fix}"
    fields = dict(line.split(" ", 1) for line in text.splitlines()[1:] if " " in line)
    flags = fields.get("flags:", "").strip()
    if not text.startswith("enabled") or "F" not in flags:
        return (f"{platform}: {path} is {'disabled' if not text.startswith('enabled') else 'registered without the F flag'}"
                " (BuildKit's build containers cannot reach the interpreter then)\n"
                f"  fix: `echo -1 > {path}` as root, then `python build.py setup`")
    interpreter = fields.get("interpreter", "").strip()
    version = qemu_version(interpreter)
    if version is None or version < MIN_QEMU:
        found = f"qemu {version[0]}.{version[1]}" if version else "an interpreter that gives no qemu version"
        return (f"{platform}: {path} runs {found} ({interpreter}); images need qemu >= {MIN_QEMU[0]}.{MIN_QEMU[1]} "
                f"(qemu 7.2 crashes `import torch` 2.13 on aarch64)\n{fix}")
    return None


def ensure_emulation(log, platforms: tuple[str, ...] = tuple(EMULATED), binfmt: Path = BINFMT) -> None:
    """Register qemu >= MIN_QEMU for each foreign platform (Debian trixie's qemu-user; binfmt_misc mounted when it
    is not), replacing an older or broken registration of the same entry."""
    wanted = {p: problem for p in platforms if (problem := emulation_missing(p, binfmt))}
    if not wanted:
        return
    if not (binfmt / "register").exists():
        log(f"mounting binfmt_misc on {binfmt}")
        proc = _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)])
        if proc.returncode != 0:
            raise RuntimeFailure(f"mount -t binfmt_misc failed: {proc.stderr.strip()[-400:]}\n"
                                 "  fix: run as root on a host (or a privileged container) whose kernel has binfmt_misc")
    for platform, why in wanted.items():
        entry, magic, mask = EMULATED[platform]
        interpreter = QEMU_DIR / entry
        if (qemu_version(str(interpreter)) or (0, 0)) < MIN_QEMU:
            log(f"installing {entry} from Debian trixie's qemu-user package (emulates {platform})")
            _from_trixie("qemu-user", f"usr/bin/{entry}", interpreter)
        if (binfmt / entry).exists():
            log(f"replacing the binfmt_misc entry {entry}: {why.splitlines()[0]}")
            (binfmt / entry).write_text("-1\n")
        log(f"registering {interpreter} with binfmt_misc (emulates {platform})")
        (binfmt / "register").write_text(f":{entry}:M::{magic}:{mask}:{interpreter}:POF\n")
        problem = emulation_missing(platform, binfmt)
        if problem:
            raise RuntimeFailure(problem)


def ensure_soci(log) -> None:
    """soci (SOCI indexes, `promote --soci`) and soci-snapshotter-grpc (the client side: lazy pulls, the bench), from
    Debian trixie's soci-snapshotter package (0.4.1, static Go programs); bookworm has none."""
    if soci.find() and shutil.which("soci-snapshotter-grpc"):
        return
    log("installing soci and soci-snapshotter-grpc from Debian trixie's soci-snapshotter package")
    for name in ("soci", "soci-snapshotter-grpc"):
        _from_trixie("soci-snapshotter", f"usr/bin/{name}", soci.INSTALL_DIR / name)
    if not soci.find():
        raise RuntimeFailure(f"soci installed in {soci.INSTALL_DIR}, which is not on PATH")


def setup(log) -> None:
    ensure_daemon(log)
    ensure_buildx(log)
    ensure_registry(log)
    ensure_debootstrap(log)
    ensure_skopeo(log)
    ensure_cosign(log)
    if native_platform() == "linux/amd64":
        try:
            ensure_emulation(log)
        except RuntimeFailure as exc:  # a machine that cannot emulate still builds every amd64 image
            log(f"warning: no linux/arm64 emulation here, so no arm64 image of a multi-arch row can be built: "
                f"{str(exc).splitlines()[0]}")
