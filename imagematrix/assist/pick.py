"""pick: the best row (image) for a GPU, a driver and version wishes, and why every other row was left out.

Best = among the rows that run on the GPU and with the driver and that match the version wishes: the newest vLLM,
then the newest verl. Whether a row runs on the GPU: the verdict read from its image's binaries where the row was
scanned (coverage/<row-id>.json: every required library has a kernel, or PTX, for it), else the torch wheel's
architectures (knowledge/gpus.yaml). The driver: the CUDA runtime its libraries need (the same baseline), else the
row's CUDA.
A known vLLM failure on that GPU (knowledge/vllm-advice.yaml, e.g. full CUDA graphs on FlashAttention-2) is a note.

Whether the chosen row's final tag is in the registry (`publication`) is asked through stages/publish; with
only_published the choice is the best row among those whose tag is published.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from imagematrix.knowledge import gpus, training, vllm_advice
from imagematrix.model import tags
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.fields import DEFAULT_PLATFORM
from imagematrix.model.matrix import Matrix, Row
from imagematrix.stages import coverage_row, publish

# (registry, tag) -> the tag's labels, None when the tag is absent; raises RuntimeFailure when the registry cannot be
# asked (unreachable, refusing, not a registry). publish.remote_labels by default; tests pass a fake.
Lookup = Callable[[str, str], dict | None]


@dataclass
class Choice:
    row: Row
    notes: list[str] = field(default_factory=list)  # warnings that do not exclude (compat driver, no bf16)


@dataclass
class Pick:
    best: Choice | None
    candidates: list[Choice]
    excluded: dict[str, list[str]]  # row id -> reasons


@dataclass
class Publication:
    """What the registry says about the pick."""

    registry: str
    choice: Choice | None  # the row to pull: the best, or with only_published the best published (None: none is)
    published: bool | None  # whether choice's final tag is in the registry; None: unknown (see problem)
    checked: dict[str, bool] = field(default_factory=dict)  # row id -> published, for each row asked, in rank order
    problem: str = ""  # why the registry could not be asked, one line
    signed: bool | None = None  # whether choice's published tag carries a cosign signature; None: unknown or unpublished


def wish(text: str, what: str) -> SpecifierSet:
    """'>=0.8', '0.5' (meaning 0.5.*), '0.10.0' -> a specifier set."""
    text = text.strip()
    if text and text[0].isdigit():
        text = f"=={text}" if text.count(".") >= 2 else f"=={text}.*"
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise InputError(f"--{what} {text!r} is not a version or specifier",
                         fix=f"write e.g. --{what} 0.5 or --{what} '>=0.8'") from None


def coverage_of(matrix: Matrix, row: Row) -> coverage_row.Baseline | None:
    """The row's GPU verdict read from its image's binaries (coverage/<row-id>.json), None when not scanned."""
    return coverage_row.load(coverage_row.baseline_path(matrix.root, row.id))


Findings = tuple[list[str], list[str]]  # (reasons to leave a row out, notes on a row that fits)


def _coverage_findings(row: Row, cap: tuple[int, int], judged: dict) -> Findings:
    """What the row's binaries (coverage/<row>.json) say about the GPU."""
    reasons, notes = [], []
    sm = gpus.format_capability(cap)
    if judged["verdict"] == coverage_row.NONE:
        reasons.append(f"no kernel for {sm} in {', '.join(judged['lacking'])} (read from the image's binaries, "
                       f"coverage/{row.id}.json): \"no kernel image is available for execution on the device\"")
    elif judged["verdict"] == coverage_row.PTX_JIT:
        notes.append(f"{sm} runs {', '.join(judged['jit'])} only through PTX JIT: slow first start (minutes), "
                     "and a driver at least as new as the row's CUDA toolkit")
    if judged.get("optional_lacking"):
        notes.append(f"no {sm} kernel in {', '.join(judged['optional_lacking'])} (not deciding: "
                     "knowledge/coverage.yaml)")
    return reasons, notes


