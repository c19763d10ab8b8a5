"""setup's emulation of linux/arm64 (issue 29): what counts as registered, and the registration it writes."""

from __future__ import annotations

import pytest

from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import host

ENTRY = "enabled\ninterpreter {interpreter}\nflags: {flags}\noffset 0\n"
OURS = str(host.QEMU_DIR / "qemu-aarch64")
DEBIAN_BOOKWORM = "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"


@pytest.fixture
def amd64(monkeypatch):
    monkeypatch.setattr(host, "native_platform", lambda: "linux/amd64")


@pytest.fixture
def versions(monkeypatch):
    """qemu_version without running anything: interpreter path -> (major, minor); bookworm's is 7.2."""
    known = {OURS: (10, 0), DEBIAN_BOOKWORM: (7, 2)}
    monkeypatch.setattr(host, "qemu_version", lambda interpreter: known.get(interpreter))
    return known


def test_the_native_platform_needs_no_emulation(monkeypatch, tmp_path):
    monkeypatch.setattr(host, "native_platform", lambda: "linux/arm64")
    assert host.emulation_missing("linux/arm64", tmp_path) is None


@pytest.mark.parametrize(("entry", "expected"), [
    (None, "not registered with binfmt_misc"),
    (ENTRY.format(interpreter=OURS, flags="POF"), None),
    (ENTRY.format(interpreter=OURS, flags="P"), "without the F flag"),
    (ENTRY.format(interpreter=OURS, flags="POF").replace("enabled", "disabled"), "is disabled"),
    # bookworm's qemu-user-static 7.2 crashed `import torch` 2.13 in the vLLM 0.31 row's arm64 build
    (ENTRY.format(interpreter=DEBIAN_BOOKWORM, flags="OPF"), "runs qemu 7.2"),
    (ENTRY.format(interpreter="/bin/true", flags="OPF"), "gives no qemu version"),
])
def test_emulation_counts_only_an_enabled_entry_with_the_f_flag_and_qemu_10(amd64, versions, tmp_path, entry, expected):
    if entry is not None:
        (tmp_path / "qemu-aarch64").write_text(entry)
    problem = host.emulation_missing("linux/arm64", tmp_path)
    assert (problem is None) if expected is None else (expected in problem and "fix:" in problem), problem


class Kernel:
    """binfmt_misc in a directory: `register` takes a line (and makes the entry), an entry takes -1 (and goes)."""

    def __init__(self, root, monkeypatch, takes=True):
        self.root, self.lines, self.removed = root, [], []
        root.mkdir()
        (root / "register").write_text("")
        original = type(root / "register").write_text
        kernel = self

        def write_text(path, text, *a, **k):
            if path.parent == root and path.name == "register":
                kernel.lines.append(text)
                if takes:
                    _, name, _, _, _, _, interpreter, flags = text.strip().split(":")
                    original(root / name, ENTRY.format(interpreter=interpreter, flags=flags))
                return len(text)
            if path.parent == root and text == "-1\n":
                kernel.removed.append(path.name)
                path.unlink()
                return len(text)
            return original(path, text, *a, **k)

        monkeypatch.setattr(type(root), "write_text", write_text)


def test_ensure_emulation_installs_trixies_qemu_and_registers_it(amd64, versions, tmp_path, monkeypatch):
    kernel = Kernel(tmp_path / "binfmt", monkeypatch)
    fetched = []
    del versions[OURS]  # not installed yet

    def from_trixie(package, member, dest):
        fetched.append((package, member, dest))
        versions[str(dest)] = (10, 0)

    monkeypatch.setattr(host, "_from_trixie", from_trixie)
    host.ensure_emulation(lambda m: None, binfmt=kernel.root)
    assert fetched == [("qemu-user", "usr/bin/qemu-aarch64", host.QEMU_DIR / "qemu-aarch64")]
    name, magic, mask = host.EMULATED["linux/arm64"]
    assert kernel.lines == [f":qemu-aarch64:M::{magic}:{mask}:{OURS}:POF\n"] and kernel.removed == []
    assert magic.startswith(r"\x7f\x45\x4c\x46\x02") and magic.endswith(r"\xb7\x00")  # ELF64, e_machine AArch64
    assert host.emulation_missing("linux/arm64", kernel.root) is None


def test_ensure_emulation_replaces_bookworms_qemu_7_and_leaves_a_good_one(amd64, versions, tmp_path, monkeypatch):
    kernel = Kernel(tmp_path / "binfmt", monkeypatch)
    (kernel.root / "qemu-aarch64").write_text(ENTRY.format(interpreter=DEBIAN_BOOKWORM, flags="OPF"))
    monkeypatch.setattr(host, "_from_trixie", lambda *a: pytest.fail("installed already: nothing to fetch"))
    said = []
    host.ensure_emulation(said.append, binfmt=kernel.root)
    assert kernel.removed == ["qemu-aarch64"] and len(kernel.lines) == 1 and f":{OURS}:POF" in kernel.lines[0]
    assert any("runs qemu 7.2" in line for line in said), said
    host.ensure_emulation(said.append, binfmt=kernel.root)  # now right: nothing written
    assert len(kernel.lines) == 1 and kernel.removed == ["qemu-aarch64"]


def test_a_registration_the_kernel_does_not_take_is_a_failure(amd64, versions, tmp_path, monkeypatch):
    kernel = Kernel(tmp_path / "binfmt", monkeypatch, takes=False)
    with pytest.raises(RuntimeFailure, match="qemu not registered with binfmt_misc"):
        host.ensure_emulation(lambda m: None, binfmt=kernel.root)


def test_setup_goes_on_without_emulation_saying_why(amd64, monkeypatch):
    said = []
    for step in ("ensure_daemon", "ensure_buildx", "ensure_registry", "ensure_debootstrap", "ensure_skopeo",
                 "ensure_cosign"):
        monkeypatch.setattr(host, step, lambda log: None)

    def refuse(log):
        raise RuntimeFailure("mount -t binfmt_misc failed: permission denied")

    monkeypatch.setattr(host, "ensure_emulation", refuse)
    host.setup(said.append)
    assert said and "no linux/arm64 emulation here" in said[0] and "permission denied" in said[0]
