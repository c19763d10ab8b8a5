"""Helpers of the GPU smoke suite, standard library only: no torch, no imagematrix (this folder is mounted alone
into images, which have neither imagematrix nor testinfra).

Everything here runs on a CPU and is unit-tested in tests/unit/test_gpu_plumbing.py.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TINY_MODEL = HERE / "assets" / "tiny-llama"
SCRIPTS = HERE / "scripts"

HOST, IMAGE = "host", "image"
NO_KERNEL_IMAGE = "no kernel image is available for execution on the device"
# The patches that exist for verl's external launcher on vLLM 0.7.0-0.7.2 (dockerfiles/patches/vllm-0.7-verl.yaml).
LAUNCHER_PATCHES = ("vllm-external-launcher-local-rank", "vllm-parallel-state-world-size")
# Distribution name -> the module the tests import.
MODULES = {"torch": "torch", "vllm": "vllm", "flash-attn": "flash_attn", "verl": "verl",
           "transformers": "transformers", "tensordict": "tensordict"}


@dataclass(frozen=True)
class RowSpec:
    """What the row promises (from its rendered row.json): id, pins, source patches."""

    id: str
    pins: dict[str, str] = field(default_factory=dict)
    patches: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path) -> RowSpec:
        data = json.loads(Path(path).read_text())
        return cls(id=data["id"], pins=dict(data["pins"]), patches=tuple(data.get("patches", ())))

    def pin(self, dist: str) -> str | None:
        return self.pins.get(dist)


@dataclass(frozen=True)
class Settings:
    """How the suite runs: mode (None: not asked to run), and the row it checks, when known."""

    mode: str | None
    row: RowSpec | None = None

    def ships(self, dist: str) -> bool | None:
        """Whether the row installs `dist` (None: no row given, so only the environment can tell)."""
        return None if self.row is None else dist in self.row.pins


def settings(host: bool, in_image: bool, row_json: str | None, row_id: str | None, matrix: str | None) -> Settings:
    """Validate the command-line options; raises ValueError with a usage message."""
    if host and in_image:
        raise ValueError("--host and --in-image exclude each other: --host tests this Python, --in-image an image")
    if in_image and not row_json:
        raise ValueError("--in-image needs --row-json PATH (the row's dockerfiles/generated/<row-id>/row.json)")
    path = Path(row_json) if row_json else None
    if path is None and row_id and host:
        path = Path(matrix or "matrix.yaml").resolve().parent / "dockerfiles" / "generated" / row_id / "row.json"
    if path is not None and not path.is_file():
        raise ValueError(f"no row expectations at {path} (run `python build.py render` for the row)")
    row = RowSpec.load(path) if path is not None else None
    return Settings(mode=HOST if host else IMAGE if in_image else None, row=row)


def missing(settings: Settings, dist: str, error: BaseException) -> tuple[str, str]:
    """('skip' | 'fail', reason) for a package that cannot be imported.

    In an image a package the row pins must import; one it does not pin skips. In host mode a package that is
    not installed (or lacks one of its own dependencies) skips; one that is installed but breaks on import fails.
    """
    pin = settings.row.pin(dist) if settings.row else None
    if settings.mode == IMAGE:
        if pin is not None:
            return "fail", f"row {settings.row.id} pins {dist}=={pin}, but it does not import in the image: {error!r}"
        if isinstance(error, ModuleNotFoundError):
            row = settings.row.id if settings.row else "the row"
            return "skip", f"{row} does not ship {dist}"
        return "fail", f"{dist} is installed in the image but does not import: {error!r}"
    if isinstance(error, ModuleNotFoundError):
        return "skip", f"{dist} is not importable in this Python (host mode): {error}"
    return "fail", f"{dist} is installed here but does not import: {error!r}"


def _arch(entry: str) -> tuple[str, int, int, str] | None:
    """'sm_90a' -> ('sm', 9, 0, 'a'); 'compute_86' -> ('compute', 8, 6, '')."""
    m = re.fullmatch(r"(sm|compute)_(\d+?)(\d)([af]?)", entry)
    return (m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)) if m else None


def coverage(capability: tuple[int, int], arch_list: list[str]) -> tuple[list[str], list[str]]:
    """(machine code entries that run on the device, PTX entries the driver can JIT for it).

    Machine code (sm_XY) runs on devices of the same major and a minor >= Y; sm_XYa only on X.Y itself;
    sm_XYf on the same major from Y on. PTX (compute_XY) JIT-compiles for any device >= X.Y, except the
    arch-specific 'a' PTX, which serves X.Y only.
    """
    major, minor = capability
    sass, ptx = [], []
    for entry in arch_list:
        parsed = _arch(entry)
        if parsed is None:
            continue
        kind, a_major, a_minor, suffix = parsed
        if suffix == "a":
            ok = (a_major, a_minor) == capability
        elif kind == "sm":
            ok = a_major == major and a_minor <= minor
        else:
            ok = (a_major, a_minor) <= capability
        if ok:
            (sass if kind == "sm" else ptx).append(entry)
    return sass, ptx


def kernel_image_message(name: str, capability: tuple[int, int], arch_list: list[str], torch_version: str,
                         cuda_version: str | None) -> str:
    """The failure users see as 'no kernel image is available for execution on the device', with the fix."""
    sm = f"sm_{capability[0]}{capability[1]}"
    return (f"{NO_KERNEL_IMAGE}: {name} is {sm} (compute capability {capability[0]}.{capability[1]}), but torch "
            f"{torch_version} (CUDA {cuda_version}) carries kernels for {', '.join(arch_list) or 'no architecture'} "
            f"and no PTX it can JIT for {sm}. Fix: use a row whose torch/CUDA build includes {sm} (newer GPUs need "
            f"a newer torch and CUDA, e.g. sm_100/sm_120 need CUDA 12.8 or later; older ones an older torch), "
            f"or run this image on a GPU of a listed architecture.")


def dtype_advice(capability: tuple[int, int]) -> str:
    """bf16 has hardware support from sm80 (Ampere) on; V100 (sm70), T4 and the 20-series (sm75) need float16."""
    return "bfloat16" if capability >= (8, 0) else "float16"


def launcher_test_reason(settings: Settings, vllm_version: str | None) -> str | None:
    """Why the 2-rank external-launcher test does not apply (None: it applies).

    It exists for the vLLM 0.7.0-0.7.2 source patches: with a row, the row must carry them; without one (host
    mode), the installed vLLM must be one of those versions.
    """
    if settings.row is not None:
        if all(p in settings.row.patches for p in LAUNCHER_PATCHES):
            return None
        return f"row {settings.row.id} carries no vLLM 0.7.x external-launcher patches"
    if vllm_version and re.match(r"0\.7\.[0-2](\D|$)", vllm_version):
        return None
    return f"only for vLLM 0.7.0-0.7.2 (the patched versions); installed: vllm {vllm_version}"


def result_line(output: str, marker: str = "RESULT ") -> list[dict]:
    """The JSON objects a helper script printed after `marker`, in order.

    Found anywhere in the output, not only at line starts: ranks of one torchrun share a pipe, and another
    rank's text may land just before a result.
    """
    decoder, out, at = json.JSONDecoder(), [], output.find(marker)
    while at >= 0:
        try:
            obj, end = decoder.raw_decode(output, at + len(marker))
            out.append(obj)
        except json.JSONDecodeError:
            end = at + len(marker)
        at = output.find(marker, end)
    return out


def versions() -> str:
    """Installed versions of the stack, for failure messages."""
    out = []
    for dist in ("torch", "vllm", "flash-attn", "verl", "transformers", "tensordict", "triton"):
        try:
            out.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist}: not installed")
    return ", ".join(out)


class Ran:
    """A finished helper process: its command, exit code, output and the `RESULT {json}` lines it printed."""

    def __init__(self, cmd: list[str], returncode: int, output: str):
        self.cmd, self.returncode, self.output = cmd, returncode, output
        self.results = result_line(output)

    def explain(self, what: str) -> str:
        return (f"{what} (exit {self.returncode})\n$ {' '.join(self.cmd)}\nversions: {versions()}\n"
                f"--- output (tail) ---\n{self.output[-6000:]}")


def start(args: list, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `python ARGS` (this Python) with output captured; NCCL_*/VLLM_* settings of the caller are kept."""
    return subprocess.Popen([sys.executable, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                            "PYTHONUNBUFFERED": "1", **(env or {})}, cwd=tempfile.gettempdir())


def finish(proc: subprocess.Popen, timeout: float) -> Ran:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        output += f"\n[killed after {timeout:.0f} s]"
    return Ran([str(a) for a in proc.args], proc.returncode, output)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def visible_devices(count: int) -> list[str]:
    """The CUDA_VISIBLE_DEVICES entries of the visible GPUs (their indices when the variable is unset)."""
    listed = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]
