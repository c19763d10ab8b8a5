"""imagerun (an unpacked image run on a GPU host without docker), on this CPU machine: real mount and PID
namespaces, real mounts. The image is a small rootfs whose programs are this machine's /usr, bound read-only (no
image can be pulled here); the driver is a stand-in folder of empty files, since there is no GPU here.

Checked: it refuses a rootfs outside its work folder; it leaves no mount behind after success, failure or SIGTERM
(nor a process); the command sees the image's Env and not the host's; the driver files chosen by
NVIDIA_DRIVER_CAPABILITIES, and only those, are bound and registered; the overlay keeps the unpacked tree as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imagematrix.in_image import imagerun

RUNNER = Path(imagerun.__file__)
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"),
    reason="needs root with unshare and mount (the GPU host has both; so does CI's machine)")


@pytest.fixture
def image(tmp_path):
    """work/rootfs: a tiny image tree whose programs are this machine's (/usr bound at /host-usr, read-only), and
    its export manifest."""
    work = tmp_path / "work"
    root = work / "rootfs"
    for folder in ("proc", "sys", "dev", "etc/ld.so.conf.d", "tmp", "usr/bin", "root", "srv", "host-usr"):
        (root / folder).mkdir(parents=True)
    for link in ("bin", "lib", "lib64", "sbin"):
        (root / link).symlink_to(f"host-usr/{link}")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
    (root / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    manifest = work / "manifest.json"
    manifest.write_text(json.dumps({"config": {"Env": ["PATH=/usr/bin:/bin:/sbin", "IMAGE_ONLY=yes",
                                                       "NVIDIA_DRIVER_CAPABILITIES=compute,utility"],
                                               "WorkingDir": "/srv", "User": ""}}))
    driver = tmp_path / "driver"
    (driver / "lib64").mkdir(parents=True)
    (driver / "bin").mkdir()
    for name in ("libcuda.so.580.1", "libnvidia-ml.so.580.1", "libGLX_nvidia.so.0", "libnvidia-ptxjitcompiler.so.1"):
        (driver / "lib64" / name).write_bytes(b"")
    (driver / "lib64" / "libcuda.so.1").symlink_to("libcuda.so.580.1")
    (driver / "bin" / "nvidia-smi").write_text("#!/bin/sh\necho stand-in nvidia-smi\n")
    (driver / "bin" / "nvidia-smi").chmod(0o755)
    (driver / "bin" / "nvidia-xconfig").write_text("#!/bin/sh\n")
    return {"work": work, "root": root, "manifest": manifest, "driver": driver}


def _cmd(image, script: str, *extra: str) -> list[str]:
    return [sys.executable, str(RUNNER), "--work", str(image["work"]), "--rootfs", str(image["root"]),
            "--manifest", str(image["manifest"]), "--driver-root", str(image["driver"]), "--shm-mib", "64",
            "--bind", "/usr:/host-usr:ro", *extra, "--", "/bin/sh", "-c", script]


def _mounts_under(folder: Path) -> list[str]:
    return imagerun.mounts_under(str(folder))


def test_the_command_sees_the_image_and_nothing_of_the_hosts_environment(image):
    script = ("set -e; test \"$IMAGE_ONLY\" = yes; test -z \"$HOST_ONLY\"; test \"$(pwd)\" = /srv; "
              "test -c /dev/null; test -d /dev/shm; test -r /proc/1/status; "
              "test \"$(cat /proc/1/comm)\" != systemd; "  # PID 1 is the runner's own, in a new PID namespace
              "test -e /run/imagematrix-driver/lib/libcuda.so.580.1; test -L /run/imagematrix-driver/lib/libcuda.so.1; "
              "test -e /run/imagematrix-driver/lib/libnvidia-ml.so.580.1; "
              "test ! -e /run/imagematrix-driver/lib/libGLX_nvidia.so.0; "
              "test \"$(nvidia-smi)\" = 'stand-in nvidia-smi'; test ! -e /usr/bin/nvidia-xconfig; "
              "grep -qx /run/imagematrix-driver/lib /etc/ld.so.conf.d/000-imagematrix-driver.conf; "
              "echo written > /srv/written; ls /dev > /tmp/devs")
    proc = subprocess.run(_cmd(image, script), capture_output=True, text=True, env={**os.environ, "HOST_ONLY": "1"})
    assert proc.returncode == 0, proc.stderr
    assert _mounts_under(image["work"]) == []
    assert not (image["root"] / "srv" / "written").exists()  # the overlay's upper layer went with the run
    assert sorted(p.name for p in image["work"].iterdir()) == ["manifest.json", "rootfs"]


def test_a_driver_whose_lib_and_lib64_hold_the_same_names_starts(image):
    """The H100 host of 2026-12-07 lists libcuda.so.1 in both of its driver folders: the runner tried to create that
    link twice inside the image and stopped ("File exists") before the suite ran. The first one found stays."""
    (image["driver"] / "lib").symlink_to("lib64")
    script = ("set -e; test -L /run/imagematrix-driver/lib/libcuda.so.1; "
              "test -e /run/imagematrix-driver/lib/libcuda.so.580.1")
    proc = subprocess.run(_cmd(image, script), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert _mounts_under(image["work"]) == []


def test_a_failing_command_gives_its_status_and_leaves_no_mount(image):
    proc = subprocess.run(_cmd(image, "exit 3"), capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert _mounts_under(image["work"]) == []


def test_sigterm_ends_every_process_inside_and_leaves_no_mount(image):
    marker = f"imagerun-test-{os.getpid()}"
    # durations no other process on the machine sleeps (a plain `sleep 300` elsewhere once failed this test)
    first, second = f"300.{os.getpid()}", f"301.{os.getpid()}"
    runner = subprocess.Popen(_cmd(image, f"sleep {first} & sleep {second}; : {marker}"), stderr=subprocess.PIPE,
                              text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _mounts_under(image["work"]):
        time.sleep(0.1)  # the mounts are in the runner's own namespace: wait until it is up
        if subprocess.run(["pgrep", "-f", f"sleep {second}"], capture_output=True).returncode == 0:
            break
    time.sleep(0.5)
    runner.send_signal(signal.SIGTERM)
    status = runner.wait(timeout=30)
    assert status != 0
    assert _mounts_under(image["work"]) == []
    survivors = subprocess.run(["pgrep", "-f", f"sleep (300|301)\\.{os.getpid()}$"], capture_output=True)
    assert survivors.returncode == 1, "a process survived"


@pytest.mark.parametrize("where", ["outside", "work itself", "through a link"])
def test_a_rootfs_outside_the_work_folder_is_refused_before_any_mount(image, tmp_path, where):
    other = tmp_path / "elsewhere"
    other.mkdir()
    rootfs = {"outside": other, "work itself": image["work"], "through a link": image["work"] / "link"}[where]
    if where == "through a link":
        rootfs.symlink_to(other)
    cmd = _cmd(image, "exit 0")
    cmd[cmd.index("--rootfs") + 1] = str(rootfs)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "inside --work" in proc.stderr
    assert _mounts_under(tmp_path) == []


@pytest.mark.parametrize("bind, message", [("/usr:relative", "absolute path"), ("/usr:/a/../../b", "absolute path"),
                                           ("/no/such/dir:/x", "does not exist"), ("/usr:/x:rx", "SRC:DST")])
def test_a_bad_bind_is_refused(image, bind, message):
    proc = subprocess.run(_cmd(image, "exit 0", "--bind", bind), capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr


@pytest.mark.parametrize("config", [{"Env": "PATH=/bin"}, {"Env": ["no-equals"]}, {"WorkingDir": ["/srv"]},
                                    {"User": 0}, {"Env": ["BAD-NAME=1"]}])
def test_an_image_config_of_the_wrong_shape_is_refused_before_any_mount(image, config):
    image["manifest"].write_text(json.dumps({"config": config}))
    proc = subprocess.run(_cmd(image, "exit 0"), capture_output=True, text=True)
    assert proc.returncode == 2 and "bad input" in proc.stderr


@pytest.mark.parametrize("link", ["relative", "absolute"])
def test_an_image_link_never_leads_a_mount_point_out_of_the_image(image, tmp_path, link):
    """The image's /imagematrix and /etc/hosts are links that climb out of its tree: the runner's mount points and
    files land inside the tree, never on this host."""
    escaped = tmp_path / "escaped"
    target = ("../" * 20 + str(escaped).lstrip("/")) if link == "relative" else str(escaped)
    (image["root"] / "imagematrix").symlink_to(target)
    (image["root"] / "etc" / "hosts").symlink_to(f"{target}/hosts")
    proc = subprocess.run(_cmd(image, "test -d /imagematrix/gpu && test -r /etc/hosts", "--bind",
                               "/usr/lib:/imagematrix/gpu:ro"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not escaped.exists()
    assert _mounts_under(image["work"]) == [] and _mounts_under(tmp_path) == []
