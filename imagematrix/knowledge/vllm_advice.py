"""Known vLLM start-up failures and their fixes, per vLLM version and GPU (data: knowledge/vllm-advice.yaml).

- load(path): the entries, checked; a malformed file is an InputError naming file:line (exit 2).
- matching(vllm, capabilities): the entries for that vLLM version, each with the GPUs (capabilities) it applies to;
  an entry with a `capability` condition only when a given GPU meets it.
- for_failure / failure_fix(text, vllm, capability): the entries whose symptom an error text contains, and the line
  naming each one's fix; export(): the entries as JSON for the GPU smoke suite (gpusmoke.known_fixes matches them
  inside images, which have no imagematrix).

doctor prints the entries for the installed vLLM and the visible GPUs; pick those with a GPU condition for --gpu.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationError

from imagematrix.model import paths, yamlio
from imagematrix.model.errors import InputError

FILE_NAME = "vllm-advice.yaml"
Capability = tuple[int, int]


def default_path() -> Path:
    return paths.KNOWLEDGE / FILE_NAME


def _specifier(value: str) -> str:
    if not value.strip():
        raise ValueError("expected a PEP 440 specifier such as \">=0.10,<0.11\"")
    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        raise ValueError(f"{value!r} is not a PEP 440 specifier (e.g. \">=0.10,<0.11\")") from None
    return value


Specifier = Annotated[str, AfterValidator(_specifier)]
# Printed to a terminal, never into a build: one line of printable text (folded YAML `>-` is one line).
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=1000,
                                        pattern=r"^[^\x00-\x1f\x7f]+$")]
AdviceId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$", max_length=80)]


class Advice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: AdviceId
    vllm: Specifier
    capability: Specifier | None = None  # over "major.minor"; None: whatever the GPU
    when: Text
    symptom: Text
    advice: Text
    source: Text

    def for_vllm(self, version: str) -> bool:
        try:
            return SpecifierSet(self.vllm).contains(Version(version), prereleases=True)
        except InvalidVersion:
            return False

    def for_gpu(self, capability: Capability) -> bool:
        if self.capability is None:
            return True
        return SpecifierSet(self.capability).contains(f"{capability[0]}.{capability[1]}", prereleases=True)


@dataclass(frozen=True)
class Match:
    advice: Advice
    gpus: tuple[Capability, ...]  # the given GPUs it applies to; () for an entry without a GPU condition


def load(path: Path | None = None) -> tuple[Advice, ...]:
    path = path or default_path()
    doc = yamlio.load_mapping(path, keys="an `advice:` list")
    items = doc.get("advice")
    if not isinstance(items, list):
        raise InputError("expected a mapping with an `advice:` list", where=str(path),
                         fix="see the comment at the top of the file for the form of an entry")
    out, seen = [], set()
    for index, item in enumerate(items):
        where = f"{path}:{yamlio.line_of(items, index) or '?'}"
        if not isinstance(item, dict):
            raise InputError(f"expected a mapping (id, vllm, when, symptom, advice, source), got {item!r:.60}",
                             where=where)
        try:
            entry = Advice.model_validate(dict(item))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors())
            raise InputError(f"invalid vLLM advice: {problems}", where=where,
                             fix="see the comment at the top of the file for the form of an entry") from None
        if entry.id in seen:
            raise InputError(f"advice id {entry.id!r} appears twice", where=where, fix="give each entry its own id")
        seen.add(entry.id)
        out.append(entry)
    return tuple(out)


@functools.cache
def entries() -> tuple[Advice, ...]:
    return load()


def matching(vllm: str | None, capabilities: list[Capability] | tuple[Capability, ...] = (),
             *, gpu_only: bool = False, advice: tuple[Advice, ...] | None = None) -> list[Match]:
    """The entries for vLLM `vllm`, in file order: each without a GPU condition (unless gpu_only) and each whose
    condition one of `capabilities` meets (with those GPUs). No vLLM version: nothing."""
    if not vllm:
        return []
    out = []
    for entry in entries() if advice is None else advice:
        if not entry.for_vllm(vllm):
            continue
        if entry.capability is None:
            if not gpu_only:
                out.append(Match(entry, ()))
            continue
        gpus = tuple(dict.fromkeys(tuple(c) for c in capabilities if entry.for_gpu(tuple(c))))
        if gpus:
            out.append(Match(entry, gpus))
    return out


def one_line(entry: Advice) -> str:
    """`when`: "symptom" -> fix: advice."""
    return f"{entry.when}: \"{entry.symptom}\" -> fix: {entry.advice}"



def for_failure(text: str, vllm: str | None, capability: Capability | None = None, *,
                advice: tuple[Advice, ...] | None = None) -> list[Advice]:
    """The entries whose symptom `text` (an exception or a log) contains, for vLLM `vllm` and, for an entry with a GPU
    condition, the GPU of compute capability `capability` (None: unknown, the condition is not checked)."""
    if not vllm or not text:
        return []
    return [entry for entry in (entries() if advice is None else advice)
            if entry.symptom in text and entry.for_vllm(vllm) and (capability is None or entry.for_gpu(capability))]


def failure_fix(text: str, vllm: str | None, capability: Capability | None = None, *,
                advice: tuple[Advice, ...] | None = None) -> str | None:
    """One line per known failure in `text` naming its fix (None: no known failure): what a failing test prints."""
    lines = [fix_line(entry) for entry in for_failure(text, vllm, capability, advice=advice)]
    return "\n".join(lines) or None


def fix_line(entry: Advice) -> str:
    """The line a failing GPU smoke test prints (imagematrix/suites/gpu/gpusmoke.py known_fixes writes the same)."""
    return f"known vLLM failure {entry.id} ({FILE_NAME}): {entry.when} -> fix: {entry.advice}"


def export(advice: tuple[Advice, ...] | None = None) -> list[dict]:
    """The entries as plain data (JSON) for the GPU smoke suite, which matches them without imagematrix inside an
    image (imagematrix/suites/gpu/gpusmoke.py: known_fixes, the same matching as for_failure)."""
    return [entry.model_dump(include={"id", "vllm", "capability", "when", "symptom", "advice"})
            for entry in (entries() if advice is None else advice)]
