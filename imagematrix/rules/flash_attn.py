"""Rule kind `flash-attn-wheel`: the row's flash_attn has a prebuilt wheel for its torch, CUDA, Python and ABI."""

from __future__ import annotations

from packaging.version import Version

from imagematrix.knowledge import flash_attn
from imagematrix.model import paths
from imagematrix.model.flash_attn import WHEEL_REPOSITORY, WheelSpec
from imagematrix.model.matrix import Row
from imagematrix.rules import common, schema


def _describe(wheel: WheelSpec) -> str:
    return f"cu{wheel.cuda_major} torch {wheel.torch_mm} Python {wheel.python} cxx11abi{wheel.abi}"


def check(spec: schema.RuleSpec, row: Row, resolution: dict | None, ruleset: schema.Ruleset) -> list[schema.RuleResult]:
    wheel = flash_attn.wheel_spec(row)
    if wheel is None:
        return [common.result(spec, row, passed=True, applicable=False, message="no flash_attn pin (flash-attn not installed)")]
    key, name, table = wheel.table_key, wheel.filename, flash_attn.data().prebuilt_wheels
    alternatives = [v for r in table if r.evidence == "verified" and key in r.wheels() for v in r.versions]
    alt = f"; releases with that wheel: {', '.join(alternatives)}" if alternatives else ""
    release = flash_attn.prebuilt_release(row.flash_attn)
    if release is None:
        known = ", ".join(v for r in table for v in r.versions)
        return [common.result(spec, row, passed=False, severity="warn",
                        message=f"flash-attn {row.flash_attn} is not in the wheel table (known: {known}): "
                                f"cannot tell whether {name} exists{alt}",
                        fix=f"add flash-attn {row.flash_attn} to prebuilt_wheels in "
                            f"{paths.FLASH_ATTN.relative_to(paths.ROOT)} (from its release assets), or pick a listed release")]
    if wheel.prebuilt == "verified":
        return [common.result(spec, row, passed=True, message=f"{name} is published ({release.source})")]
    if wheel.prebuilt == "assumed":
        return [common.result(spec, row, passed=False, severity="warn",
                        message=f"{name} is expected but unverified ({release.source})",
                        fix=f"check the v{row.flash_attn} release assets and mark the entry verified, or pick a "
                            f"verified release{alt.replace('; releases with that wheel:', ':')}")]
    wheels = release.wheels()
    torches = sorted({w[1] for w in wheels if (w[0], w[2], w[3]) == (key[0], key[2], key[3])}, key=Version)
    offer = (f"flash-attn {row.flash_attn} has {_describe(wheel).replace(f'torch {wheel.torch_mm} ', '')} wheels for "
             f"torch {', '.join(torches)} only") if torches else f"flash-attn {row.flash_attn} has no wheel for {_describe(wheel)}"
    compiled = _compiled(wheel)
    if compiled:
        return [common.result(spec, row, passed=True, message=f"no prebuilt {name} ({offer}{alt}): {compiled}")]
    message = f"no prebuilt {name} ({offer}{alt}), and no compile: {_why_no_compile(wheel)}: {spec.symptom}"
    if release.evidence != "verified":
        return [common.result(spec, row, passed=False, severity="warn", message=message + " (wheel list unverified)")]
    return [common.result(spec, row, passed=False, message=message)]


def _why_no_compile(wheel: WheelSpec) -> str:
    data = paths.FLASH_ATTN.relative_to(paths.ROOT)
    if flash_attn.toolchain(wheel.cuda) is None:
        return f"{data} has no CUDA {wheel.cuda} compiler wheels (toolchains)"
    return f"no GPU architecture that flash-attn {wheel.version} and torch {wheel.torch} both support"


def _compiled(wheel: WheelSpec) -> str | None:
    """How the build gets the wheel without a prebuilt one: compiled once per key from PyPI's sdist (which `lock`
    records in the row's lock, from the index: no data entry needed)."""
    if flash_attn.toolchain(wheel.cuda) is None or not wheel.archs:
        return None
    minutes = flash_attn.compile_estimate(len(wheel.archs), 16) / 60
    return (f"the build compiles it from PyPI's sdist for sm_{', sm_'.join(wheel.arch_tags)} "
            f"(about {minutes:.0f} min on 16 cores) once per key, then reuses {WHEEL_REPOSITORY}:{wheel.key} "
            "from the registry; a --flash-attn-mirror or --flash-attn-index with that wheel skips the compile")