def _gpu_findings(row: Row, cap: tuple[int, int], judged: dict | None) -> Findings:
    """The torch wheel's architectures (when the binaries were not read), bf16, and vLLM's known failures."""
    reasons, notes = [], []
    archs = gpus.torch_arch_list(row.torch, row.cuda) if judged is None else []
    if archs is None:
        notes.append(f"arch coverage of torch {row.torch}+cu{row.cuda.replace('.', '')} unknown")
    elif judged is None and not gpus.covers(archs, cap):
        reasons.append(f"torch {row.torch} (CUDA {row.cuda}) has kernels for {' '.join(archs)}, not "
                       f"{gpus.format_capability(cap)}: \"no kernel image is available for execution on "
                       "the device\"")
    if not gpus.bf16_supported(cap):
        notes.append(f"{gpus.format_capability(cap)} has no bf16 and no FlashAttention-2: use dtype=float16 "
                     "and a non-FLASH_ATTN attention backend")
    for match in vllm_advice.matching(row.vllm, [cap], gpu_only=True):
        notes.append(f"vLLM {row.vllm} on {gpus.format_capability(cap)} [{match.advice.id}]: "
                     + vllm_advice.one_line(match.advice))
    return reasons, notes


def _driver_findings(row: Row, gpu: str | None, driver: str,
                     scanned: coverage_row.Baseline | None) -> Findings:
    """The host's driver against what the row's libraries need (read from its binaries, else its CUDA)."""
    reasons, notes = [], []
    if scanned and scanned.driver:
        need = scanned.driver
        status = coverage_row.driver_status(driver, need)
        if status == "too-old":
            reason = (f"its libraries' CUDA {need['runtime_cuda']} runtime needs driver >= {need['minimum']}, "
                      f"the host has {driver}")
            exception = coverage_row.forward_compat_line(gpu, need)
            reasons.append(reason + (f" ({exception})" if exception else ""))
        elif status == "compat":
            notes.append(f"driver {driver} runs it under minor-version compatibility: its libraries come from CUDA "
                         f"{need['libraries_cuda']} (>= {need['full']} for full support, PTX JIT included)")
        return reasons, notes
    status = gpus.driver_status(driver, row.cuda)
    if status == "too-old":
        full = gpus.min_driver(row.cuda)
        compat = gpus.min_driver_compat(row.cuda)
        reasons.append(f"CUDA {row.cuda} needs driver >= {compat}"
                       + (f" (>= {full} for full support)" if full != compat else "")
                       + f", the host has {driver}")
    elif status == "compat":
        notes.append(f"driver {driver} runs CUDA {row.cuda} only under minor-version compatibility "
                     f"(>= {gpus.min_driver(row.cuda)} for full support, PTX JIT included)")
    return reasons, notes


def pick(matrix: Matrix, gpu: str | None, driver: str | None = None, vllm: str | None = None,
         verl: str | None = None) -> Pick:
    cap = gpus.capability(gpu) if gpu else None
    host = gpus.host_platform(gpu) if gpu else None  # Grace hosts (GH200, GB200) are linux/arm64
    specs = {"vllm": wish(vllm, "vllm") if vllm else None, "verl": wish(verl, "verl") if verl else None}
    candidates, excluded = [], {}
    for row in matrix.rows:
        reasons, notes = [], []
        for key, spec in specs.items():
            if spec is not None and not spec.contains(getattr(row, key), prereleases=True):
                reasons.append(f"{key} {getattr(row, key)} is not {spec}")
        if host is not None and host not in row.platforms:
            reasons.append(f"{gpu} hosts are {host} (Grace CPU): the row has no {host} image (platforms: "
                           f"{', '.join(row.platforms)}; a row gets one with `platforms: [linux/amd64, {host}]`)")
        scanned = coverage_of(matrix, row)
        judged = scanned.verdicts.get(f"{cap[0]}.{cap[1]}") if scanned and cap is not None else None
        findings = []
        if judged is not None:
            findings.append(_coverage_findings(row, cap, judged))
        if cap is not None:
            findings.append(_gpu_findings(row, cap, judged))
        if driver:
            findings.append(_driver_findings(row, gpu, driver, scanned))
        for more_reasons, more_notes in findings:
            reasons += more_reasons
            notes += more_notes
        how = training.attention(row)
        if how.attn_implementation != "flash_attention_2":
            notes.append(f"verl training: {how.note}")
        if reasons:
            excluded[row.id] = reasons
        else:
            candidates.append(Choice(row, notes))
    candidates.sort(key=lambda c: (Version(c.row.vllm), Version(c.row.verl)), reverse=True)
    return Pick(candidates[0] if candidates else None, candidates, excluded)


