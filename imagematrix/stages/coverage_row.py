"""A row's GPU verdict from its image's device code, kept as a baseline in `coverage/<row-id>.json` (issue 28).

    stages/coverage_image.scan (every file with device code) -> files grouped into libraries (knowledge/coverage.yaml)
    -> per GPU capability of knowledge/gpus.yaml, per library: native / ptx-jit / none / not-used
    -> per GPU: the row's verdict from its required libraries: `none` naming the libraries without a kernel, else
       `ptx-jit` naming those that only JIT (slow first start, a driver as new as the PTX), else `native`
    -> compared with the committed baseline: a library that had a kernel for a GPU and lost it fails, like a size
       regression; a row without a baseline, or --record, records it.

Everything but `check_image` (which scans) and the file reading and writing is pure.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from imagematrix.knowledge import coverage as rules_mod
from imagematrix.knowledge import gpus
from imagematrix.model import datafile, lockfile, paths
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.matrix import Row
from imagematrix.stages import coverage
from imagematrix.stages.coverage_image import FileCoverage, ImageScan

FORMAT = 1
NATIVE, PTX_JIT, NONE, NOT_USED, NOT_JUDGED = coverage.NATIVE, coverage.PTX_JIT, coverage.NONE, "not-used", "not-judged"
RANK = {NONE: 0, PTX_JIT: 1, NATIVE: 2}
SHORT = {NATIVE: "native", PTX_JIT: "JIT", NONE: "none"}

Capability = tuple[int, int]


# --- libraries and verdicts (pure) -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LibraryCoverage:
    """One library's device code: per file (combine all) or the union over its files (combine any)."""

    name: str
    files: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]  # path -> (sass, ptx); for `any`: {"*": union}
    count: int  # files with device code

    def to_json(self) -> dict:
        return {"files": {p: {"sass": list(s), "ptx": list(x)} for p, (s, x) in sorted(self.files.items())},
                "count": self.count}

    @classmethod
    def from_json(cls, name: str, doc: dict) -> LibraryCoverage:
        files = {str(p): (tuple(map(str, v["sass"])), tuple(map(str, v["ptx"]))) for p, v in doc["files"].items()}
        return cls(name, files, int(doc["count"]))


def group(files: dict[str, FileCoverage], rules: rules_mod.Rules | None = None) -> dict[str, LibraryCoverage]:
    """The image's files with device code, by library; an `any` library is kept as the union of its files."""
    rules = rules or rules_mod.rules()
    by: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {}
    for path, found in files.items():
        by.setdefault(rules.library_of(path), {})[path] = (found.sass, found.ptx)
    out = {}
    for name, members in sorted(by.items()):
        lib = rules.library(name)
        if lib is not None and lib.combine == "any":
            sass = tuple(sorted({a for s, _ in members.values() for a in s}))
            ptx = tuple(sorted({a for _, x in members.values() for a in x}))
            out[name] = LibraryCoverage(name, {"*": (sass, ptx)}, len(members))
        else:
            out[name] = LibraryCoverage(name, dict(sorted(members.items())), len(members))
    return out


@dataclass(frozen=True)
class LibraryVerdict:
    name: str
    verdict: str  # native / ptx-jit / none / not-used
    lacking: tuple[str, ...] = ()  # the files without a kernel (combine all), shortest paths


def library_verdict(lib: LibraryCoverage, cap: Capability, rule: rules_mod.Library | None) -> LibraryVerdict:
    if rule is not None and not rule.judged:
        return LibraryVerdict(lib.name, NOT_JUDGED)
    if rule is not None and not rule.used_on(cap):
        return LibraryVerdict(lib.name, NOT_USED)
    per_file = {path: coverage.verdict((frozenset(s), frozenset(x)), cap) for path, (s, x) in lib.files.items()}
    worst = min(per_file.values(), key=RANK.__getitem__)
    return LibraryVerdict(lib.name, worst, tuple(sorted(p for p, v in per_file.items() if v == NONE)))


