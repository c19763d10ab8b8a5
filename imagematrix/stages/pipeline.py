"""One build request over its rows: each row walks the steps of stages/steps.py in order (check -> base -> flash-attn
-> build -> smoke -> size -> coverage -> push -> attest), reporting each step and what it does to a Progress (the console's is in
cli/build.py).

The rows' build contexts are render's output, taken as they are (stages/generated.read: refused, with the fix, when
stale). A row whose tag already carries the same input digest is skipped. A failing row is reported, never pushed
under its final tag, and does not stop the others.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from imagematrix.model import paths, tags
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.fields import DEFAULT_PLATFORM, platform_slug
from imagematrix.model.matrix import Matrix, Row
from imagematrix.model.secrets import redact_text
from imagematrix.stages import attest, builder, coverage_row, flash_attn, generated, locks, multiarch, sizes, steps
from imagematrix.stages.publish import PUSH_MODES, Outcome, remote_labels_of
from imagematrix.stages.render import Rendered
from imagematrix.tools import docker, host


@dataclass(frozen=True)
class BuildRequest:
    """What `build.py build` asks for, whatever the rows: where to, how far (push: final tags; candidate, the tested
    candidate tag only (CI: GPU jobs pull it, `promote` retags it); none, nothing), and each concern's inputs.

    size: against the row's baseline (sizes/<row-id>.json beside the matrix) when it was measured for the same input
    digest, the image may grow by size_margin (a fraction) at most, else the row fails before the push. A pushed row
    without a baseline, or whose inputs changed, records its size (record_size: whatever the check says, also with
    nothing pushed).

    coverage: the GPU verdict read from the image's binaries against the row's baseline (coverage/<row-id>.json):
    a required library that lost a kernel fails the row before the push. A pushed row without a baseline records it
    (record_coverage: whatever the check says, also with nothing pushed)."""

    matrix: Matrix
    registry: str
    log_dir: Path
    buildkit: builder.BuildInputs = builder.BuildInputs()
    flash_attn: flash_attn.Sources = flash_attn.Sources()
    signing: attest.Signing = attest.Signing()
    push: str = "final"
    cache_registry: bool = False
    rebuild: bool = False  # build, test and push even when the registry has the row's input digest
    size_margin: float = sizes.DEFAULT_MARGIN
    record_size: bool = False
    record_coverage: bool = False
    # one platform's images only (CI's native arm64 runners): each under its candidate tag, never a final tag
    platform: str | None = None

    def __post_init__(self) -> None:
        if self.push not in PUSH_MODES:
            raise ValueError(f"push must be one of {PUSH_MODES}, not {self.push!r}")
        if self.platform and self.push == "final":
            raise InputError(f"--platform {self.platform} builds one image of a row whose final tag is a multi-arch "
                             "index of all its platforms", where="build",
                             fix="push it as its candidate tag (--push candidate) or not at all (--push none); "
                                 "without --platform, build pushes every platform's image and the index")


class Progress(Protocol):
    """Where a build tells what it does: a row starts, a step of it starts, a step says what it is doing, a row
    ends; and notes outside any row."""

    def note(self, message: str) -> None: ...
    def row_started(self, row_id: str, index: int, total: int) -> None: ...
    def step(self, row_id: str, name: str) -> None: ...
    def say(self, row_id: str, message: str) -> None: ...
    def row_done(self, outcome: Outcome) -> None: ...


@dataclass
class RowJob:
    """One row on its way through the steps: the request, the row's context, and what each step leaves."""

    request: BuildRequest
    item: Rendered
    final: list[str]  # the row's published tags, its own first
    progress: Progress
    stack: contextlib.ExitStack
    known: dict[str, dict | None] = field(default_factory=dict)  # tags' labels read for every row at once (check)
    started_at: str = field(default_factory=attest.now)
    base_ref: str | None = None
    wheel: flash_attn.Wheel | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    size: tuple[sizes.Verdict, sizes.Baseline] | None = None
    size_note: str = ""
    coverage: coverage_row.Outcome | None = None
    coverage_note: str = ""
    pushed: dict[str, str] = field(default_factory=dict)
    index: str | None = None  # a multi-platform row's pushed index digest (steps.push_index)
    image_digest: str | None = None  # and each of its platform images' digest, pushed under its candidate tag
    _secrets: dict[str, Path] | None = None

    row: Row = field(init=False)
    digest: str = field(init=False)
    repo: str = field(init=False)
    candidate_tag: str = field(init=False)
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.row, self.digest = self.item.row, self.item.context_digest()
        self.repo = tags.repository(self.request.registry)
        self.candidate_tag = tags.candidate_tag(self.row.id, self.digest)
        # another platform's logs (build.log, smoke.log, manifest, SBOM, provenance) beside amd64's, in its folder
        self.logs = self.request.log_dir / self.row.id / ("" if self.native_platform else platform_slug(self.platform))
        self.logs.mkdir(parents=True, exist_ok=True)

    @property
    def platform(self) -> str:
        return self.item.platform

    @property
    def native_platform(self) -> bool:
        """Whether this is the row's linux/amd64 image (every single-platform row's only one)."""
        return self.item.platform == DEFAULT_PLATFORM

    @property
    def candidate(self) -> str:
        return f"{self.repo}:{self.candidate_tag}"

    @property
    def context_dir(self) -> Path:
        return generated.generated_dir(self.request.matrix) / self.item.name

    def say(self, message: str) -> None:
        self.progress.say(self.row.id, message)

    def secrets(self) -> dict[str, Path]:
        """The BuildKit secret files (mode 0600), written once per row and removed when the row ends."""
        if self._secrets is None:
            directory = self.stack.enter_context(tempfile.TemporaryDirectory(prefix="secrets-", dir=paths.scratch_dir()))
            self._secrets = self.request.buildkit.write_secrets(Path(directory))
        return self._secrets

    def lock_text(self) -> str:
        """The row's lock, as render read it (its digest is in the context's record: generated.read checked it)."""
        return locks.lock_path(self.request.matrix, self.row, self.platform).read_text(encoding="utf-8")

    def outcome(self) -> Outcome:
        """The row's outcome once it went through every step."""
        if self.request.push == "final":
            detail = f"{', '.join(f'{self.repo}:{t}' for t in self.final)} {self.pushed.get(self.row.id, '')}"
        else:
            detail = self.candidate if self.pushed else f"{self.candidate} (local, not pushed)"
        notes = "\n".join(note for note in (self.size_note, self.coverage_note) if note)
        return Outcome(self.row.id, "pushed" if self.pushed else "tested", "", 0.0, f"{detail}\n{notes}")


