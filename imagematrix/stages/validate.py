"""Validate stage: every row's schema (already checked by loading), resolution with uv, compatibility rules,
source patches, CUDA of the torch wheel, lock freshness and, for a row whose lock is current, its render (in memory:
what render would refuse, validate refuses first), as one report per row. Nothing is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imagematrix import rules
from imagematrix.knowledge import envdefaults, patches
from imagematrix.model import fields, lockfile
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.matrix import Matrix, Row
from imagematrix.stages import locks, render, resolve


@dataclass
class RowReport:
    row: Row
    resolution: str  # "ok", "unsatisfiable" or "failed"
    checks: list = field(default_factory=list)  # the compatibility rules' verdicts
    patches: str = ""  # how many apply (and are skipped), or "invalid"
    packages: int = 0
    torch_cuda: str | None = None
    cuda_ok: bool = True
    lock: str = ""  # locks.lock_status: "ok", "missing", "stale" or "broken"; "" when the row did not resolve
    # each platform besides linux/amd64: its lock's status as `lock`, or "unsatisfiable"/"failed" when it did not resolve
    platforms: dict[str, str] = field(default_factory=dict)


@dataclass
class Report:
    rows: list[RowReport] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)  # bad input: exit 2
    failures: list[str] = field(default_factory=list)  # runtime failures: exit 1
    warnings: list[str] = field(default_factory=list)


def validate(matrix: Matrix, rows: list[Row], patch_path: Path, jobs: int = 4) -> Report:
    patch_list = patches.load(patch_path)
    # each row as its lock was resolved (the lock's recorded time), so validate and lock agree; asked only when uv
    # runs (a new row's era reads the index; a row whose pins conflict by their declared requirements needs none)
    results = resolve.parallel(
        lambda r: lockfile.parse(resolve.resolve(r, exclude_newer=lambda: locks.resolution_time(matrix, r),
                                                 matrix_path=matrix.path)), rows, jobs)
    # every other platform of a row (linux/arm64) at the time of its own lock, else of the row's amd64 lock
    others = [(row, platform) for row, platform in locks.row_platforms(rows) if platform != fields.DEFAULT_PLATFORM]
    other_results = resolve.parallel(
        lambda pair: lockfile.parse(resolve.resolve(
            pair[0], exclude_newer=lambda: locks.resolution_time(matrix, pair[0], platform=pair[1]),
            matrix_path=matrix.path, platform=pair[1])), others, jobs)
    report = Report()
    env_defaults: list = []  # loaded once, for the first row that renders
    for row, result in results:
        # Compatibility rules, with uv's resolution when there is one (for ray & co). A row whose resolution
        # stopped on Requires-Python has already reported what python-requires would.
        checks = rules.evaluate(row, result if isinstance(result, dict) else None,
                                skip=("python-requires",) if isinstance(result, InputError) else ())
        report.errors.extend(rules.to_errors(row, checks, matrix.path))
        report.warnings.extend(rules.warnings(row, checks))
        entry = RowReport(row=row, resolution="ok", checks=checks)
        report.rows.append(entry)
        try:
            selection = patches.select(row, patch_list)
            entry.patches = str(len(selection.applied)) + (f" ({len(selection.skipped)} skipped)" if selection.skipped else "")
        except InputError as exc:
            report.errors.append(exc)
            entry.patches = "invalid"
        if isinstance(result, InputError):
            report.errors.append(result)
            entry.resolution = "unsatisfiable"
            continue
        if isinstance(result, RuntimeFailure):
            report.failures.append(str(result))
            entry.resolution = "failed"
            continue
        cuda_problem = resolve.check_cuda(row, result, matrix.path)
        if cuda_problem:
            report.errors.append(cuda_problem)
        entry.packages, entry.torch_cuda, entry.cuda_ok = len(result), lockfile.torch_cuda(result), cuda_problem is None
        entry.lock = locks.lock_status(matrix, row)
        if entry.lock != "ok":
            report.errors.append(InputError(locks.status_message(matrix, row, entry.lock), where=f"row {row.id}",
                                            fix=locks.lock_fix(matrix, row)))
        elif entry.patches != "invalid":  # a template's or a data file's error, the same for every row: once
            seen = {e.render() for e in report.errors}
            report.errors.extend(e for e in _render_problems(matrix, row, patch_list, env_defaults) if e.render() not in seen)
    _other_platforms(matrix, report, other_results, patch_list, env_defaults)
    return report


def _other_platforms(matrix: Matrix, report: Report, results, patch_list, env_defaults: list) -> None:
    """Each row's other platforms (linux/arm64) into its report: why one did not resolve, the CUDA of its torch, its
    lock's status and, with a current lock, its context rendered in memory."""
    entries = {r.row.id: r for r in report.rows}
    for (row, platform), result in results:
        entry = entries[row.id]
        if isinstance(result, InputError):
            report.errors.append(result)
            entry.platforms[platform] = "unsatisfiable"
            continue
        if isinstance(result, RuntimeFailure):
            report.failures.append(str(result))
            entry.platforms[platform] = "failed"
            continue
        cuda_problem = resolve.check_cuda(row, result, matrix.path, platform)
        if cuda_problem:
            report.errors.append(cuda_problem)
        status = entry.platforms[platform] = locks.lock_status(matrix, row, platform)
        if status != "ok":
            report.errors.append(InputError(locks.status_message(matrix, row, status, platform),
                                            where=f"row {row.id}, platform {platform}",
                                            fix=locks.lock_fix(matrix, row, platform)))
        elif entry.patches != "invalid":  # the platform's context, rendered in memory as render would
            seen = {e.render() for e in report.errors}
            report.errors.extend(e for e in _render_problems(matrix, row, patch_list, env_defaults, platform)
                                 if e.render() not in seen)


def _render_problems(matrix: Matrix, row: Row, patch_list, env_defaults: list,
                     platform: str = fields.DEFAULT_PLATFORM) -> list[InputError]:
    """Why render would refuse the row (its context rendered in memory, nothing written): [] when it would not.
    env_defaults: a one-item cache of the loaded defaults, shared by the rows of one validate."""
    try:
        if not env_defaults:
            env_defaults.append(envdefaults.load())
        render.render_row(matrix, row, patch_list, env_defaults[0], platform)
    except InputError as exc:
        return [exc]
    return []