@dataclass(frozen=True)
class GpuVerdict:
    capability: Capability
    verdict: str  # native / ptx-jit / none: from the required libraries
    lacking: tuple[str, ...]  # required libraries without a kernel
    jit: tuple[str, ...]  # required libraries that only have PTX for it
    optional_lacking: tuple[str, ...]  # libraries listed, not deciding, without a kernel
    libraries: dict[str, str] = field(default_factory=dict)  # name -> its verdict

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "lacking": list(self.lacking), "jit": list(self.jit),
                "optional_lacking": list(self.optional_lacking), "libraries": dict(sorted(self.libraries.items()))}

    def summary(self) -> str:
        if self.verdict == NONE:
            return f"none: no kernel in {', '.join(self.lacking)}"
        if self.verdict == PTX_JIT:
            return f"PTX JIT ({', '.join(self.jit)}): slow first start, driver >= the PTX's toolkit"
        return "native"


def gpu_verdict(libs: dict[str, LibraryCoverage], cap: Capability, rules: rules_mod.Rules | None = None) -> GpuVerdict:
    rules = rules or rules_mod.rules()
    lacking, jit, optional, states = [], [], [], {}
    for name, lib in libs.items():
        rule = rules.library(name)
        found = library_verdict(lib, cap, rule)
        states[name] = found.verdict
        required = rule is not None and rule.required
        if found.verdict == NONE:
            (lacking if required else optional).append(name)
        elif found.verdict == PTX_JIT and required:
            jit.append(name)
    verdict = NONE if lacking else PTX_JIT if jit else NATIVE
    return GpuVerdict(tuple(cap), verdict, tuple(lacking), tuple(jit), tuple(optional), states)


def capabilities(rules: rules_mod.Rules | None = None) -> list[tuple[Capability, str]]:
    """(capability, its first GPU name) of knowledge/gpus.yaml, oldest first, arm64-only ones left out."""
    rules = rules or rules_mod.rules()
    first: dict[Capability, str] = {}
    for _, cap, spelling in gpus.data().names:
        first.setdefault(cap, spelling)
    return [(cap, first[cap]) for cap in sorted(first) if cap not in rules.arm64_only]


def verdicts(libs: dict[str, LibraryCoverage], rules: rules_mod.Rules | None = None) -> dict[Capability, GpuVerdict]:
    return {cap: gpu_verdict(libs, cap, rules) for cap, _ in capabilities(rules)}


def cap_key(cap: Capability) -> str:
    return f"{cap[0]}.{cap[1]}"


# --- the driver (pure, from the row's lock) ------------------------------------------------------------------------

@dataclass(frozen=True)
class DriverNeed:
    runtime: str  # CUDA of the row's CUDA runtime wheel (what its libraries link against)
    libraries: str  # the highest CUDA among the toolkit-versioned wheels
    minimum: str  # the lowest driver that runs the row (minor-version compatibility of its CUDA major)
    full: str | None  # the driver of the toolkit its libraries come from (PTX JIT included); None: not in gpus.yaml
    source: str  # the wheels it was read from

    def to_json(self) -> dict:
        return {"runtime_cuda": self.runtime, "libraries_cuda": self.libraries, "minimum": self.minimum,
                "full": self.full, "source": self.source}


def _cuda_of(version: str) -> str | None:
    try:
        release = Version(version).release
    except InvalidVersion:
        return None
    return f"{release[0]}.{release[1]}" if len(release) >= 2 else None


def lock_text_of(root: Path, row: Row) -> str:
    lock = root / "locks" / f"{row.id}.txt"
    return lock.read_text() if lock.is_file() else ""


def driver_need(row: Row, lock_text: str = "", rules: rules_mod.Rules | None = None) -> DriverNeed:
    """The driver the row needs, from the CUDA wheels of its lock (the text of locks/<row>.txt); the row's CUDA
    without one."""
    rules = rules or rules_mod.rules()
    entries = lockfile.parse(lock_text) if lock_text else {}
    found = {name: _cuda_of(entries[name].version) for name in rules.toolkit_wheels if name in entries}
    found = {k: v for k, v in found.items() if v}
    runtime = next((found[w] for w in rules.runtime_wheels if w in found), row.cuda)
    highest = max([runtime, *found.values()], key=Version)
    try:
        minimum = gpus.min_driver_compat(runtime)
    except InputError:
        minimum = gpus.min_driver_compat(row.cuda)
    try:
        full = gpus.min_driver(highest)
    except InputError:
        full = None
    source = ", ".join(f"{k} {entries[k].version}" for k in found) or f"the row's CUDA {row.cuda} (no lock)"
    return DriverNeed(runtime, highest, minimum, full, source)


