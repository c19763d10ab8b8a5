"""GPU and CUDA knowledge (data: knowledge/gpus.yaml), shared by validate, doctor, pick, docs and the preflight.

- capability("A100") / ("NVIDIA A100-SXM4-80GB") / ("sm_80") / ("8.0") -> (8, 0)
- covers(arch_list, capability): can a binary built for `arch_list` (torch.cuda.get_arch_list() style:
  "sm_90" machine code, "compute_90" PTX) run on a GPU of that capability?
- bf16_supported / flash_attn2_supported: Ampere (8.0) and newer.
- min_driver(cuda) / min_driver_compat(cuda) / driver_status(driver, cuda): the Linux driver a CUDA toolkit needs.
- torch_arch_list(torch, cuda): the architectures compiled into the official PyTorch wheel.

Standard library, packaging and the YAML loader only: the in-image preflight may reuse it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from imagematrix.in_image import preflight
from imagematrix.model import paths, yamlio
from imagematrix.model.errors import InputError

GPUS = paths.GPUS

Capability = tuple[int, int]

# Words nvidia-smi and marketing names add that say nothing about the model.
_NOISE = {"NVIDIA", "GEFORCE", "TESLA"}
_ARCH_RE = re.compile(r"^(?:sm|compute)_?(\d{1,2})(\d)[af]?$", re.I)
_DOTTED_RE = re.compile(r"^(\d{1,2})\.(\d)$")
_CUDA_RE = re.compile(r"^(\d{1,2})\.(\d{1,2})(?:\.\d+)*$")


@dataclass(frozen=True)
class Data:
    names: tuple[tuple[tuple[str, ...], Capability, str], ...]  # (tokens, capability, spelling)
    drivers: dict[str, dict[str, str]]
    torch_archs: tuple[dict, ...]
    arm64_hosts: tuple[str, ...] = ()  # GPU models whose hosts are aarch64 (Grace): they need a linux/arm64 image


def _tokens(text: str) -> tuple[str, ...]:
    words = re.split(r"[\s\-_/(),]+", text.upper())
    return tuple(w for w in words if w and w not in _NOISE)


def _cap(text: str) -> Capability:
    major, minor = str(text).split(".")
    return int(major), int(minor)


@functools.cache
def data(path: Path = GPUS) -> Data:
    doc = yamlio.load_mapping(path, keys="`capabilities`, `drivers` and `torch_arch_lists`")
    sections = ("capabilities", "drivers", "torch_arch_lists")
    if not isinstance(doc, dict) or not set(sections) <= set(doc):
        missing = [s for s in sections if not isinstance(doc, dict) or s not in doc]
        raise InputError(f"expected `capabilities`, `drivers` and `torch_arch_lists`; missing: {', '.join(missing)}",
                         where=f"{path}:{yamlio.line_of(doc) or 1}",
                         fix="see the comment above each section for its form")
    line = None  # the line of the entry being read, for the error
    try:  # a malformed file is bad input (exit 2), not an AttributeError deep inside whichever command reads it
        names = []
        line = yamlio.line_of(doc, "capabilities")
        capabilities = _of(doc["capabilities"], dict)
        for cap, models in capabilities.items():
            line = yamlio.line_of(capabilities, cap)
            for model in _of(models, list):
                names.append((_tokens(str(model)), _cap(cap), str(model)))
        drivers = {}
        line = yamlio.line_of(doc, "drivers")
        for k, v in (section := _of(doc["drivers"], dict)).items():
            line = yamlio.line_of(section, k)
            drivers[_cuda_key(k)] = {kk: str(vv) for kk, vv in _of(v, dict).items()}
            for kk in ("toolkit", "compat"):
                driver_version(drivers[_cuda_key(k)][kk])  # a KeyError or InputError when missing or no version
        archs = []
        line = yamlio.line_of(doc, "torch_arch_lists")
        for index, e in enumerate(section := _of(doc["torch_arch_lists"], list)):
            line = yamlio.line_of(section, index)
            e = _of(e, dict)
            archs.append({"torch": SpecifierSet(str(e["torch"])), "cuda": [_cuda_key(c) for c in _of(e["cuda"], list)],
                          "archs": [str(a) for a in _of(e["archs"], list)], "evidence": str(e["evidence"])})
        line = yamlio.line_of(doc, "arm64_hosts") if "arm64_hosts" in doc else None
        arm64_hosts = tuple(str(m) for m in _of(doc.get("arm64_hosts") or [], list))
    except (InputError, KeyError, TypeError, ValueError) as exc:  # InvalidSpecifier and InvalidVersion are ValueErrors
        if isinstance(exc, InputError):
            detail = exc.message
        elif isinstance(exc, KeyError):
            detail = f"missing key {exc}"
        else:
            detail = f"{exc.__class__.__name__}: {exc}"
        raise InputError(f"malformed GPU data: {detail}", where=f"{path}:{line}" if line else str(path),
                         fix="see the comment above each section for its form") from None
    return Data(names=tuple(names), drivers=drivers, torch_archs=tuple(archs), arm64_hosts=arm64_hosts)


def host_platform(name: str) -> str:
    """The platform of the hosts a GPU model sits in: linux/arm64 for Grace's (GH200, GB200, GB300, GB10), else
    linux/amd64 (a capability such as sm_90 names no host: amd64)."""
    return "linux/arm64" if any(names_match(name, model) for model in data().arm64_hosts) else "linux/amd64"


def _of(value, kind: type):
    if not isinstance(value, kind):
        raise TypeError(f"expected a {'mapping' if kind is dict else 'list'}, got {value!r:.60}")
    return value


def _contains(haystack: tuple[str, ...], needle: tuple[str, ...]) -> bool:
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def names_match(name: str, model: str) -> bool:
    """Whether the GPU name (any spelling: "NVIDIA A100-SXM4-80GB") names model ("A100"), as whole words."""
    return _contains(_tokens(str(name)), _tokens(str(model)))


def capability(name: str) -> Capability:
    """Compute capability of a GPU given by model name (any case, nvidia-smi spelling), `sm_75`, `sm75`,
    `compute_75` or `7.5`. Raises InputError for unknown or ambiguous names."""
    text = str(name).strip()
    for pattern in (_ARCH_RE, _DOTTED_RE):
        match = pattern.match(text)
        if match:
            cap = int(match.group(1)), int(match.group(2))
            # a model's capability, or one a torch wheel ships machine code for (sm_50 has no model listed)
            shipped = {a for entry in data().torch_archs for a in entry["archs"]}
            known = sorted({c for _, c, _ in data().names}
                           | {(int(m.group(1)), int(m.group(2))) for a in shipped if (m := _ARCH_RE.match(a))})
            if cap not in known:
                raise InputError(f"no NVIDIA GPU has compute capability {cap[0]}.{cap[1]} ({name!r})",
                                 fix="known capabilities: " + ", ".join(f"{c[0]}.{c[1]}" for c in known)
                                     + f" ({GPUS.relative_to(paths.ROOT)})")
            return cap
    words = _tokens(text)
    hits = [(len(tokens), cap, spelling) for tokens, cap, spelling in data().names if _contains(words, tokens)]
    if hits:
        longest = max(h[0] for h in hits)
        best = {cap: spelling for size, cap, spelling in hits if size == longest}
        if len(best) == 1:
            return next(iter(best))
        raise InputError(
            f"GPU name {name!r} is ambiguous: " + ", ".join(f"{s} is {c[0]}.{c[1]}" for c, s in sorted(best.items())),
            fix="give the full model name (e.g. 'RTX 6000 Ada') or the capability (e.g. 'sm_89')",
        )
    raise InputError(
        f"unknown GPU {name!r}",
        fix="give a model (A100, H100, L4, T4, 'RTX 4090'...), an architecture (sm_80, sm80) or a capability (8.0); "
            f"models are listed in {GPUS.relative_to(paths.ROOT)}",
    )


def format_capability(cap: Capability) -> str:
    return f"sm_{cap[0]}{cap[1]}"


def coverage(arch_list: list[str] | tuple[str, ...], cap: Capability) -> str | None:
    """How a binary built for `arch_list` runs on `cap`, or None when it cannot ("no kernel image is available").

    The rules live in the stdlib-only preflight module, which every image carries (CUDA C++ Programming Guide,
    "Binary Compatibility" / "PTX Compatibility").
    """
    return preflight.coverage(arch_list, cap)


def covers(arch_list: list[str] | tuple[str, ...], cap: Capability) -> bool:
    return coverage(arch_list, cap) is not None


def bf16_supported(cap: Capability) -> bool:
    """bfloat16 tensor-core math: Ampere (8.0) and newer."""
    return tuple(cap) >= (8, 0)


def flash_attn2_supported(cap: Capability) -> bool:
    """FlashAttention-2 (flash-attn 2.x, vLLM's FLASH_ATTN backend): Ampere (8.0) and newer."""
    return tuple(cap) >= (8, 0)


def _cuda_key(cuda: str) -> str:
    match = _CUDA_RE.match(str(cuda).strip())
    if not match:
        raise InputError(f"{cuda!r} is not a CUDA version", fix="write major.minor, e.g. 12.4")
    return f"{int(match.group(1))}.{int(match.group(2))}"


def _driver_entry(cuda: str) -> dict[str, str]:
    key = _cuda_key(cuda)
    entry = data().drivers.get(key)
    if entry is None:
        known = ", ".join(sorted(data().drivers, key=Version))
        raise InputError(f"no driver data for CUDA {key}", fix=f"add it to {GPUS.relative_to(paths.ROOT)} (known: {known})")
    return entry


def min_driver(cuda: str) -> str:
    """Linux driver the CUDA toolkit release (GA) was built with: full support, PTX JIT included."""
    return _driver_entry(cuda)["toolkit"]


def min_driver_compat(cuda: str) -> str:
    """Lowest Linux driver that runs this CUDA under minor-version compatibility (with its caveats)."""
    return _driver_entry(cuda)["compat"]


def driver_version(text: str) -> tuple[int, ...]:
    """'535.104.05' -> (535, 104, 5)."""
    try:
        return tuple(int(p) for p in str(text).strip().split("."))
    except ValueError:
        raise InputError(f"{text!r} is not a driver version", fix="write it as nvidia-smi prints it, e.g. 535.104.05") from None


def driver_status(driver: str, cuda: str) -> str:
    """'ok' (driver >= the toolkit's), 'compat' (runs only under minor-version compatibility) or 'too-old'."""
    have = driver_version(driver)
    if have >= driver_version(min_driver(cuda)):
        return "ok"
    if have >= driver_version(min_driver_compat(cuda)):
        return "compat"
    return "too-old"


def torch_arch_entry(torch: str, cuda: str) -> dict | None:
    """The data entry for the official torch wheel of that version and CUDA flavour (archs, evidence)."""
    try:
        version = Version(torch).public
    except InvalidVersion:
        return None
    key = _cuda_key(cuda)
    for entry in data().torch_archs:
        if key in entry["cuda"] and entry["torch"].contains(version, prereleases=True):
            return entry
    return None


def torch_arch_list(torch: str, cuda: str) -> list[str] | None:
    """Architectures compiled into the official torch wheel (None when the data has no entry)."""
    entry = torch_arch_entry(torch, cuda)
    return list(entry["archs"]) if entry else None
