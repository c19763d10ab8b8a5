"""Rule kind `flash-attn-wheel`: the row's flash_attn has a prebuilt wheel for its torch, CUDA, Python and ABI."""

from __future__ import annotations

from packaging.version import Version

from imagematrix.knowledge import flash_attn
from imagematrix.model import paths
from imagematrix.model.matrix import Row
from imagematrix.rules import common, schema


def wheel_key(row: Row) -> tuple[str, str, str, bool]:
    """(CUDA major, torch major.minor, Python, cxx11 ABI) of the flash-attn wheel a row needs."""
    torch_mm = ".".join(str(p) for p in Version(row.torch).release[:2])
    return row.cuda.split(".")[0], torch_mm, row.python, flash_attn.cxx11abi(row.torch)


def flash_attn_wheels(ruleset: schema.Ruleset, version: str) -> schema.WheelRelease | None:
    return next((r for r in ruleset.flash_attn_wheels if version in r.versions), None)


def _describe(key: tuple[str, str, str, bool]) -> str:
    cuda, torch, python, abi = key
    return f"cu{cuda} torch {torch} Python {python} cxx11abi{'TRUE' if abi else 'FALSE'}"


def check(spec: schema.RuleSpec, row: Row, resolution: dict | None, ruleset: schema.Ruleset) -> list[schema.RuleResult]:
    if row.flash_attn is None:
        return [common.result(spec, row, passed=True, applicable=False, message="no flash_attn pin (flash-attn not installed)")]
    key = wheel_key(row)
    name = flash_attn.wheel_name(flash_attn=row.flash_attn, cuda=row.cuda, torch=row.torch, python=row.python)
    alternatives = [v for r in ruleset.flash_attn_wheels if r.evidence == "verified" and key in r.wheels()
                    for v in r.versions]
    alt = f"; releases with that wheel: {', '.join(alternatives)}" if alternatives else ""
    release = flash_attn_wheels(ruleset, row.flash_attn)
    if release is None:
        known = ", ".join(v for r in ruleset.flash_attn_wheels for v in r.versions)
        return [common.result(spec, row, passed=False, severity="warn",
                        message=f"flash-attn {row.flash_attn} is not in the wheel table (known: {known}): "
                                f"cannot tell whether {name} exists{alt}",
                        fix=f"add flash-attn {row.flash_attn} to flash_attn_wheels in {paths.RULES.relative_to(paths.ROOT)} "
                            "(from its release assets), or pick a listed release")]
    wheels = release.wheels()
    if key in wheels:
        if release.evidence == "verified":
            return [common.result(spec, row, passed=True, message=f"{name} is published ({release.source})")]
        return [common.result(spec, row, passed=False, severity="warn",
                        message=f"{name} is expected but unverified ({release.source})",
                        fix=f"check the v{row.flash_attn} release assets and mark the entry verified, or pick a "
                            f"verified release{alt.replace('; releases with that wheel:', ':')}")]
    torches = sorted({w[1] for w in wheels if (w[0], w[2], w[3]) == (key[0], key[2], key[3])}, key=Version)
    offer = (f"flash-attn {row.flash_attn} has {_describe(key).replace(f'torch {key[1]} ', '')} wheels for torch "
             f"{', '.join(torches)} only") if torches else f"flash-attn {row.flash_attn} has no wheel for {_describe(key)}"
    compiled = _compiled(row)
    if compiled:
        return [common.result(spec, row, passed=True, message=f"no prebuilt {name} ({offer}{alt}): {compiled}")]
    message = f"no prebuilt {name} ({offer}{alt}), and no compile: {_why_no_compile(row)}: {spec.symptom}"
    if release.evidence != "verified":
        return [common.result(spec, row, passed=False, severity="warn", message=message + " (wheel list unverified)")]
    return [common.result(spec, row, passed=False, message=message)]


def _why_no_compile(row: Row) -> str:
    data = paths.FLASH_ATTN.relative_to(paths.ROOT)
    if flash_attn.toolchain(row.cuda) is None:
        return f"{data} has no CUDA {row.cuda} compiler wheels (toolchains)"
    return f"no GPU architecture that flash-attn {row.flash_attn} and torch {row.torch} both support"


def _compiled(row: Row) -> str | None:
    """How the build gets the wheel without a prebuilt one: compiled once per key from PyPI's sdist (which `lock`
    records in the row's lock, from the index: no data entry needed)."""
    if flash_attn.toolchain(row.cuda) is None or not flash_attn.archs(row):
        return None
    archs = flash_attn.archs(row)
    minutes = flash_attn.compile_estimate(len(archs), 16) / 60
    return (f"the build compiles it from PyPI's sdist for sm_{', sm_'.join(a.replace('.', '') for a in archs)} "
            f"(about {minutes:.0f} min on 16 cores) once per key, then reuses flash-attn-wheels:{flash_attn.key(row)} "
            "from the registry; a --flash-attn-mirror or --flash-attn-index with that wheel skips the compile")
