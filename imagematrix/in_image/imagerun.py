"""Run a command inside an unpacked image on this host, with its GPUs, the way the NVIDIA container runtime does.

    python3 imagerun.py --work WORK --rootfs WORK/rootfs --manifest manifest.json \\
        [--bind SRC:DST[:ro]] [--env NAME=VALUE] [--workdir DIR] [--shm-mib N] [--driver-root /usr/local/nvidia] -- CMD [ARG...]

What the command sees: the image's filesystem (through an overlay whose upper layer is thrown away afterwards, as a
container's writable layer is; the unpacked tree directly where overlayfs is missing), /proc of a new PID namespace,
/sys read-only, a /dev of its own holding only the standard nodes and the host's NVIDIA device nodes, /dev/shm of
--shm-mib, the host's /etc/hosts, /etc/hostname and /etc/resolv.conf (the host's network: no network namespace),
the driver libraries and binaries that the image's NVIDIA_DRIVER_CAPABILITIES asks for (bound read-only under
/run/imagematrix-driver and registered with the image's own ldconfig), the image's Env, WorkingDir and User, and
nothing else of the host: not its Python, not its site-packages. There are no cgroups.

Every mount lives in a mount namespace of its own, whose first process is PID 1 of a PID namespace of its own:
when the command ends, fails or the runner is killed (SIGTERM, SIGINT, SIGHUP), every process inside is killed and
every mount goes with the namespace; the runner then checks that no mount under WORK is left in its own namespace.
Standard library only, with util-linux's `unshare` and `mount`. Exit: the command's status; 2 for bad input;
125 when the image cannot be started (docker's convention).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

try:  # as part of the project (tests) or as a script beside imagefs.py on the GPU host
    from imagematrix.in_image.imagefs import Failed, resolve
except ImportError:  # pragma: no cover - the GPU host runs `python3 imagerun.py` from its folder
    from imagefs import Failed, resolve

DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
NVIDIA_NODES = re.compile(r"nvidia(\d+|ctl|-uvm|-uvm-tools|-modeset)")
# What libnvidia-container mounts per capability (its `nvc_info` lists), by library and binary name.
CAPABILITY_LIBS = {
    "utility": ("libnvidia-ml.so", "libnvidia-cfg.so"),
    "compute": ("libcuda.so", "libcudadebugger.so", "libnvidia-opencl.so", "libnvidia-gpucomp.so",
                "libnvidia-ptxjitcompiler.so", "libnvidia-fatbinaryloader.so", "libnvidia-allocator.so",
                "libnvidia-compiler.so", "libnvidia-pkcs11.so", "libnvidia-pkcs11-openssl3.so",
                "libnvidia-nvvm.so"),
}
CAPABILITY_BINS = {
    "utility": ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced"),
    "compute": ("nvidia-cuda-mps-control", "nvidia-cuda-mps-server"),
}
DRIVER_MOUNT = "/run/imagematrix-driver"
LDCONF = "/etc/ld.so.conf.d/000-imagematrix-driver.conf"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
GRACE_S = 10  # after a signal, how long the command may take to stop before everything inside is killed


class BadInput(Exception):
    pass


# ---- what to run: checked on the outside, before any mount -------------------------------------------------------

def inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path != folder and os.path.commonpath([path, folder]) == folder


def image_path(dst: str) -> str:
    parts = [p for p in dst.split("/") if p not in ("", ".")]
    if not dst.startswith("/") or not parts or ".." in parts or "\0" in dst:
        raise BadInput(f"{dst!r} is not an absolute path inside the image")
    return "/" + "/".join(parts)


def plan(args) -> dict:
    """Everything the inner process does, as JSON-able data; BadInput names the flag at fault."""
    work = os.path.realpath(args.work)
    if not os.path.isdir(work) or work == "/":
        raise BadInput(f"--work {args.work}: not a folder (and never /)")
    if not inside(args.rootfs, work) or not os.path.isdir(args.rootfs):
        raise BadInput(f"--rootfs {args.rootfs}: must be an existing folder inside --work {args.work}")
    with open(args.manifest, "rb") as fh:
        manifest = json.loads(fh.read(16 << 20))
    config = manifest.get("config") if isinstance(manifest, dict) else None
    if not isinstance(config, dict):
        raise BadInput(f"--manifest {args.manifest}: no image config")
    for key in ("WorkingDir", "User"):
        value = config.get(key)
        if value is not None and (not isinstance(value, str) or "\0" in value):
            raise BadInput(f"--manifest {args.manifest}: config.{key} is not a string")
    if not isinstance(config.get("Env", []), list):
        raise BadInput(f"--manifest {args.manifest}: config.Env is not a list")
    env = {}
    for item in list(config.get("Env") or []) + list(args.env):
        name, eq, value = str(item).partition("=")
        if not eq or not NAME.fullmatch(name) or "\0" in value:
            raise BadInput(f"environment entry {item!r} is not NAME=value")
        env[name] = value
    binds = []
    for spec in args.bind:
        fields = spec.split(":")
        if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] not in ("ro", "rw")):
            raise BadInput(f"--bind {spec!r}: expected SRC:DST[:ro|rw]")
        if not os.path.exists(fields[0]):
            raise BadInput(f"--bind {spec!r}: {fields[0]} does not exist")
        binds.append({"src": os.path.realpath(fields[0]), "dst": image_path(fields[1]),
                      "ro": len(fields) == 3 and fields[2] == "ro"})
    if not args.command:
        raise BadInput("no command: give it after --")
    caps = [c.strip() for c in env.get("NVIDIA_DRIVER_CAPABILITIES", "utility,compute").split(",") if c.strip()]
    if "all" in caps:
        caps = sorted(CAPABILITY_LIBS)
    return {"work": work, "rootfs": os.path.realpath(args.rootfs), "env": env, "binds": binds,
            "workdir": args.workdir or config.get("WorkingDir") or "/", "user": config.get("User") or "",
            "shm": f"{int(args.shm_mib)}m", "driver": driver_files(args.driver_root, caps),
            "overlay": not args.no_overlay, "command": args.command, "pid": os.getpid()}


def driver_files(root: str, caps: list[str]) -> dict:
    """The driver's libraries and binaries under `root` that `caps` ask for: {"lib": [...], "bin": [...]}."""
    libs = tuple(name for cap in caps for name in CAPABILITY_LIBS.get(cap, ()))
    bins = {name for cap in caps for name in CAPABILITY_BINS.get(cap, ())}
    found = {"lib": [], "bin": []}
    for sub in ("lib64", "lib"):
        folder = os.path.join(root, sub)
        if os.path.isdir(folder):
            found["lib"] += sorted(os.path.join(folder, n) for n in os.listdir(folder)
                                   if any(n == lib or n.startswith(lib + ".") for lib in libs))
    folder = os.path.join(root, "bin")
    if os.path.isdir(folder):
        found["bin"] = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n in bins)
    return found