def run_row(request: BuildRequest, item: Rendered, final: list[str], progress: Progress,
            known: dict[str, dict | None] | None = None) -> Outcome:
    """One row through the steps; a step's failure ends the row as failed at that step (error.txt in its logs).
    known: tags' labels read beforehand (publish reads every row's at once), which the check step trusts only to
    skip: a tag it lacks, or one that does not let the row skip, is read again before anything is built."""
    started, name = time.monotonic(), "check"
    with contextlib.ExitStack() as stack:
        job = RowJob(request, item, final, progress, stack, dict(known or {}))
        try:
            for step in steps.STEPS:
                if not step.when(job):
                    continue
                name = step.name
                progress.step(job.row.id, name)
                finish = step.run(job)
                if finish is not None:
                    return Outcome(job.row.id, finish.status, name, time.monotonic() - started, finish.detail)
            outcome = job.outcome()
        except (RuntimeFailure, InputError) as exc:
            message = redact_text(str(exc))  # a tool's output quoted in a failure may hold an index or mirror URL's userinfo
            (job.logs / "error.txt").write_text(message + "\n")
            return Outcome(job.row.id, "failed", name, time.monotonic() - started, message)
    outcome.seconds = time.monotonic() - started
    return outcome


def publish(request: BuildRequest, rows: list[Row], progress: Progress) -> list[Outcome]:
    """Every row of the request, in order, after what they all need: the daemon, the embedded registry when it is
    the one named, and render's output for each row, not stale."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        daemon = pool.submit(docker.require_daemon)  # `docker info` runs while the contexts are read
        try:
            if request.registry == tags.DEFAULT_REGISTRY:
                host.ensure_registry(progress.note)
            every = generated.read(request.matrix, rows, all_platforms=True)
        finally:
            daemon.result()  # no daemon is said first, as before anything else
    items = [item for item in every if item.platform == DEFAULT_PLATFORM]
    others = {}
    for item in every:
        if item.platform != DEFAULT_PLATFORM:
            others.setdefault(item.row.id, []).append(item)
    final = tags.published_tags([(r.id, r.vllm) for r in request.matrix.rows])
    outcomes = []
    if request.platform:  # one platform's image of each row that has one, on its own route (candidate or none)
        items, others = [i for i in every if i.platform == request.platform], {}
        for row in rows:
            if request.platform not in row.platforms:
                outcomes.append(Outcome(row.id, "skipped", "check", 0.0, f"no {request.platform} image: the row's "
                                        f"platforms are {', '.join(row.platforms)}"))
                progress.row_done(outcomes[-1])
    # a multi-platform row's tags are read by its own check (steps.check_index: the index and each image), once
    known = _read_tags(request, [i for i in items if i.row.id not in others], final)
    for index, item in enumerate(items, 1):
        progress.row_started(item.row.id, index, len(items))
        if item.row.id in others:
            outcome = run_multi(request, [item, *others[item.row.id]], final[item.row.id], progress)
        else:
            outcome = run_row(request, item, final[item.row.id], progress, known)
        progress.row_done(outcome)
        outcomes.append(outcome)
    return outcomes


def run_multi(request: BuildRequest, items: list[Rendered], final: list[str], progress: Progress) -> Outcome:
    """A row with several platforms (linux/amd64 first): one tag, a multi-arch index. Skipped when the tag's index
    already holds an image of each platform with that platform's input digest; else each platform's image is built,
    smoke-tested (arm64 emulated on an amd64 host), measured against its own size baseline, then each is pushed
    under its candidate tag and the index under the row's tags; each image gets its own manifest, SBOM and
    provenance (build-logs/<row>/ and build-logs/<row>/linux-arm64/), and the signature covers the index. Nothing is
    pushed unless every platform passed."""
    started, name = time.monotonic(), "check"
    with contextlib.ExitStack() as stack:
        jobs = [RowJob(request, item, final, progress, stack) for item in items]
        lead = jobs[0]
        try:
            progress.step(lead.row.id, name)
            finish = multiarch.check_index(lead, jobs)
            if finish is not None:
                return Outcome(lead.row.id, finish.status, name, time.monotonic() - started, finish.detail)
            for job in jobs:
                for step in steps.PLATFORM_STEPS:
                    if not step.when(job):
                        continue
                    name = step.name if job.native_platform else f"{step.name} ({job.platform})"
                    progress.step(job.row.id, name)
                    finish = step.run(job)
                    if finish is not None:
                        return Outcome(job.row.id, finish.status, name, time.monotonic() - started, finish.detail)
            name = "push"
            progress.step(lead.row.id, name)
            multiarch.push_index(lead, jobs)
            if lead.pushed:
                name = "attest"
                progress.step(lead.row.id, name)
                multiarch.attest_index(lead, jobs)
            outcome = lead.outcome()
        except (RuntimeFailure, InputError) as exc:
            message = redact_text(str(exc))
            (lead.logs / "error.txt").write_text(message + "\n")
            return Outcome(lead.row.id, "failed", name, time.monotonic() - started, message)
    outcome.seconds = time.monotonic() - started
    return outcome


def _read_tags(request: BuildRequest, items: list[Rendered], final: dict[str, list[str]]) -> dict[str, dict | None]:
    """The labels of the tags that decide which rows are up to date (each row's final tags, or its candidate tag),
    read together in parallel; {} when nothing is to be read, or when the reading fails (each row then reads its
    own, and fails naming why)."""
    if request.rebuild or request.push not in ("final", "candidate"):
        return {}
    wanted = [tag for item in items for tag in (
        final[item.row.id] if request.push == "final" else [tags.candidate_tag(item.row.id, item.context_digest())])]
    try:
        return remote_labels_of(request.registry, wanted)
    except RuntimeFailure:
        return {}
