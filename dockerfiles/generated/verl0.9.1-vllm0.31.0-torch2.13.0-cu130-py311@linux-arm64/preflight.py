"""Runtime preflight: at container start, warn when the GPU is not covered by the image or lacks bf16/FlashAttention-2.

Standard library only: it is copied into every image (/opt/imagematrix/preflight.py) and run by the entrypoint
before the command, unless IMAGEMATRIX_PREFLIGHT=0. It never blocks a container: every problem, its own included,
ends in a warning on stderr and exit status 0. It asks `nvidia-smi` (mounted by the NVIDIA container toolkit) for
the GPUs, so it costs no torch import; the architectures compiled into torch were written at build time.

The coverage rules live here (and imagematrix.knowledge.gpus uses them): machine code sm_XY runs on X.Z for Z >= Y within the
same major; sm_XYa only on X.Y; sm_XYf on X.Z, Z >= Y; PTX compute_XY is JIT-compiled for any capability >= X.Y.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

ARCHS_FILE = "/opt/imagematrix/torch-archs.txt"
_ARCH_ENTRY_RE = re.compile(r"^(sm|compute)_(\d{1,2})(\d)([af]?)$")
NO_KERNEL = "no kernel image is available for execution on the device"


def coverage(arch_list, cap: tuple[int, int]) -> str | None:
    """How a binary built for arch_list runs on capability cap (the closest build), or None when it cannot."""
    sass = ptx = None
    for entry in arch_list:
        match = _ARCH_ENTRY_RE.match(entry.strip())
        if not match:
            continue
        kind, major, minor, suffix = match.groups()
        built = (int(major), int(minor))
        if kind == "sm" or suffix:
            if built == tuple(cap):
                return f"{entry} (exact)"
            if suffix != "a" and built[0] == cap[0] and built[1] < cap[1] and (sass is None or built > sass[0]):
                sass = (built, f"{entry} (same major, binary compatible)")
        elif built <= tuple(cap) and (ptx is None or built > ptx[0]):
            ptx = (built, f"{entry} (PTX, JIT-compiled by the driver)")
    best = sass or ptx
    return best[1] if best else None


def gpus(timeout: float = 5.0) -> list[tuple[str, tuple[int, int]]] | None:
    """(name, capability) of each visible GPU from nvidia-smi; None when there is no nvidia-smi (no GPU runtime)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    proc = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"nvidia-smi failed: {(proc.stderr or proc.stdout).strip()[:200]}")
    found = []
    for line in proc.stdout.splitlines():
        name, _, cap = line.rpartition(",")
        major, _, minor = cap.strip().partition(".")
        found.append((name.strip(), (int(major), int(minor or 0))))
    return found


def problems(arch_list: list[str], devices: list[tuple[str, tuple[int, int]]]) -> list[str]:
    out = []
    for name, cap in devices:
        sm = f"sm_{cap[0]}{cap[1]}"
        if coverage(arch_list, cap) is None:
            out.append(f"{name} is {sm}, but this image's torch has kernels for {' '.join(arch_list)} only: CUDA work "
                       f"will fail with \"{NO_KERNEL}\". Fix: use an image whose torch covers {sm} "
                       f"(`python build.py pick --gpu {sm}`).")
        elif cap < (8, 0):
            out.append(f"{name} is {sm}: no bfloat16 and no FlashAttention-2 below sm_80. Fix: dtype=float16 and an "
                       "attention backend other than FLASH_ATTN (e.g. VLLM_ATTENTION_BACKEND=XFORMERS where the vLLM "
                       "version reads it); verl: use_remove_padding/flash-attn off.")
    return out


def main() -> int:
    if os.environ.get("IMAGEMATRIX_PREFLIGHT", "1") == "0":
        return 0
    try:
        devices = gpus()
        if not devices:
            return 0  # no GPU runtime: CPU use (builds, smoke tests) is legitimate
        with open(os.environ.get("IMAGEMATRIX_TORCH_ARCHS", ARCHS_FILE)) as f:
            arch_list = f.read().split()
        found = problems(arch_list, devices)
        for message in found:
            print(f"imagematrix preflight: warning: {message}", file=sys.stderr)
        if found:
            print("imagematrix preflight: (IMAGEMATRIX_PREFLIGHT=0 turns this check off)", file=sys.stderr)
    except Exception as exc:  # never block a container that works
        print(f"imagematrix preflight: skipped ({exc})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