def pull_line(repository: str, row: Row) -> str:
    return f"docker pull {repository}:{row.id}"


def platforms_line(row: Row) -> str:
    """For a multi-arch row: its one tag serves each platform (docker pulls the host's); else ''."""
    if len(row.platforms) < 2:
        return ""
    return f"one tag, a multi-arch index of {', '.join(row.platforms)}: docker pulls the image of this host's platform"


def verify_line(repository: str, row: Row, signed: bool | None) -> str:
    """The `verify` command for a signed image; for an unsigned one, why there is none (the main job builds unsigned)."""
    if signed:
        return f"python build.py verify {repository}:{row.id} --key cosign.pub"
    if signed is False:
        return ("not signed: no cosign signature in the registry, so `build.py verify` has nothing to check "
                "(sign at build time with `build.py build --sign-key cosign.key`)")
    return ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def publication(result: Pick, registry: str, *, only_published: bool = False,
                lookup: Lookup | None = None, signature: Callable[[str, str], bool | None] | None = None,
                platform: str | None = None,
                platforms_of: Callable[[str, str], set[str]] | None = None) -> Publication:
    """Ask the registry for the best row's final tag; with only_published walk the fitting rows in rank order and
    choose the first whose tag is there. A registry that cannot be asked leaves the best row chosen, published None.
    For the published choice, whether it is signed (`verify` checks a signature: offered only for signed images).
    platform: the host's, when it is not linux/amd64 (a GH200): a tag counts as published only when its index has
    an image of that platform."""
    lookup = lookup or publish.remote_labels
    platforms_of = platforms_of or publish.remote_platforms
    signature = signature or publish.remote_signed
    if result.best is None:
        return Publication(registry, None, None)
    checked: dict[str, bool] = {}
    for choice in result.candidates if only_published else [result.best]:
        try:
            found = lookup(registry, choice.row.id) is not None
            if found and platform and platform != DEFAULT_PLATFORM:
                found = platform in platforms_of(registry, choice.row.id)
        except RuntimeFailure as exc:
            return Publication(registry, result.best, None, checked, _one_line(str(exc)))
        checked[choice.row.id] = found
        if found:
            try:
                signed = signature(registry, choice.row.id)
            except RuntimeFailure:
                signed = None
            return Publication(registry, choice, True, checked, signed=signed)
    return Publication(registry, None if only_published else result.best, False, checked)


def build_line(registry: str, row: Row) -> str:
    """The command that builds and publishes row to registry."""
    where = "" if registry.rstrip("/") == tags.DEFAULT_REGISTRY else f" --registry {registry}"
    return f"python build.py build --row {row.id}{where}"


def publication_line(pub: Publication) -> str:
    """The sentence beside the pull line: published, not published (with the build command), or unknown."""
    if pub.choice is None:
        return ""
    if pub.published is None:
        return f"publication unknown: {pub.registry} could not be asked"
    if pub.published:
        return f"published in {pub.registry}"
    return f"not published in {pub.registry}: build it with `{build_line(pub.registry, pub.choice.row)}`"


def none_published_line(result: Pick, pub: Publication) -> str:
    """Why only_published chose nothing, with the fix."""
    assert result.best is not None
    count = len(result.candidates)
    rows = "the one row that fits is not" if count == 1 else f"none of the {count} rows that fit is"
    return (f"{rows} published in {pub.registry}; fix: build the best with "
            f"`{build_line(pub.registry, result.best.row)}`, or leave out --only-published")