# ---- inside the new namespaces ------------------------------------------------------------------------------------

def at(root: str, path: str) -> str:
    """`path` of the image as a path of this host under `root`, every symlink on the way followed as if `root` were /
    (an image's link never leads a mount point or a written file out of its tree): imagefs.resolve."""
    try:
        return resolve(root, path)
    except Failed as exc:
        raise RuntimeError(str(exc)) from None


def sh(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")


def mountpoint(path: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            open(path, "a").close()


def bind(src: str, dst: str, ro: bool = False) -> None:
    mountpoint(dst, os.path.isdir(src))
    sh("mount", "--rbind" if os.path.isdir(src) else "--bind", src, dst)
    if ro:
        sh("mount", "-o", "remount,bind,ro", dst)


def root_of(spec: dict) -> str:
    merged = os.path.join(spec["work"], f"merged-{spec['pid']}")
    os.makedirs(merged, exist_ok=True)
    if spec["overlay"]:
        upper = os.path.join(spec["work"], f"upper-{spec['pid']}")
        os.makedirs(os.path.join(upper, "diff"), exist_ok=True)
        os.makedirs(os.path.join(upper, "work"), exist_ok=True)
        try:
            sh("mount", "-t", "overlay", "overlay", "-o",
               f"lowerdir={spec['rootfs']},upperdir={upper}/diff,workdir={upper}/work", merged)
            return merged
        except RuntimeError as exc:
            print(f"imagerun: no overlay ({exc}); the command writes into the unpacked tree", file=sys.stderr)
    sh("mount", "--bind", spec["rootfs"], merged)
    return merged


def setup_dev(root: str, shm: str) -> None:
    dev = at(root, "/dev")
    os.makedirs(dev, exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", "nosuid,mode=755,size=65536k", "tmpfs", dev)
    for name in DEV_NODES + tuple(n for n in sorted(os.listdir("/dev")) if NVIDIA_NODES.fullmatch(n)):
        if os.path.exists(f"/dev/{name}"):
            bind(f"/dev/{name}", f"{dev}/{name}")
    if os.path.isdir("/dev/nvidia-caps"):
        bind("/dev/nvidia-caps", f"{dev}/nvidia-caps")
    os.makedirs(f"{dev}/pts")
    sh("mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=620", "devpts", f"{dev}/pts")
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    os.makedirs(f"{dev}/shm")
    sh("mount", "-t", "tmpfs", "-o", f"nosuid,nodev,mode=1777,size={shm}", "shm", f"{dev}/shm")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")


def setup_driver(root: str, driver: dict) -> list[str]:
    """Bind the driver's files read-only under DRIVER_MOUNT, register its lib folder with the image's loader."""
    base = at(root, DRIVER_MOUNT)
    os.makedirs(base, exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", "mode=755,size=1024k", "tmpfs", base)
    os.makedirs(f"{base}/lib")
    os.makedirs(f"{base}/bin")
    for kind in ("lib", "bin"):
        for path in driver[kind]:
            dst = f"{base}/{kind}/{os.path.basename(path)}"
            if os.path.lexists(dst):  # the same name in lib64 and lib (one a link to the other on the H100 host): the first stays
                continue
            target = os.readlink(path) if os.path.islink(path) else ""
            if target and "/" not in target:  # libcuda.so.1 -> libcuda.so.580.x beside it: the same link inside
                os.symlink(target, dst)
            elif os.path.exists(path):  # a file, or a link elsewhere on the host: the file it names
                bind(os.path.realpath(path), dst, ro=True)
    bins = []
    for path in driver["bin"]:  # where the NVIDIA runtime puts them: /usr/bin
        bind(path, at(root, f"/usr/bin/{os.path.basename(path)}"), ro=True)
        bins.append(os.path.basename(path))
    conf = at(root, LDCONF)
    os.makedirs(os.path.dirname(conf), exist_ok=True)
    if os.path.lexists(conf):
        os.unlink(conf)
    with open(conf, "w") as fh:
        fh.write(f"{DRIVER_MOUNT}/lib\n")
    return bins


def image_user(root: str, user: str) -> tuple[int, int]:
    if not user:
        return 0, 0
    name, _, group = user.partition(":")
    uid = gid = None
    if name.isdigit():
        uid = int(name)
    with open(at(root, "/etc/passwd"), encoding="utf-8", errors="replace") as fh:
        for line in fh:
            f = line.split(":")
            if len(f) > 3 and (f[0] == name or (uid is not None and f[2] == name)):
                uid, gid = int(f[2]), int(f[3])
    if uid is None:
        raise RuntimeError(f"the image's User {user!r} is not in its /etc/passwd")
    if group:
        gid = int(group) if group.isdigit() else gid
    return uid, gid if gid is not None else uid


def inner(spec: dict) -> int:
    """PID 1 of the new PID namespace, in a private mount namespace: mount, then run the command as a child."""
    root = root_of(spec)
    os.makedirs(at(root, "/proc"), exist_ok=True)
    os.makedirs(at(root, "/sys"), exist_ok=True)
    sh("mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", at(root, "/proc"))
    try:
        sh("mount", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", at(root, "/sys"))
    except RuntimeError:
        bind("/sys", at(root, "/sys"), ro=True)
    setup_dev(root, spec["shm"])
    for name in ("hosts", "hostname", "resolv.conf"):
        if os.path.isfile(f"/etc/{name}"):
            bind(f"/etc/{name}", at(root, f"/etc/{name}"), ro=True)
    for b in spec["binds"]:
        bind(b["src"], at(root, b["dst"]), ro=b["ro"])
    setup_driver(root, spec["driver"])  # after the binds, as the NVIDIA runtime's hook comes after the mounts
    uid, gid = image_user(root, spec["user"])
    ldconfig = next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(at(root, p))), None)
    if ldconfig:
        subprocess.run(["chroot", root, ldconfig], check=False)
    env = spec["env"]
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.setdefault("HOSTNAME", os.uname().nodename)
    env.setdefault("HOME", "/root" if uid == 0 else "/")
    child = os.fork()
    if child == 0:
        try:
            os.chroot(root)
            os.chdir(spec["workdir"])
            if uid or gid:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
            os.execvpe(spec["command"][0], spec["command"], env)
        except OSError as exc:
            print(f"imagerun: cannot start {spec['command'][0]!r} in the image: {exc}", file=sys.stderr)
        os._exit(127)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda s, _f: os.kill(child, s))
    status = 0
    while True:  # as PID 1: reap every orphan until the command itself ends
        try:
            pid, wstatus = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == child:
            status = os.waitstatus_to_exitcode(wstatus)
            break
    return status if status >= 0 else 128 - status


# ---- the outside ----------------------------------------------------------------------------------------------

def mounts_under(folder: str) -> list[str]:
    folder = os.path.realpath(folder)
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == folder or point.startswith(folder + "/"):
                found.append(point)
    return found


def outer(spec: dict, spec_path: str) -> int:
    cmd = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private",
           sys.executable, os.path.abspath(__file__), "--inner", spec_path]
    proc = subprocess.Popen(cmd, start_new_session=True)

    signalled: list[float] = []

    def forward(signum, _frame):  # to the namespace's PID 1, which passes it on to the command
        signalled.append(time.monotonic())
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        while True:
            try:
                status = proc.wait(timeout=1)
                break
            except subprocess.TimeoutExpired:
                if signalled and time.monotonic() - signalled[0] > GRACE_S:  # it would not stop: end them all
                    os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        left = mounts_under(spec["work"])
        for point in reversed(left):
            subprocess.run(["umount", "-l", point], check=False)
        for name in (f"merged-{spec['pid']}", f"upper-{spec['pid']}"):
            shutil.rmtree(os.path.join(spec["work"], name), ignore_errors=True)
        os.unlink(spec_path)
        if left:
            print(f"imagerun: {len(left)} mount(s) were left under {spec['work']} and were unmounted",
                  file=sys.stderr)
            status = status or 125
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--inner"]:
        with open(argv[1]) as fh:
            spec = json.load(fh)
        try:
            return inner(spec)
        except (RuntimeError, OSError) as exc:
            print(f"imagerun: cannot start the image: {exc}", file=sys.stderr)
            return 125
    parser = argparse.ArgumentParser(prog="imagerun.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="the work folder: the rootfs and every mount are inside it")
    parser.add_argument("--rootfs", required=True, help="the unpacked image (imagefs.py unpack)")
    parser.add_argument("--manifest", required=True, help="the export manifest: the image's Env, WorkingDir, User")
    parser.add_argument("--bind", action="append", default=[], metavar="SRC:DST[:ro]")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--workdir", default=None, help="instead of the image's WorkingDir (docker run -w)")
    parser.add_argument("--shm-mib", type=int, default=16384, help="size of /dev/shm (default 16 GiB, as the "
                        "docker route's --shm-size 16g)")
    parser.add_argument("--driver-root", default="/usr/local/nvidia", help="where the host's driver files are")
    parser.add_argument("--no-overlay", action="store_true", help="write into the unpacked tree")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        if args.shm_mib < 64:
            raise BadInput("--shm-mib must be at least 64")
        spec = plan(args)
    except (BadInput, OSError, ValueError) as exc:
        print(f"imagerun: bad input: {exc}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("imagerun: needs root (mount, chroot)", file=sys.stderr)
        return 125
    spec_path = os.path.join(spec["work"], f".imagerun-{spec['pid']}.json")
    with open(spec_path, "w") as fh:
        json.dump(spec, fh)
    return outer(spec, spec_path)


if __name__ == "__main__":
    sys.exit(main())
