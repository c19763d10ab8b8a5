"""Stage lock: locks/<row-id>.txt (hash-pinned, header with the input digest and the time the index was read at)
and locks/tools.txt; staleness.

A lock records `# exclude-newer: <time>`: re-locking an unchanged row resolves as the index stood then (uv
--exclude-newer), so it rewrites nothing; a changed row, or `lock --refresh`, takes the present time. `lock --check`
(check_locks) re-resolves each lock at its time and lists what differs: a lock is what its cutoff resolves to.
A flash-attn row's lock also records the flash-attn sdist from the index (index_sdist), which the render compiles."""

from __future__ import annotations

import datetime
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

from imagematrix.knowledge import flash_attn
from imagematrix.model import fields, lockfile, paths, secrets
from imagematrix.model.errors import InputError, InputErrors, RuntimeFailure
from imagematrix.model.matrix import Matrix, Row
from imagematrix.stages import resolve
from imagematrix.tools import pypi, pypi_releases, uv


def lock_path(matrix: Matrix, row: Row, platform: str = fields.DEFAULT_PLATFORM) -> Path:
    """locks/<row-id>.txt for linux/amd64 (where it was before rows had platforms); locks/<platform>/<row-id>.txt,
    e.g. locks/linux-arm64/<row-id>.txt, for another platform of the row."""
    if platform == fields.DEFAULT_PLATFORM:
        return matrix.root / "locks" / f"{row.id}.txt"
    return matrix.root / "locks" / fields.platform_slug(platform) / f"{row.id}.txt"


def row_platforms(rows: list[Row]) -> list[tuple[Row, str]]:
    """(row, platform) for each platform of each row, in row order: what lock and validate resolve."""
    return [(row, platform) for row in rows for platform in row.platforms]


def _label(row: Row, platform: str) -> str:
    return row.id if platform == fields.DEFAULT_PLATFORM else f"{row.id} ({platform})"


def tools_lock_path(matrix: Matrix) -> Path:
    return matrix.root / "locks" / "tools.txt"


def _uv_time(moment: datetime.datetime) -> str:
    """A UTC moment as uv's --exclude-newer takes it and locks record it (RFC 3339, seconds)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> str:
    """The present time as uv's --exclude-newer takes it."""
    return _uv_time(datetime.datetime.now(datetime.timezone.utc))


def recorded_time(path: Path) -> str | None:
    """The `# exclude-newer:` time a lock file was resolved at (None: no lock, or one written before it was kept)."""
    if not path.is_file():
        return None
    match = lockfile.EXCLUDE_NEWER_RE.search(path.read_text())
    return match.group(1) if match else None


# A new or changed row resolves as of its era: this long after the newest upload among its pins (measured on the
# verl 0.3 + vLLM 0.7.2 row, 2026-12-02: locked at its era, 2025-04-16, it installs ray 2.44.1, pyarrow 19.0.1,
# protobuf 5.29.4 and openai 1.74.0, and its image passes the smoke tests without the pyarrow pin that the lock of
# today needs (pyarrow 26 with numpy 1.26 breaks ray); locked today it takes ray 2.60.0, protobuf 7, openai 3).
ERA_MARGIN = datetime.timedelta(days=14)


def era_time(row: Row) -> str | None:
    """The row's era: ERA_MARGIN after the newest upload among its pins (flash-attn aside: it installs from its
    wheel), capped at now; None when the index does not give upload times (PEP 503 HTML pages) or cannot be read."""
    from imagematrix.tools import pypi_releases  # the index is read only for rows that are not locked yet

    newest = None
    for name, version in row.pins().items():
        if name == "flash-attn":
            continue
        try:
            found = [r for r in pypi_releases.releases(name) if Version(r.version) == Version(version)]
        except RuntimeFailure:
            return None
        if not found or not found[0].uploaded:
            return None
        uploaded = datetime.datetime.fromisoformat(found[0].uploaded.replace("Z", "+00:00"))
        newest = uploaded if newest is None or uploaded > newest else newest
    if newest is None:
        return None
    return _uv_time(min(newest + ERA_MARGIN, datetime.datetime.now(datetime.timezone.utc)))


