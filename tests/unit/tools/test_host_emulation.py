"""setup's emulation of linux/arm64 (issue 29): what counts as registered, and the registration it writes."""

from __future__ import annotations

import pytest

from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import host

ENTRY = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {flags}\noffset 0\n"


@pytest.fixture
def amd64(monkeypatch):
    monkeypatch.setattr(host, "native_platform", lambda: "linux/amd64")


def test_the_native_platform_needs_no_emulation(monkeypatch, tmp_path):
    monkeypatch.setattr(host, "native_platform", lambda: "linux/arm64")
    assert host.emulation_missing("linux/arm64", tmp_path) is None


@pytest.mark.parametrize(("entry", "expected"), [
    (None, "not registered with binfmt_misc"), (ENTRY.format(flags="POF"), None),
    (ENTRY.format(flags="P"), "without the F flag"), (ENTRY.format(flags="POF").replace("enabled", "disabled"), "is disabled")])
def test_emulation_counts_only_an_enabled_entry_with_the_f_flag(amd64, tmp_path, entry, expected):
    if entry is not None:
        (tmp_path / "qemu-aarch64").write_text(entry)
    problem = host.emulation_missing("linux/arm64", tmp_path)
    assert (problem is None) if expected is None else (expected in problem and "fix:" in problem)


def test_ensure_emulation_writes_qemu_s_registration_line(amd64, tmp_path, monkeypatch):
    binfmt, conf = tmp_path / "binfmt", tmp_path / "binfmt.d"
    binfmt.mkdir(), conf.mkdir()
    (binfmt / "register").write_text("")
    (conf / "qemu-aarch64.conf").write_text("# comment\n:qemu-aarch64:M::\\x7fELF:\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF\n")
    monkeypatch.setattr(host, "QEMU_BINFMT_CONF", conf)
    monkeypatch.setattr(host, "_apt_install", lambda *p, log: None)
    written = []


    original = type(binfmt / "register").write_text

    def write_text(self, text, *a, **k):
        if self.name == "register":
            written.append(text)
            (self.parent / "qemu-aarch64").write_text(ENTRY.format(flags="POF"))
            return len(text)
        return original(self, text, *a, **k)

    monkeypatch.setattr(type(binfmt), "write_text", write_text)
    host.ensure_emulation(lambda m: None, binfmt=binfmt)
    assert written == [":qemu-aarch64:M::\\x7fELF:\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF\n"]


def test_a_missing_registration_line_is_a_failure(amd64, tmp_path, monkeypatch):
    (tmp_path / "register").write_text("")
    monkeypatch.setattr(host, "QEMU_BINFMT_CONF", tmp_path / "none")
    monkeypatch.setattr(host, "_apt_install", lambda *p, log: None)
    with pytest.raises(RuntimeFailure, match="qemu-user-static installed"):
        host.ensure_emulation(lambda m: None, binfmt=tmp_path)


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
