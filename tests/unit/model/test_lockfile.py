"""The lock format: parsing uv's output, the torch layer's closure, the CUDA of torch (model/lockfile.py)."""

from __future__ import annotations

import pytest

from imagematrix.model import lockfile

LOCK = """\
filelock==3.20.0 \\
    --hash=sha256:aa
    # via
    #   torch
    #   vllm
mpmath==1.3.0 \\
    --hash=sha256:bb
    # via sympy
nvidia-cublas-cu12==12.4.5.8 \\
    --hash=sha256:cc
    # via
    #   nvidia-cudnn-cu12
    #   torch
nvidia-cudnn-cu12==9.1.0.70 \\
    --hash=sha256:dd
    # via torch
nvidia-cuda-runtime-cu12==12.4.127 \\
    --hash=sha256:ee
    # via torch
sympy==1.13.1 \\
    --hash=sha256:ff
    # via torch
torch==2.5.1 \\
    --hash=sha256:11
    # via
    #   -r requirements.in
    #   vllm
vllm==0.7.2 \\
    --hash=sha256:22
    # via -r requirements.in
"""


def test_parse_lock_and_torch_closure():
    entries = lockfile.parse(LOCK)
    assert entries["nvidia-cublas-cu12"].via == {"nvidia-cudnn-cu12", "torch"}
    assert entries["torch"].version == "2.5.1"
    assert entries["torch"].text == "torch==2.5.1 \\\n    --hash=sha256:11\n"
    closure = [e.name for e in lockfile.torch_closure(entries)]
    # filelock is also needed by vllm, so it belongs to the row layer, not the shared torch layer
    assert closure == ["mpmath", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu12", "sympy", "torch"]
    assert lockfile.torch_cuda(entries) == "12.4"


def test_the_pins_digest_ignores_the_header_and_annotations():
    digest = lockfile.pins_digest(LOCK)
    assert lockfile.pins_digest("# exclude-newer: 2026-12-02T00:00:00Z\n" + LOCK) == digest
    assert lockfile.pins_digest(LOCK.replace("torch==2.5.1", "torch==2.5.0")) != digest


def test_the_flash_attn_sdist_line_is_read_and_left_out_of_the_lock_digest():
    """A lock that gains the sdist line (issue 26, item 12) keeps the digest images carry: the same pins render the
    same context; the sdist reaches the input digest through the Dockerfile's compile stage."""
    header = "# DO NOT EDIT\n# body-digest: sha256:" + "0" * 64 + "\n# exclude-newer: 2026-12-02T06:42:07Z\n"
    line = lockfile.flash_attn_sdist_line("flash_attn-2.8.3.tar.gz", "a" * 64) + "\n"
    assert lockfile.flash_attn_sdist(header + LOCK) is None
    assert lockfile.flash_attn_sdist(header + line + LOCK) == ("flash_attn-2.8.3.tar.gz", "a" * 64)
    assert lockfile.file_sha256(header + line + LOCK) == lockfile.file_sha256(header + LOCK)
    with pytest.raises(ValueError, match="not `<file>.tar.gz sha256:"):  # its file name would go into a RUN line
        lockfile.flash_attn_sdist(header + "# flash-attn-sdist: x.tar.gz;rm -rf / sha256:" + "a" * 64 + "\n" + LOCK)