# --- the baseline ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Baseline:
    row: str
    image: str
    recorded: str
    libraries: dict[str, LibraryCoverage]
    verdicts: dict[str, dict]  # "8.0" -> GpuVerdict.to_json()
    unread: dict[str, str] = field(default_factory=dict)
    driver: dict = field(default_factory=dict)
    scan: dict = field(default_factory=dict)  # how long, how many layers came from the cache


def baseline_path(root: Path, row_id: str) -> Path:
    return root / "coverage" / f"{row_id}.json"


def make_baseline(row: Row, result: ImageScan, rules: rules_mod.Rules | None = None,
                  lock_text: str = "") -> Baseline:
    libs = group(result.files, rules)
    return Baseline(row.id, result.image, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), libs,
                    {cap_key(c): v.to_json() for c, v in verdicts(libs, rules).items()}, dict(result.unread),
                    driver_need(row, lock_text, rules).to_json(),
                    {"seconds": round(result.seconds, 1), "layers": result.layers, "cached_layers": result.cached_layers,
                     "cuobjdump_runs": result.cuobjdump_runs})


def to_json(b: Baseline) -> str:
    doc = {"format": FORMAT, "row": b.row, "image": b.image, "recorded": b.recorded, "driver": b.driver,
           "verdicts": b.verdicts, "unread": b.unread,
           "libraries": {n: lib.to_json() for n, lib in sorted(b.libraries.items())}}
    return json.dumps(doc, indent=1) + "\n"


def from_json(text: str, where: str) -> Baseline:
    try:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT}")
        libs = {str(n): LibraryCoverage.from_json(str(n), v) for n, v in doc["libraries"].items()}
        for lib in libs.values():
            for sass, ptx in lib.files.values():
                for arch in (*sass, *ptx):
                    if not coverage._ARCH_RE.match(arch):
                        raise ValueError(f"library {lib.name}: {arch[:40]!r} is not an architecture")
        return Baseline(str(doc["row"]), str(doc["image"]), str(doc.get("recorded", "")), libs,
                        {str(k): dict(v) for k, v in doc["verdicts"].items()}, dict(doc.get("unread") or {}),
                        dict(doc.get("driver") or {}))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{where}: not a coverage baseline ({exc.__class__.__name__}: {exc})",
                         fix="restore it from git, or record it again: `python build.py coverage --row ID --record`") \
            from None


def load(path: Path) -> Baseline | None:
    if not path.is_file():
        return None
    return from_json(datafile.read_text(path, fix="restore it from git, or record it again: "
                                              "`python build.py coverage --row ID --record`"), str(path))


def write(path: Path, baseline: Baseline) -> None:
    paths.write_atomic(path, to_json(baseline))


# --- the comparison (pure) -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Loss:
    library: str
    capability: str  # "8.0"
    was: str
    now: str  # a verdict, or "absent" (the library is gone)
    required: bool


@dataclass(frozen=True)
class Check:
    action: str  # record | pass | fail
    message: str
    losses: tuple[Loss, ...] = ()


def losses(old: Baseline, new: Baseline, rules: rules_mod.Rules | None = None) -> list[Loss]:
    """Each (library, GPU) whose verdict got worse: native -> ptx-jit or none, ptx-jit -> none, or the library gone."""
    rules = rules or rules_mod.rules()
    out = []
    for cap in sorted(old.verdicts, key=lambda k: tuple(map(int, k.split(".")))):
        before = old.verdicts[cap].get("libraries", {})
        after = (new.verdicts.get(cap) or {}).get("libraries", {})
        for name, was in sorted(before.items()):
            if was not in RANK:
                continue
            now = after.get(name, "absent")
            if now == "absent" or (now in RANK and RANK[now] < RANK[was]):
                rule = rules.library(name)
                out.append(Loss(name, cap, was, now, bool(rule and rule.required)))
    return out


