"""Image tags: pure functions of a row's pins (stable, documented in README, unit-tested).

    verl{verl}-vllm{vllm}-torch{torch}-cu{CUDA without dot}-py{Python without dot}[-fa{flash-attn}]

e.g. verl0.5.0-vllm0.10.0-torch2.7.1-cu126-py311-fa2.8.1. A row without an explicit `id` uses this as its id.
"""

from __future__ import annotations

import re

TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _nodot(version: str) -> str:
    return version.replace(".", "")


def row_id(*, verl: str, vllm: str, torch: str, cuda: str, python: str, flash_attn: str | None = None) -> str:
    parts = [f"verl{verl}", f"vllm{vllm}", f"torch{torch}", f"cu{_nodot(cuda)}", f"py{_nodot(python)}"]
    if flash_attn:
        parts.append(f"fa{flash_attn}")
    tag = "-".join(parts)
    if not TAG_RE.match(tag):
        raise ValueError(f"pins give an invalid image tag {tag!r}")
    return tag


def final_tags(row_id_: str, vllm: str) -> list[str]:
    """The tags a row's image is published under: its id, and an alias per vLLM version (`vllm0.10.0`).

    The alias moves to the last row listed for that vLLM version (see publish order).
    """
    return [row_id_, f"vllm{vllm}"]


def candidate_tag(row_id_: str, input_digest: str) -> str:
    """Tag of an image that is built but not yet tested: never pulled by users."""
    return f"candidate-{row_id_}-{input_digest.removeprefix('sha256:')[:12]}"[:128]
