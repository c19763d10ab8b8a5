"""Resolution and locks, with uv (`uv pip compile`), for the row's Python version on each of its platforms (linux
x86_64; linux aarch64 for a row that names linux/arm64).

A row's resolution input is its pins (verl with its `[vllm]` extra, so uv checks verl's declared vLLM range),
plus uv overrides for pins that deliberately leave a declared range. The lock is `locks/<row-id>.txt`:
uv's hash-pinned output under a header that records the digest of the resolution input, so `validate`
can tell when a lock no longer matches its row.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from imagematrix import rules
from imagematrix.knowledge import platform_wheels, requires, requires_python, verl
from imagematrix.model import fields, lockfile, paths, secrets
from imagematrix.model.errors import InputError, InputErrors, RuntimeFailure
from imagematrix.model.matrix import Row
from imagematrix.tools import uv


@dataclass(frozen=True)
class Inputs:
    """What uv resolves for a row."""

    requirements: str
    overrides: str
    python: str
    platform: str = fields.DEFAULT_PLATFORM  # a platform of model/fields.PLATFORMS

    @property
    def uv_platform(self) -> str:
        return uv.PLATFORMS[self.platform]

    def digest(self) -> str:
        # amd64's payload is the one written before rows had platforms: its locks keep their digests
        payload = json.dumps(
            {"format": lockfile.LOCK_FORMAT, "platform": self.uv_platform, "python": self.python,
             "requirements": self.requirements, "overrides": self.overrides},
            sort_keys=True,
        )
        return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


def inputs(row: Row, platform: str = fields.DEFAULT_PLATFORM) -> Inputs:
    overridden = {canonicalize_name(n) for n in row.overrides}
    lines = [verl.requirement(row.verl, "vllm" in overridden, row.verl_extras), f"vllm=={row.vllm}", f"torch=={row.torch}",
             f"tensordict=={row.tensordict}", f"transformers=={row.transformers}"]
    lines += [f"{name}=={version}" for name, version in sorted(row.extras.items())]
    if row.flash_attn:
        # flash-attn itself is a prebuilt wheel installed with --no-deps (PyPI has only its sdist);
        # its one runtime dependency besides torch is locked here.
        lines.append("einops")
    overrides = [f"{name}=={o.version}" for name, o in sorted(row.overrides.items())]
    return Inputs(requirements="\n".join(lines) + "\n",
                  overrides="\n".join(overrides) + ("\n" if overrides else ""),
                  python=row.python, platform=platform)


def compile_(row: Row, *, hashes: bool, offline: bool = False, exclude_newer: str | None = None,
             matrix_path: Path | None = None, refresh: bool = False, platform: str = fields.DEFAULT_PLATFORM,
             constraints: str = "") -> str:
    """Run `uv pip compile` for the row on platform; returns uv's requirements output. refresh: uv revalidates its
    whole cache with the index (uv.compile_requirements). constraints: uv constraints text (a lock's own pins, when
    `lock --check` asks whether a lock still resolves as written). On a platform other than linux/amd64 the packages with
    native code (knowledge/platform-wheels.yaml) come only as wheels: their sdists would compile for hours under
    emulation, or fail.

    Unsatisfiable pins raise InputError with the resolver's explanation (at the row's line in matrix_path, when
    given); anything else RuntimeFailure.
    """
    spec = inputs(row, platform)
    only_binary = platform_wheels.native_packages() if platform != fields.DEFAULT_PLATFORM else ()
    proc = uv.compile_requirements(spec.requirements, row.python, overrides=spec.overrides, hashes=hashes, offline=offline,
                                   exclude_newer=exclude_newer, refresh=refresh, python_platform=spec.uv_platform,
                                   only_binary=only_binary, constraints=constraints)
    if proc.returncode == 0:
        return proc.stdout
    message = secrets.redact_text(proc.stderr.strip())  # an index URL with credentials stays out of messages
    if offline:
        raise RuntimeFailure(message)
    if "No solution found" in message or "requires-python" in message.lower() or "unsatisfiable" in message:
        if platform != fields.DEFAULT_PLATFORM:
            raise _platform_conflict(row, platform, message, matrix_path)
        raise _conflict(row, message, matrix_path)
    raise RuntimeFailure(f"row {row.id}: uv pip compile failed{_on(platform)}:\n{_indent(message)}")


def resolve(row: Row, *, hashes: bool = False, exclude_newer: str | Callable[[], str | None] | None = None,
            cache_first: bool = True, matrix_path: Path | None = None, platform: str = fields.DEFAULT_PLATFORM) -> str:
    """Check the row's Python against its pins, then its pins against each other's declared requirements
    (declared_conflicts: a conflict there is the verdict, without uv), then resolve: from uv's cache first (fast when
    warm; validate), then over the network. exclude_newer: resolve as the index stood then (a lock's recorded time),
    or a function giving that time, called only when uv runs (validate's era of a new row reads the index). A lock
    resolves over the network only (cache_first=False), with uv's cache revalidated (--refresh): a cache older
    than exclude_newer would pick older files, and uv served index pages from its cache even when online.
    matrix_path: the row's matrix file, so a conflict names its file and line. platform: one of the row's platforms;
    on linux/arm64 a pin that knowledge/platform-wheels.yaml records without an aarch64 wheel is refused first,
    naming the package, without uv."""
    errors = requires_python.check(row)
    if errors:
        raise InputErrors(errors)
    causes = declared_conflicts(row)
    if causes:
        raise _conflict(row, "\n".join([*causes, DECLARED_VERDICT]), matrix_path)
    if platform != fields.DEFAULT_PLATFORM:
        missing = platform_wheels.missing_wheels(row.pins(), row.python)
        if missing:
            raise _platform_conflict(row, platform, "\n".join(missing), matrix_path,
                                     f"(recorded in {platform_wheels.PLATFORM_WHEELS.relative_to(paths.ROOT)}, read "
                                     f"from the index {platform_wheels.load().read})")
    if callable(exclude_newer):
        exclude_newer = exclude_newer()
    if not cache_first:
        return compile_(row, hashes=hashes, offline=False, exclude_newer=exclude_newer, matrix_path=matrix_path,
                        refresh=True, platform=platform)
    try:
        return compile_(row, hashes=hashes, offline=True, exclude_newer=exclude_newer, platform=platform)
    except RuntimeFailure:
        # Never a verdict: offline, uv answers "there is no version of X" for a cache miss (verl[vllm]==V), for an
        # index page cached before a release, and for a dead index alike. Only the network resolution decides.
        return compile_(row, hashes=hashes, offline=False, exclude_newer=exclude_newer, matrix_path=matrix_path,
                        platform=platform)


DECLARED_VERDICT = ("so the requirements are unsatisfiable (decided from the pins' declared requirements, their "
                    "wheels' Requires-Dist, without running uv)")


def declared_conflicts(row: Row) -> list[str]:
    """The row's exact pins that exclude one another by what they declare: one line per requirement of a pin (its
    wheel's Requires-Dist, for the row's Python on linux x86_64, with the extras the row installs) that the version
    another pin fixes does not satisfy, e.g. `vllm==0.10.0 depends on torch==2.7.1, and you require torch==2.6.0`.

    Each line proves that uv finds no solution, whatever else the index holds or when it was read: an exact pin
    leaves the resolver no other version, and a release's files, so its Requires-Dist, never change. One assumption
    remains: the METADATA read is that of the release's first linux x86_64 (or pure) wheel, as the rules read it
    (tools/pypi.wheel_file), taken to declare what the wheel uv installs for the row declares. A requirement on a
    package the row overrides does not count (uv replaces it with the override). [] decides nothing: a conflict through unpinned packages, a marker
    or specifier not decided here (requires.surely_*), a pin whose metadata cannot be read are left to uv."""
    spec = inputs(row)
    overridden = {canonicalize_name(Requirement(line).name) for line in spec.overrides.splitlines() if line}
    pinned: dict[str, tuple[Requirement, str]] = {}
    for line in spec.requirements.splitlines():
        req = Requirement(line)
        version = requires.exact_pin(req)
        if version is not None:
            pinned[canonicalize_name(req.name)] = (req, version)

    def declared(item: tuple[Requirement, str]) -> tuple[str, ...] | None:
        try:
            return requires.requires_dist(item[0].name, item[1])
        except RuntimeFailure:
            return None  # uv decides

    # read in parallel, each in a copy of this context (requires.answered_by holds there): on a cold cache each is a
    # few HTTP range reads of a wheel, warm a file on disk
    contexts = [contextvars.copy_context() for _ in pinned]
    with ThreadPoolExecutor(max_workers=len(pinned) or 1) as pool:
        read = list(pool.map(lambda context, item: context.run(declared, item), contexts, pinned.values()))
    causes = []
    for (name, (req, version)), lines in zip(pinned.items(), read, strict=True):
        if lines is None:
            continue
        # an overridden package is installed as its override says, without the extras of the row's line
        extras = set() if name in overridden else set(req.extras)
        for dep in requires.surely_applying(lines, req.name, extras, row.python, among=set(pinned)):
            target = canonicalize_name(dep.name)
            if target not in pinned or target in overridden or dep.url:
                continue
            pin = pinned[target][1]
            if requires.surely_excludes(dep.specifier, pin):
                causes.append(f"{req.name}=={version} depends on {dep.name}{requires.shown(dep.specifier)}, and you "
                              f"require {pinned[target][0].name}=={pin}")
    return causes


def _where(row: Row, matrix_path: Path | None, field: str | None = None) -> str:
    """`<matrix>:<line>, row <id>[, field <f>]`: the line of the field in the row (or of the default it inherits),
    of the row without a field; `row <id>[, field <f>]` alone without a matrix path."""
    place = f"row {row.id}" + (f", field {field}" if field else "")
    if matrix_path is None:
        return place
    line = rules.field_line(matrix_path, row, field)
    return f"{matrix_path}:{line}, {place}" if line else f"{matrix_path}, {place}"


def _conflict(row: Row, message: str, matrix_path: Path | None = None) -> InputError:
    return InputError(f"pins cannot be resolved together:\n{_indent(message)}", where=_where(row, matrix_path),
                      fix="change the conflicting pin (or add an `overrides:` entry with a reason if the conflict is "
                          "deliberate)")


def _on(platform: str) -> str:
    return "" if platform == fields.DEFAULT_PLATFORM else f" for {platform}"


# uv's words for a package it has no installable file of on the platform: `vllm==0.7.2 has no usable wheels`
# (an --only-binary package), `tensordict==0.6.2 has no wheels with a matching platform tag`.
_NO_WHEEL_RE = re.compile(r"\b([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?) has no (?:usable wheels|wheels with a matching platform tag)")


def _platform_conflict(row: Row, platform: str, message: str, matrix_path: Path | None = None,
                       source: str = "") -> InputError:
    """A platform the pins cannot serve: the packages without a wheel for it first, then uv's (or the data's) words."""
    named = sorted({f"{m.group(1)} {m.group(2)}" for m in _NO_WHEEL_RE.finditer(message)})
    lead = (f"{platform}: no linux aarch64 wheel of {', '.join(named)} on the index, so the pins cannot serve "
            f"{platform}" if named else f"the pins cannot serve {platform}")
    return InputError(f"{lead} {source}".rstrip() + f":\n{_indent(message)}",
                      where=_where(row, matrix_path, "platforms"),
                      fix=f"remove {platform} from the row's `platforms`, or pin releases that ship linux aarch64 wheels "
                          f"({platform_wheels.PLATFORM_WHEELS.relative_to(paths.ROOT)} lists them per package)")


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def check_cuda(row: Row, entries: dict[str, lockfile.LockEntry], matrix_path: Path | None = None,
               platform: str = fields.DEFAULT_PLATFORM) -> InputError | None:
    cuda = lockfile.torch_cuda(entries)
    if cuda is None and platform != fields.DEFAULT_PLATFORM:
        return InputError(
            f"{platform}: torch {row.torch} from the index is CPU-only on linux aarch64 (no CUDA runtime among the "
            "dependencies of its aarch64 wheel): its image could not use a GPU",
            where=_where(row, matrix_path, "platforms"),
            fix=f"remove {platform} from the row's `platforms`, or pin a torch whose aarch64 wheel on the index is "
                "built with CUDA (2.11.0 and 2.13.0 are)")
    if cuda is not None and cuda != row.cuda:
        return InputError(
            f"cuda is {row.cuda} but torch {row.torch} from PyPI is built for CUDA {cuda}{_on(platform)}",
            where=_where(row, matrix_path, "cuda"),
            fix=f"set `cuda: \"{cuda}\"` (the CUDA of the torch wheel that gets installed)",
        )
    return None


def parallel(func, rows: list[Row], jobs: int = 4) -> list[tuple[Row, object]]:
    """Run func(row) for each row in threads; returns (row, result or exception) in row order."""

    def call(row: Row):
        try:
            return func(row)
        except (InputError, RuntimeFailure) as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(zip(rows, pool.map(call, rows), strict=True))