def check(old: Baseline | None, new: Baseline, *, record: bool = False,
          rules: rules_mod.Rules | None = None) -> Check:
    """Fail when a required library lost a GPU it had a kernel for (warn for the others); record without baseline."""
    if old is None:
        return Check("record", f"no coverage baseline for {new.row} yet: recording it")
    found = losses(old, new, rules)
    if record:
        return Check("record", "coverage baseline re-recorded on request"
                     + (f" ({len(found)} loss(es) accepted)" if found else ""), tuple(found))
    required = [loss for loss in found if loss.required]
    lines = [f"  {loss.library} on sm_{loss.capability.replace('.', '')}: {loss.was} -> {loss.now}"
             + ("" if loss.required else " (not deciding)") for loss in found]
    if not required:
        text = "coverage as in the baseline" + (": optional libraries lost kernels:\n" + "\n".join(lines) if found else "")
        return Check("pass", text, tuple(found))
    return Check("fail", "\n".join([f"the image lost GPU kernels its baseline coverage/{new.row}.json has "
                                    f"(recorded {old.recorded}); nothing pushed:", *lines,
                                    f"fix: find what dropped the architecture (a wheel built for fewer archs, an "
                                    f"index serving another CUDA flavour); if intended, re-record: "
                                    f"`python build.py coverage --row {new.row} --record`"]), tuple(found))


# --- the GPUs a row declares (pure) -------------------------------------------------------------------------------

def declared(row: Row, baseline: Baseline) -> list[str]:
    """What the row's declared GPUs lack in these binaries, one line each naming the GPU, its architecture and the
    libraries: `gpus` need native kernels in every required library, `gpus_jit` at least PTX the driver compiles."""
    problems = []
    for name, jit_ok in [*((g, False) for g in row.gpus), *((g, True) for g in row.gpus_jit)]:
        cap = gpus.capability(name)
        sm = f"sm_{cap[0]}{cap[1]}"
        judged = baseline.verdicts.get(cap_key(cap))
        key = "gpus_jit" if jit_ok else "gpus"
        if judged is None:
            problems.append(f"{name} ({sm}, row key {key}): not judged: not a GPU these x86_64 images are read for "
                            "(knowledge/coverage.yaml arm64_only)")
        elif judged["verdict"] == NONE:
            problems.append(f"{name} ({sm}, row key {key}): no {sm} kernel (SASS or PTX) in "
                            f"{', '.join(judged['lacking'])}")
        elif judged["verdict"] == PTX_JIT and not jit_ok:
            problems.append(f"{name} ({sm}, row key gpus): no {sm} machine code in {', '.join(judged['jit'])}, only "
                            f"PTX the driver compiles at first use (list {name} under gpus_jit to accept that)")
    return problems


def declared_failure(row: Row, problems: list[str]) -> str:
    return "\n".join([f"the image's binaries do not cover the GPUs row {row.id} declares; nothing pushed:",
                      *(f"  {p}" for p in problems),
                      "fix: build the missing architectures into the library (another wheel, flash_attn_archs), or "
                      "take the GPU out of the row's gpus / gpus_jit in matrix.yaml"])


# --- the stage --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    check: Check
    baseline: Baseline
    written: Path | None


def check_image(row: Row, image: str, root: Path, *, daemon: bool = False, record: bool = False,
                write_baseline: bool = True) -> Outcome:
    """Scan the row's image, judge it per GPU, compare with coverage/<row>.json; write it when recording (no baseline,
    or record). The build pipeline calls this after the build (daemon=True, the local image) and before the push:
    action "fail" means nothing may be pushed."""
    from imagematrix.stages import coverage_image

    if not coverage.cuobjdump.find():
        raise RuntimeFailure(f"cuobjdump is not installed: {coverage.cuobjdump.INSTALL_HINT}")
    result = coverage_image.scan(image, daemon=daemon)
    new = make_baseline(row, result, lock_text=lock_text_of(root, row))
    path = baseline_path(root, row.id)
    verdict = check(load(path), new, record=record)
    written = None
    if verdict.action == "record" and write_baseline:
        write(path, new)
        written = path
    return Outcome(verdict, new, written)


