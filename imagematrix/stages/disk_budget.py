"""The free disk a row's build needs, from its size baseline (stages/sizes): `build.py disk` and the workflow's
check before a job starts (a job that would fill the runner's disk fails first, saying how much it needs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagematrix.stages.sizes import Baseline, baseline_path, load

# What one row's build holds on disk at its peak, as multiples of the image's uncompressed size U (from the
# row's baseline): BuildKit's snapshots of every layer (1 U), the uv cache mount, which keeps each wheel unpacked
# (about the venv, ~1 U), the registry cache's mode=max blobs (gzip: 3.91 GB for the 7.77 GB verl 0.3 image,
# bench metric 10, so ~0.5 U), and the daemon's own copy from --load (1 U); plus headroom for logs, the smoke
# tests' containers and the Python environment. Reasoned from sizes/*.json and the bench, not measured on a runner.
DISK_FACTOR = 3.5
DISK_HEADROOM = 2 * 1024**3
# A row without a baseline: about the largest measured image (9.55 GB, verl 0.9.1 + vLLM 0.31.0).
DEFAULT_IMAGE_BYTES = 10 * 1000**3


@dataclass(frozen=True)
class DiskBudget:
    need: int  # bytes
    image: int  # the image size it is computed from
    basis: str  # where that size came from


def disk_budget(baseline: Baseline | None) -> DiskBudget:
    """The free disk a build of the row needs, from its baseline's size (or the default without one)."""
    if baseline is not None and baseline.size > 0:
        image, basis = baseline.size, f"sizes/{baseline.row}.json ({gb(baseline.size)} GB image)"
    else:
        image, basis = DEFAULT_IMAGE_BYTES, f"no size baseline: assumed {gb(DEFAULT_IMAGE_BYTES)} GB"
    return DiskBudget(int(image * DISK_FACTOR) + DISK_HEADROOM, image, basis)


def platforms_budget(root: Path, row_id: str, names: list[str]) -> DiskBudget:
    """The disk a build of several images of one row needs at once (a multi-platform row: each platform's image,
    names being their contexts, `<row-id>@linux-arm64`): the sum of each one's budget, an image without its own
    baseline taken at the row's (amd64) size."""
    own, budgets = load(baseline_path(root, row_id)), []
    for name in names:
        found = load(baseline_path(root, name))
        budget = disk_budget(found or own)
        budgets.append(budget if found or name == row_id else
                       DiskBudget(budget.need, budget.image, f"{name} has no baseline, taken as {budget.basis}"))
    if len(budgets) == 1:
        return budgets[0]
    return DiskBudget(sum(b.need for b in budgets), sum(b.image for b in budgets),
                      f"{len(budgets)} images: " + "; ".join(b.basis for b in budgets))


def disk_verdict(row: str, budget: DiskBudget, free: int, where: str) -> str | None:
    """None when free covers the budget, else the message that fails the job before any work."""
    if free >= budget.need:
        return None
    return (f"row {row}: {gb(free)} GB free on {where}, the build needs about {gb(budget.need)} GB "
            f"({DISK_FACTOR} x the image + {gb(DISK_HEADROOM)} GB; {budget.basis})\n"
            "  fix: free space first (hosted runners: remove the preinstalled toolchains the job does not need, as "
            "the workflow's 'free disk space' step does), use a larger runner, or build this row on a self-hosted one")


def gb(size: int) -> str:
    return f"{size / 1000**3:.1f}"
