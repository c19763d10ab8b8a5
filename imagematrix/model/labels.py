"""Every io.imagematrix.* image label the project writes or reads, in one place."""

from __future__ import annotations

PREFIX = "io.imagematrix"
ROW = f"{PREFIX}.row"
PYTHON = f"{PREFIX}.python"
CUDA = f"{PREFIX}.cuda"
LOCK_SHA256 = f"{PREFIX}.lock.sha256"
PATCHES = f"{PREFIX}.patches"
FLASH_ATTN_WHEEL = f"{PREFIX}.flash-attn.wheel"  # the wheel's key (model/flash_attn.WheelSpec.key)
FLASH_ATTN_SHA256 = f"{PREFIX}.flash-attn.sha256"  # set at build time: the installed wheel's digest
FLASH_ATTN_ORIGIN = f"{PREFIX}.flash-attn.origin"  # set at build time: which source gave the wheel, and why
FLASH_ATTN_FILE = f"{PREFIX}.flash-attn.file"  # on a wheel image: the wheel's file name
TRAINING = f"{PREFIX}.training"  # how verl trains in the image: flash_attention_2, sdpa (and the override), rollout only
INPUT_DIGEST = f"{PREFIX}.input-digest"  # digest of the build context: a tag carrying it is current
PLATFORM = f"{PREFIX}.platform"  # on an image for another platform than linux/amd64 (linux/arm64): that platform
CLUSTER = f"{PREFIX}.cluster"  # on the containers and network of `test --cluster`


def pin(package: str) -> str:
    return f"{PREFIX}.pin.{package}"
