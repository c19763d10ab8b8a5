"""Record which releases of the packages that carry native code ship linux aarch64 wheels, read from the index.

    python -m imagematrix.assist.platform_wheels [--out knowledge/platform-wheels.yaml]

writes knowledge/platform-wheels.yaml (read by imagematrix/knowledge/platform_wheels.py): for each package of
PACKAGES, every final release with the Python tags of its linux aarch64 wheels (manylinux up to the glibc of the
supported bases, 2.35, or a pure wheel), the releases that have x86_64 wheels but no aarch64 one, and those with an
sdist only. Nothing is guessed: a release is listed as the index's simple page (PEP 691 or PEP 503) shows its files
on the day of the read, which the file records.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from imagematrix.model import paths, secrets
from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import pypi, pypi_releases

# The packages of the stack whose wheels carry native code, and those the issue asked about (deep_gemm, xformers,
# flashinfer-cubin): what a row on arm64 would have to compile from an sdist under emulation when no wheel exists.
PACKAGES = ("torch", "vllm", "flash-attn", "xformers", "deep-gemm", "flashinfer-python", "flashinfer-cubin",
            "flashinfer-jit-cache", "triton", "tensordict", "torchvision", "torchaudio", "bitsandbytes", "xgrammar",
            "ray", "cupy-cuda12x", "nvidia-nccl-cu12", "nvidia-nccl-cu13", "pyarrow", "numpy")

# Packages the index has no wheel of, whose sdists compile CUDA extensions (flash-attn: knowledge/flash-attn.yaml
# records its compile; deep-gemm: its sdist's setup.py builds a CUDAExtension): native, though no wheel says so.
COMPILED_SDISTS = ("flash-attn", "deep-gemm")

GLIBC_MAX = (2, 35)  # uv resolves for manylinux_2_35 (tools/uv.PLATFORMS): every supported base has glibc >= 2.35
_MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(aarch64|x86_64)\Z")
_CPYTHON = re.compile(r"^(?:cp3\d{1,2}|py3\d{0,2})\Z")
_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def wheel_arch(platform: str) -> str | None:
    """'aarch64', 'x86_64' or 'any' for a wheel's platform tag installable on a manylinux_2_35 system; None else."""
    if platform == "any":
        return "any"
    match = _MANYLINUX.fullmatch(platform)
    if match:
        return match.group(3) if (int(match.group(1)), int(match.group(2))) <= GLIBC_MAX else None
    legacy, _, arch = platform.partition("_")
    if legacy in _LEGACY and arch in ("aarch64", "x86_64"):
        return arch
    return None


def python_tag(interpreter: str, abi: str) -> str:
    """cp311, cp38-abi3 or py3: the Python a wheel tag installs on (wheel_serves reads it back)."""
    return f"{interpreter}-abi3" if abi == "abi3" else interpreter


def classify(package: str, files: list[pypi_releases.File]) -> dict:
    """The package's record: native (any platform-specific wheel), aarch64 {release: [python tags]}, x86_64_only,
    sdist_only; final releases only, newest first; yanked files do not count."""
    seen: dict[Version, dict[str, set[str]]] = {}
    for f in files:
        if f.yanked:
            continue
        parsed = pypi_releases.version_of(f.filename, package)
        if parsed is None or parsed[0].is_prerelease or parsed[0].is_devrelease:
            continue
        entry = seen.setdefault(parsed[0], {"aarch64": set(), "x86_64": set(), "sdist": set()})
        if not parsed[1]:
            entry["sdist"].add("sdist")
            continue
        try:
            _, _, _, tags = parse_wheel_filename(f.filename)
        except (InvalidWheelFilename, InvalidVersion):
            continue
        for tag in tags:
            if not _CPYTHON.fullmatch(tag.interpreter) or tag.abi.endswith("t"):  # PyPy, Python 2, free-threaded
                continue
            arch = wheel_arch(tag.platform)
            if arch == "any":
                entry["aarch64"].add(python_tag(tag.interpreter, tag.abi))
                entry["x86_64"].add(python_tag(tag.interpreter, tag.abi))
            elif arch:
                entry[arch].add(python_tag(tag.interpreter, tag.abi))
    native = canonicalize_name(package) in COMPILED_SDISTS or any(
        t.platform != "any" for f in files if f.filename.endswith(".whl") for t in _tags(f.filename))
    versions = sorted(seen, reverse=True)
    return {
        "native": native,
        "aarch64": {str(v): sorted(seen[v]["aarch64"]) for v in versions if seen[v]["aarch64"]},
        "x86_64_only": [str(v) for v in versions if seen[v]["x86_64"] and not seen[v]["aarch64"]],
        "sdist_only": [str(v) for v in versions if not seen[v]["x86_64"] and not seen[v]["aarch64"] and seen[v]["sdist"]],
    }


def _tags(filename: str):
    try:
        return parse_wheel_filename(filename)[3]
    except (InvalidWheelFilename, InvalidVersion):
        return frozenset()


ABSENT = {"absent": True}


def render(records: dict[str, dict], index: str, read: str) -> str:
    """The YAML file, one release a line (flow style), with its provenance in the header."""
    out = [
        "# Which releases of the packages with native code ship linux aarch64 wheels (linux/arm64 rows: GH200, GB200).",
        "# DO NOT EDIT by hand: written by `python -m imagematrix.assist.platform_wheels` from the index's simple pages",
        f"# ({secrets.redact_url(index)}), read {read}. Read by imagematrix/knowledge/platform_wheels.py (validate, lock,",
        "# pick, docs). Final releases only, newest first. Per package:",
        "#   native:      some wheel of it is platform-specific, or its sdist compiles CUDA code (COMPILED_SDISTS of the",
        "#                writer): on arm64 it must come as a wheel,",
        "#                never from its sdist (uv is told --only-binary for it), since compiling it under emulation",
        "#                takes hours or fails;",
        "#   aarch64:     release -> the Python tags of its aarch64 wheels (manylinux <= 2.35, or pure `any` wheels):",
        "#                cp311 (CPython 3.11 only), cp39-abi3 (3.9 and later), py3 (any Python 3);",
        "#   x86_64_only: releases with x86_64 wheels and no aarch64 (nor pure) wheel;",
        "#   sdist_only:  releases with no wheel at all (flash-attn publishes its wheels on GitHub, not the index);",
        "#   absent:      the index has no such project.",
        f"read: \"{read}\"",
        "packages:",
    ]
    for name in sorted(records):
        rec = records[name]
        out.append(f"  {name}:")
        if rec.get("absent"):
            out.append("    absent: true  # the index has no such project: a row needs another index for it")
            continue
        out.append(f"    native: {'true' if rec['native'] else 'false'}")
        out.append("    aarch64:" + ("" if rec["aarch64"] else " {}"))
        out += [f'      "{v}": [{", ".join(tags)}]' for v, tags in rec["aarch64"].items()]
        for key in ("x86_64_only", "sdist_only"):
            values = rec[key]
            out.append(f"    {key}: [" + ", ".join(f'"{v}"' for v in values) + "]")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=paths.KNOWLEDGE / "platform-wheels.yaml")
    args = parser.parse_args(argv)
    index = pypi.index_url()
    records = {}
    for package in PACKAGES:
        try:
            records[canonicalize_name(package)] = classify(package, pypi_releases.files(package, index))
        except RuntimeFailure as exc:
            if "HTTP 404" not in str(exc):
                raise
            records[canonicalize_name(package)] = ABSENT  # not on this index (flashinfer-jit-cache: its own index)
    read = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    paths.write_atomic(args.out, render(records, index, read))
    print(f"wrote {args.out} ({len(records)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
