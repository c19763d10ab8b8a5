"""tools/host.qemu_version runs an interpreter and reads its `--version` answer (setup's check that the registered
qemu is new enough for the arm64 images: bookworm's 7.2 crashed `import torch` 2.13)."""

from __future__ import annotations

import pytest

from imagematrix.tools import host


@pytest.mark.parametrize("qemu", ["10.0.13", "11.2.0"])
def test_qemu_version_reads_the_interpreters_answer(tmp_path, qemu):
    fake = tmp_path / "qemu-aarch64"
    fake.write_text(f"#!/bin/sh\necho 'qemu-aarch64 version {qemu} (Debian 1:{qemu}+ds-0+deb13u1)'\n"
                    "echo 'Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers'\n")
    fake.chmod(0o755)
    assert host.qemu_version(str(fake)) == tuple(int(x) for x in qemu.split(".")[:2])
    assert host.qemu_version(str(tmp_path / "absent")) is None
    assert host.qemu_version("/bin/true") is None