def resolution_time(matrix: Matrix, row: Row, refresh: bool = False, as_of: str | None = None,
                    platform: str = fields.DEFAULT_PLATFORM) -> str:
    """The time to resolve the row at: as_of when given (an explicit cutoff); now with refresh; its lock's while
    the lock was written for these pins (current, or broken by an edit of its body, which re-locking then repairs
    to the same bytes); else, for a new or changed row, its era (era_time), or now where the index gives no
    upload times. Another platform than linux/amd64 without a lock of its own takes the time of the row's amd64
    lock, so both platforms install what the index held at one moment."""
    if as_of:
        return as_of
    if refresh:
        return now()
    kept = (recorded_time(lock_path(matrix, row, platform)) if lock_status(matrix, row, platform) in ("ok", "broken")
            else None)
    if not kept and platform != fields.DEFAULT_PLATFORM:
        kept = recorded_time(lock_path(matrix, row)) if lock_status(matrix, row) in ("ok", "broken") else None
    return kept or era_time(row) or now()


def parse_as_of(text: str) -> str:
    """A --as-of value (YYYY-MM-DD, or RFC 3339 in UTC) as uv's --exclude-newer takes it; InputError otherwise."""
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            moment = datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            continue
        if moment > datetime.datetime.now(datetime.timezone.utc):
            break
        return _uv_time(moment)
    raise InputError(f"--as-of {text!r} is not a past date", where="lock",
                     fix="give a date such as 2025-04-16 (UTC) or 2025-04-16T00:00:00Z, not in the future")


def lock_tools(matrix: Matrix, refresh: bool = False) -> str:
    """Hash-pinned lock of the build tools installed in every image (uv), from dockerfiles/tools.in."""
    cutoff = (None if refresh else recorded_time(tools_lock_path(matrix))) or now()
    return (f"{lockfile.LOCK_HEADER}\n# build tools, from dockerfiles/tools.in\n# exclude-newer: {cutoff}\n"
            + _compile_tools(cutoff))


def _compile_tools(cutoff: str) -> str:
    """uv's hash-pinned resolution of dockerfiles/tools.in as the index stood at cutoff (its cache revalidated)."""
    spec = paths.DOCKERFILES / "tools.in"
    proc = uv.compile_file(spec, exclude_newer=cutoff, refresh=True)
    if proc.returncode != 0:
        raise RuntimeFailure(f"uv pip compile {spec.name} failed:\n{resolve._indent(proc.stderr)}")
    return proc.stdout


def index_sdist(row: Row) -> flash_attn.Sdist:
    """The sdist of the row's flash-attn on the index: its file name and sha256 from the simple page (PEP 503), as
    `lock` records them. InputError when the index has no such sdist, or when knowledge/flash-attn.yaml lists another
    file or hash for the version; RuntimeFailure when the page cannot be read or gives no usable name and hash."""
    index = pypi.index_url()
    found = []
    for url, sha256 in pypi.links("flash-attn", index):
        name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        parsed = pypi_releases.version_of(name, "flash-attn")
        if parsed and not parsed[1] and name.endswith(".tar.gz") and parsed[0] == Version(row.flash_attn):
            found.append((name, sha256))
    shown = secrets.redact_url(index)
    if not found:
        raise InputError(f"flash-attn {row.flash_attn} has no sdist (.tar.gz) on the index {shown}/flash-attn/",
                         where=f"row {row.id}, field flash_attn",
                         fix="pin a flash-attn version the index has (pypi.org/simple/flash-attn/)")
    name, sha256 = found[0]
    try:
        sdist = flash_attn.Sdist(file=name, sha256=sha256 or "")
    except ValueError:  # pydantic's ValidationError: a name that cannot go into a RUN line, no or a bad sha256
        raise RuntimeFailure(f"the index {shown} gives the flash-attn {row.flash_attn} sdist as {name[:80]!r} with "
                             f"sha256 {(sha256 or 'none')[:80]!r}: not a .tar.gz name of letters, digits and ._+- "
                             "with 64 hex digits (PyPI's simple page gives both)") from None
    listed = flash_attn.sdist(row.flash_attn)
    if listed and listed != sdist:
        raise InputError(f"flash-attn {row.flash_attn}: the index has {sdist.file} sha256:{sdist.sha256}, "
                         f"{paths.FLASH_ATTN.relative_to(paths.ROOT)} lists {listed.file} sha256:{listed.sha256}",
                         where=f"row {row.id}", fix="check both against pypi.org/simple/flash-attn/ and correct the "
                                                    "data file (or the index the variables name)")
    return sdist