def record_note(root: Path, outcome: Outcome, write_it: bool) -> str:
    """After the build's push: the coverage note of the row's outcome; the scan written as the row's baseline
    (coverage/<row-id>.json) when the check says to record and write_it (something was pushed, or
    --record-coverage), as the size baseline is."""
    first = outcome.check.message.splitlines()[0]
    if outcome.check.action != "record":
        return f"coverage: {first}"
    if not write_it:
        return f"coverage: {first} - not recorded, nothing was pushed (--record-coverage records it)"
    path = baseline_path(root, outcome.baseline.row)
    write(path, outcome.baseline)
    return f"coverage: {first}, in {path}"


def driver_status(driver: str, need: dict) -> str:
    """'ok' (>= the full-support driver, or the minimum where the full one is unknown), 'compat' (>= the minimum:
    minor-version compatibility) or 'too-old', for a baseline's `driver` entry."""
    have = gpus.driver_version(driver)
    if have < gpus.driver_version(need["minimum"]):
        return "too-old"
    if need.get("full") and have < gpus.driver_version(need["full"]):
        return "compat"
    return "ok"


def forward_compat_line(gpu: str | None, need: dict, rules: rules_mod.Rules | None = None) -> str:
    """The forward-compatibility exception, when gpu (a name as given to pick) is a data-centre GPU of the data."""
    rules = rules or rules_mod.rules()
    if not gpu or not any(gpus.names_match(gpu, model) for model in rules.forward_compat_gpus):
        return ""
    major, minor = need["runtime_cuda"].split(".")
    package = rules.forward_compat_package.format(major=major, minor=minor)
    return f"{gpu} is a data-centre GPU: {package} lets it run on an older driver branch ({rules.forward_compat_note})"


COVERAGE_BYPRODUCT = "gpu coverage"  # the provenance's byproduct that carries the verdict (stages/attest)


def byproduct(baseline: Baseline) -> dict:
    """The verdict as a byproduct of the pushed digest's provenance (SLSA v1 ResourceDescriptor): per GPU capability
    native / ptx-jit / none, the driver it needs, and the sha256 of the scan (build-logs/<row>/coverage.json). The
    image cannot carry it as a label: labels are fixed before the tests and the scan; the provenance is written
    after the push, attested and signed with the image, and `build.py verify` reads it back."""
    return {"name": COVERAGE_BYPRODUCT, "uri": f"coverage/{baseline.row}.json",
            "digest": {"sha256": hashlib.sha256(to_json(baseline).encode()).hexdigest()},
            "annotations": manifest_entry(baseline)}


def compare(signed: dict, committed: Baseline | None) -> tuple[list[str], list[str]]:
    """(worse, better): the GPUs whose verdict in a published image's provenance (its byproduct's annotations) is
    worse, or better, than the committed coverage/<row>.json says, which is what `pick` answers from."""
    if committed is None:
        return [], []
    worse, better = [], []
    for cap, verdict in sorted((signed.get("coverage") or {}).items(), key=lambda kv: tuple(map(int, kv[0].split(".")))):
        claimed = (committed.verdicts.get(cap) or {}).get("verdict")
        if verdict not in RANK or claimed not in RANK or verdict == claimed:
            continue
        line = f"sm_{cap.replace('.', '')}: image {verdict}, coverage/{committed.row}.json {claimed}"
        (worse if RANK[verdict] < RANK[claimed] else better).append(line)
    return worse, better


def manifest_entry(baseline: Baseline) -> dict:
    """What the build's manifest.json (and a label) can carry: the verdict per GPU capability, in short."""
    return {"coverage": {cap: v["verdict"] for cap, v in baseline.verdicts.items()},
            "driver_minimum": baseline.driver.get("minimum")}
