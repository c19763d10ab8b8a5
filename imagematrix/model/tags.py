"""Image tags: pure functions of a row's pins (stable, documented in README, unit-tested).

    verl{verl}-vllm{vllm}-torch{torch}-cu{CUDA without dot}-py{Python without dot}[-fa{flash-attn}]

e.g. verl0.5.0-vllm0.10.0-torch2.7.1-cu126-py311-fa2.8.1. A row without an explicit `id` uses this as its id.
"""

from __future__ import annotations

import re

TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")


def _nodot(version: str) -> str:
    return version.replace(".", "")


def row_id(*, verl: str, vllm: str, torch: str, cuda: str, python: str, flash_attn: str | None = None) -> str:
    parts = [f"verl{verl}", f"vllm{vllm}", f"torch{torch}", f"cu{_nodot(cuda)}", f"py{_nodot(python)}"]
    if flash_attn:
        parts.append(f"fa{flash_attn}")
    tag = "-".join(parts)
    if not TAG_RE.fullmatch(tag):
        raise ValueError(f"pins give an invalid image tag {tag!r}")
    return tag


def final_tags(row_id_: str, vllm: str) -> list[str]:
    """The tags a row's image may be published under: its id, and the alias of its vLLM version (`vllm0.10.0`)."""
    return [row_id_, vllm_alias(vllm)]


def vllm_alias(vllm: str) -> str:
    return f"vllm{vllm}"


def published_tags(rows: list[tuple[str, str]]) -> dict[str, list[str]]:
    """(row id, vLLM version) in matrix order -> the tags each row is published under.

    Every row gets its id; the `vllm<version>` alias belongs to the last row listed for that vLLM version,
    so adding a newer row for the same vLLM moves the alias to it.
    """
    owner = {vllm: row_id_ for row_id_, vllm in rows}
    return {row_id_: [row_id_] + ([vllm_alias(vllm)] if owner[vllm] == row_id_ else []) for row_id_, vllm in rows}


def candidate_tag(row_id_: str, input_digest: str) -> str:
    """Tag of an image that is built but not yet tested: never pulled by users."""
    return f"candidate-{row_id_}-{input_digest.removeprefix('sha256:')[:12]}"[:128]


EMBEDDED_REGISTRY = "127.0.0.1:5000"  # the registry `build.py setup` starts
DEFAULT_REGISTRY = f"{EMBEDDED_REGISTRY}/imagematrix"
IMAGE_NAME = "verl"


def repository(registry: str) -> str:
    return f"{registry.rstrip('/')}/{IMAGE_NAME}"