def lock_text(row: Row, compiled: str, exclude_newer: str, sdist: flash_attn.Sdist | None = None,
              platform: str = fields.DEFAULT_PLATFORM) -> str:
    """The lock file: header and uv's body; sdist: the row's flash-attn sdist (index_sdist), for a flash-attn row."""
    spec = resolve.inputs(row, platform)
    header = [
        lockfile.LOCK_HEADER,
        f"# row: {row.id}",
        f"# input-digest: {spec.digest()}",
        f"# body-digest: {lockfile.body_digest(compiled)}",
        f"# python: {row.python}  platform: {spec.uv_platform}",
        f"# exclude-newer: {exclude_newer}",
        *([lockfile.flash_attn_sdist_line(sdist.file, sdist.sha256)] if sdist else []),
        "# resolution input:",
        *[f"#   {line}" for line in spec.requirements.splitlines()],
        *[f"#   override {line}" for line in spec.overrides.splitlines()],
    ]
    return "\n".join(header) + "\n" + compiled


def lock_status(matrix: Matrix, row: Row, platform: str = fields.DEFAULT_PLATFORM) -> str:
    """'ok', 'missing', 'stale' (written for other pins) or 'broken' (the body does not install the row)."""
    return _lock_state(matrix, row, platform)[0]


def _lock_state(matrix: Matrix, row: Row, platform: str = fields.DEFAULT_PLATFORM
                ) -> tuple[str, str | None, dict[str, lockfile.LockEntry] | None]:
    """(lock_status, the lock's text when it could be read, its entries when they parsed)."""
    path = lock_path(matrix, row, platform)
    if not path.is_file():
        return ("broken" if path.exists() else "missing"), None, None  # a directory (or a socket...) where it belongs
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return "broken", None, None
    match = lockfile.DIGEST_RE.search(text)
    if not match or match.group(1) != resolve.inputs(row, platform).digest():
        return "stale", text, None
    try:
        entries = lockfile.parse(text)
    except (IndexError, ValueError):
        return "broken", text, None
    return ("broken" if body_problems(row, text, entries) else "ok"), text, entries


def body_problems(row: Row, text: str, entries: dict[str, lockfile.LockEntry] | None = None) -> list[str]:
    """What is wrong with a lock body for the row: it must be the body `lock` wrote under this header (its digest),
    parse, lock every pin at its version, and carry hashes. entries: the text already parsed."""
    if entries is None:
        try:
            entries = lockfile.parse(text)
        except (IndexError, ValueError) as exc:
            return [f"it does not parse ({exc})"]
    problems = [p for p in [lockfile.body_digest_problem(text)] if p]
    for package, version in row.pins().items():
        if package == "flash-attn":  # a prebuilt wheel installed apart, never in the lock
            continue
        entry = entries.get(canonicalize_name(package))
        if entry is None or entry.version != version:
            problems.append(f"{package} is {'not locked' if entry is None else 'locked at ' + entry.version}, "
                            f"the row pins {version}")
    unhashed = sorted(e.name for e in entries.values() if "--hash=sha256:" not in e.text)
    if unhashed:
        problems.append(f"entries without hashes: {', '.join(unhashed[:5])}")
    problem = sdist_problem(row, text)
    return problems + ([problem] if problem else [])


def sdist_problem(row: Row, text: str) -> str | None:
    """What is wrong with the flash-attn sdist of the row's lock: a row with flash_attn needs the line `lock`
    writes, for this version (the input digest does not cover flash_attn: its wheel is installed apart), or, for a
    lock written before locks recorded it, an entry in knowledge/flash-attn.yaml; a row without flash_attn, none."""
    try:
        recorded = lockfile.flash_attn_sdist(text)
    except ValueError as exc:
        return str(exc)
    if not row.flash_attn:
        return f"it records a flash-attn sdist ({recorded[0]}), the row has no flash_attn" if recorded else None
    if recorded is None:
        if flash_attn.sdist(row.flash_attn) is None:
            return (f"it records no flash-attn sdist, and {paths.FLASH_ATTN.relative_to(paths.ROOT)} lists none for "
                    f"{row.flash_attn} (`lock` records its file name and sha256 from the index)")
        return None
    parsed = pypi_releases.version_of(recorded[0], "flash-attn")
    if parsed is None or parsed[0] != Version(row.flash_attn):
        return f"it records the flash-attn sdist {recorded[0]}, the row pins flash_attn {row.flash_attn}"
    listed = flash_attn.sdist(row.flash_attn)
    if listed and (listed.file, listed.sha256) != recorded:
        return (f"its flash-attn sdist ({recorded[0]} sha256:{recorded[1][:12]}...) is not the one "
                f"{paths.FLASH_ATTN.relative_to(paths.ROOT)} lists ({listed.file} sha256:{listed.sha256[:12]}...)")
    return None


def flash_attn_sdist(text: str, row: Row) -> flash_attn.Sdist | None:
    """The sdist the row compiles flash-attn from: the one its lock records, else (a lock written before locks
    recorded it) knowledge/flash-attn.yaml's; None when neither has one (sdist_problem says so for a lock)."""
    recorded = lockfile.flash_attn_sdist(text)
    if recorded:
        return flash_attn.Sdist(file=recorded[0], sha256=recorded[1])
    return flash_attn.sdist(row.flash_attn) if row.flash_attn else None


def status_message(matrix: Matrix, row: Row, status: str, platform: str = fields.DEFAULT_PLATFORM) -> str:
    """`lock is <status>: <path>`, with what is wrong with a broken one."""
    path = lock_path(matrix, row, platform)
    text = f"lock is {status}: {path.relative_to(matrix.root)}"
    if status == "broken":
        try:
            problems = (["it is a directory, not a file"] if path.is_dir()
                        else body_problems(row, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError as exc:
            problems = [f"it is not UTF-8 text (byte {exc.start})"]
        except OSError as exc:
            problems = [f"it cannot be read ({exc.__class__.__name__})"]
        text += " (" + "; ".join(problems) + ")"
    return text


def lock_fix(matrix: Matrix, row: Row, platform: str = fields.DEFAULT_PLATFORM) -> str:
    """How to repair a lock that is not current: re-lock the row, after removing what is not a file in its place."""
    path = lock_path(matrix, row, platform)
    relock = f"run `python build.py lock --row {row.id}`"
    if path.exists() and not path.is_file():
        return f"remove {path.relative_to(matrix.root)} (not a file), then {relock}"
    return relock


def read_lock(matrix: Matrix, row: Row, platform: str = fields.DEFAULT_PLATFORM) -> str:
    return read_lock_entries(matrix, row, platform)[0]


def read_lock_entries(matrix: Matrix, row: Row, platform: str = fields.DEFAULT_PLATFORM
                      ) -> tuple[str, dict[str, lockfile.LockEntry]]:
    """The row's current lock for platform: its text and its entries (parsed once); InputError when it is not
    current."""
    status, text, entries = _lock_state(matrix, row, platform)
    if status != "ok" or text is None or entries is None:
        raise InputError(status_message(matrix, row, status, platform), where=f"row {_label(row, platform)}",
                         fix=lock_fix(matrix, row, platform))
    return text, entries


def _not_files(matrix: Matrix, rows: list[Row]) -> list[InputError]:
    """Lock paths taken by a directory (or anything but a file): lock cannot replace them, so it stops first."""
    return [InputError(f"{path.relative_to(matrix.root)} is not a file", where=str(path),
                       fix=f"remove it, then run `python build.py lock{' --row ' + row.id if row else ''}`")
            for row, path in [(None, tools_lock_path(matrix)),
                              *((r, lock_path(matrix, r, p)) for r, p in row_platforms(rows))]
            if path.exists() and not path.is_file()]


def changes(old: str | None, new: str) -> list[str]:
    """What a rewrite of a lock changes, one `package: old -> new` line per package, sorted: a new version, one
    added or removed ("(none)" on that side), or the same version with other files ("files changed"). An old lock
    that cannot be parsed counts as empty."""
    try:
        before = lockfile.parse(old) if old else {}
    except (IndexError, ValueError):
        before = {}
    after = lockfile.parse(new)
    lines = []
    for name in sorted(set(before) | set(after)):
        was, now_ = before.get(name), after.get(name)
        if was and now_ and was.version == now_.version:
            if was.text != now_.text:
                lines.append(f"{name}: {was.version} (files changed)")
            continue
        lines.append(f"{name}: {was.version if was else '(none)'} -> {now_.version if now_ else '(none)'}")
    return lines


def lock_rows(matrix: Matrix, rows: list[Row], jobs: int = 4, refresh: bool = False,
              as_of: str | None = None) -> list[tuple[Path, bool, int, list[str] | None]]:
    """Resolve every row with hashes and write its lock (and locks/tools.txt); all or nothing: a row that does
    not resolve stops the stage before any file is written. Returns (path, changed, packages, changes) per row,
    changes being what moved against the lock it replaced (see changes()), None where there was none to compare.
    as_of: resolve the rows as the index stood then (the tools lock keeps its own time). A flash-attn row's lock
    also records the flash-attn sdist (index_sdist), which the render compiles from."""
    blocked = _not_files(matrix, rows)
    if blocked:
        raise InputErrors(blocked)
    pairs = row_platforms(rows)
    # every platform of a row at the amd64 lock's time (resolution_time), so a multi-arch tag installs one moment
    times = {row.id: resolution_time(matrix, row, refresh, as_of) for row in rows}
    results = [((row, platform), r) for (row, platform), r in resolve.parallel(
        lambda pair: resolve.resolve(pair[0], hashes=True, exclude_newer=times[pair[0].id], cache_first=False,
                                     matrix_path=matrix.path, platform=pair[1]), pairs, jobs)]
    errors = [r for _, r in results if isinstance(r, InputError)]
    failures = [str(r) for _, r in results if isinstance(r, RuntimeFailure)]
    parsed = {(row.id, platform): lockfile.parse(r) for (row, platform), r in results if isinstance(r, str)}
    errors += [e for (row, platform), r in results if (row.id, platform) in parsed
               and (e := resolve.check_cuda(row, parsed[(row.id, platform)], matrix.path, platform))]
    sdists = {}
    for row in rows:
        if row.flash_attn and (row.id, fields.DEFAULT_PLATFORM) in parsed:
            try:
                sdists[row.id] = index_sdist(row)
            except InputError as exc:
                errors.append(exc)
            except RuntimeFailure as exc:
                failures.append(f"row {row.id}: {exc}")
    if errors:
        raise InputErrors(errors)
    if failures:  # the rows' own causes first: a tools resolution would only hide them behind its own error
        raise RuntimeFailure("\n".join(failures))
    tools = lock_tools(matrix, refresh)
    paths.write_atomic(tools_lock_path(matrix), tools)
    written = []
    for (row, platform), compiled in results:
        path = lock_path(matrix, row, platform)
        text = lock_text(row, compiled, times[row.id], sdists.get(row.id), platform)
        try:
            old = path.read_text(encoding="utf-8") if path.is_file() else None
        except (OSError, UnicodeDecodeError):  # an unreadable lock is replaced whole
            old = None
        changed = old != text
        paths.write_atomic(path, text)
        written.append((path, changed, len(parsed[(row.id, platform)]), changes(old, compiled) if changed and old else None))
    return written


@dataclass
class Checked:
    """One lock against what its cutoff resolves to now (check_locks)."""

    path: Path
    cutoff: str
    packages: int = 0  # in the resolution
    seconds: float = 0.0  # the resolution's wall time
    # what makes the lock wrong: `package: locked -> on the index` where the lock's own pins, held as constraints at its
    # cutoff, resolve to other files (a hash the index no longer serves), or why they no longer resolve at all
    differences: list[str] = field(default_factory=list)
    # what the cutoff resolves to now while the lock's pins still resolve as locked (changes(): `package: locked ->
    # resolved`): releases dated before the cutoff that the index did not list when the lock was written (an upload
    # re-dated by a mirror or a backdated release, or a lock resolved from a stale cache). Advice, not a fault: the
    # lock is what the image installs, and CI on a fixed commit must not turn red because the index moved
    newer: list[str] = field(default_factory=list)
    error: InputError | RuntimeFailure | None = None  # the resolution did not finish


def _compare(old: str, new_body: str, sdist: flash_attn.Sdist | None = None) -> list[str]:
    """What differs between a lock and a new resolution of it: each moved pin (changes()), the flash-attn sdist it
    records against `sdist` (the index's now, when given), and, when the pins and hashes are the same, the
    annotations."""
    _, body = lockfile.split(old)
    lines = changes(body, new_body)
    if not lines and body != new_body:
        lines.append("(same pins and hashes; the `# via` annotations differ)")
    recorded = lockfile.flash_attn_sdist(old)
    if recorded and sdist and recorded != (sdist.file, sdist.sha256):
        lines.append(f"flash-attn sdist: {recorded[0]} sha256:{recorded[1][:12]}... -> "
                     f"{sdist.file} sha256:{sdist.sha256[:12]}...")
    return lines


def _held(row: Row, platform: str, text: str, cutoff: str, moved: list[str]) -> tuple[list[str], list[str]]:
    """A lock whose cutoff now resolves otherwise (`moved`, from _compare): is it still a resolution the index serves
    at that cutoff? A flash-attn sdist the index now hashes otherwise never is. Else its own pins are held as
    constraints and resolved again (the cache is fresh from the resolution just made): the same pins and hashes mean
    the lock installs as written and only newer releases appeared under its cutoff, returned as ([], moved);
    otherwise ([what differs, or why the pins no longer resolve], [])."""
    sdist_moved = [line for line in moved if line.startswith("flash-attn sdist: ")]
    if sdist_moved:
        return sdist_moved, []
    _, body = lockfile.split(text)
    constraints = "".join(f"{entry.name}=={entry.version}\n" for entry in lockfile.parse(body).values())
    try:
        held = resolve.compile_(row, hashes=True, exclude_newer=cutoff, platform=platform, constraints=constraints)
    except (InputError, RuntimeFailure) as exc:
        reason = exc.message if isinstance(exc, InputError) else str(exc)
        return ["the locked pins no longer resolve at the cutoff:",
                *(f"  {line.strip()}" for line in reason.splitlines() if line.strip())], []
    lines = changes(body, held)
    return (lines, []) if lines else ([], moved)


def check_locks(matrix: Matrix, rows: list[Row], jobs: int = 4, tools: bool = False) -> list[Checked]:
    """Re-resolve each row's lock (one per platform of the row) at the cutoff it records (uv --exclude-newer with the
    header's time, uv's cache revalidated with the index: the resolution `lock` makes) and compare: a lock is what
    its cutoff resolves to, or its Checked lists what moved. tools: locks/tools.txt too. Writes nothing. InputErrors
    before any resolution for locks that are not current (missing, stale, broken) or record no cutoff."""
    problems, cutoffs = [], {}
    pairs = row_platforms(rows)
    for row, platform in pairs:
        status = lock_status(matrix, row, platform)
        path = lock_path(matrix, row, platform)
        if status != "ok":
            problems.append(InputError(status_message(matrix, row, status, platform),
                                       where=f"row {_label(row, platform)}", fix=lock_fix(matrix, row, platform)))
        elif not (cutoff := recorded_time(path)):
            problems.append(InputError(f"{path.relative_to(matrix.root)} records no "
                                       "`# exclude-newer:` time to re-resolve at", where=f"row {_label(row, platform)}",
                                       fix=f"run `python build.py lock --row {row.id}`"))
        else:
            cutoffs[(row.id, platform)] = cutoff
    tools_path = tools_lock_path(matrix)
    if tools and not (tools_path.is_file() and recorded_time(tools_path)):
        problems.append(InputError(f"{tools_path.relative_to(matrix.root)} is missing or records no "
                                   "`# exclude-newer:` time", where=str(tools_path), fix="run `python build.py lock`"))
    if problems:
        raise InputErrors(problems)

    def one(pair: tuple[Row, str]) -> Checked:
        row, platform = pair
        path = lock_path(matrix, row, platform)
        checked = Checked(path=path, cutoff=cutoffs[(row.id, platform)])
        started = time.monotonic()
        try:
            body = resolve.resolve(row, hashes=True, exclude_newer=checked.cutoff, cache_first=False,
                                   matrix_path=matrix.path, platform=platform)
            text = path.read_text(encoding="utf-8")
            sdist = index_sdist(row) if lockfile.flash_attn_sdist(text) else None  # a lock before the line: none
            moved = _compare(text, body, sdist)
            checked.packages = len(lockfile.parse(body))
            if moved:
                checked.differences, checked.newer = _held(row, platform, text, checked.cutoff, moved)
        except (InputError, RuntimeFailure) as exc:
            checked.error = exc
        checked.seconds = time.monotonic() - started
        return checked

    results = [checked for _, checked in resolve.parallel(one, pairs, jobs)]
    if tools:
        checked = Checked(path=tools_path, cutoff=recorded_time(tools_path))
        started = time.monotonic()
        try:
            body = _compile_tools(checked.cutoff)
            checked.differences = _compare(tools_path.read_text(encoding="utf-8"), body)
            checked.packages = len(lockfile.parse(body))
        except RuntimeFailure as exc:
            checked.error = exc
        checked.seconds = time.monotonic() - started
        results.append(checked)
    return results


def current_pins(matrix: Matrix, row: Row) -> str | None:
    """The pins digest of the row's lock (what an image of the row installs), None when the lock is not current."""
    return lockfile.pins_digest(lock_path(matrix, row).read_text()) if lock_status(matrix, row) == "ok" else None
