"""Platform tags that wheels declare under another name than installers know (data: knowledge/wheel-tags.yaml), and
the verdict on `uv pip check`'s output that the CPU smoke test takes from them."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from imagematrix.model import paths, yamlio
from imagematrix.model.errors import InputError
from imagematrix.model.fields import Platform, Reason, Str

TAG_RE = re.compile(r"[a-z0-9_]{1,64}")
# uv pip check: one line per incompatibility, after `Found N incompatibilit(y|ies)`
FOUND_RE = re.compile(r"Found (\d+) incompatibilit(?:y|ies)")
PLATFORM_LINE_RE = re.compile(r"The package `([A-Za-z0-9._-]{1,100})` was built for a different platform")
# ELF e_machine of each platform's binaries
MACHINES = {"linux/amd64": 0x3E, "linux/arm64": 0xB7}


class Alias(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    platform: Platform
    tag: Str
    reason: Reason


def load(path: Path = paths.WHEEL_TAGS) -> list[Alias]:
    doc = yamlio.load_mapping(path, keys="an `aliases:` list")
    items = doc.get("aliases")
    if not isinstance(items, list):
        raise InputError("expected a mapping with an `aliases:` list", where=str(path))
    out = []
    for index, item in enumerate(items):
        where = f"{path}:{yamlio.line_of(items, index)}"
        if not isinstance(item, dict):
            raise InputError(f"invalid alias: expected a mapping with platform, tag and reason, got {item!r:.60}",
                             where=where, fix="write the entry as `- platform: linux/arm64` with tag and reason below")
        try:
            alias = Alias.model_validate(dict(item))
        except (ValidationError, TypeError, ValueError) as exc:
            raise InputError(f"invalid alias: {exc}", where=where) from None
        if alias.platform not in MACHINES or not TAG_RE.fullmatch(alias.tag):
            raise InputError(f"invalid alias: platform must be one of {sorted(MACHINES)} and tag a platform tag "
                             f"([a-z0-9_], e.g. manylinux2014_sbsa), got {alias.platform!r} and {alias.tag!r:.70}",
                             where=where)
        out.append(alias)
    return out


@functools.cache
def tags_for(platform: str) -> frozenset[str]:
    """The platform tags accepted on platform in place of the ones installers know."""
    return frozenset(a.tag for a in load() if a.platform == platform)


def platform_reports(output: str) -> list[str] | None:
    """The packages `uv pip check` reports as built for a different platform, when that is all it reports; None
    when it reports anything else, or output it does not account for (so the caller fails)."""
    found = FOUND_RE.search(output)
    reported = [line.strip() for line in output.splitlines() if line.strip().startswith("The package `")]
    if found is None or int(found.group(1)) != len(reported) or not reported:
        return None
    names = [m.group(1) for line in reported if (m := PLATFORM_LINE_RE.fullmatch(line))]
    return names if len(names) == len(reported) else None


def accepted(platform: str, wheel_tags: list[str], elf_machines: list[int]) -> str | None:
    """None when a package reported as built for another platform is one knowledge/wheel-tags.yaml explains: every
    WHEEL `Tag:` (e.g. py3-none-manylinux2014_sbsa) ends in a tag accepted on platform and every ELF file it installed
    is for platform's machine; else why not."""
    allowed = tags_for(platform)
    ends = [tag.rsplit("-", 1)[-1] for tag in wheel_tags]
    if not wheel_tags or any(end not in allowed for end in ends):
        return f"its WHEEL tags {wheel_tags} are not among the aliases for {platform} ({sorted(allowed)})"
    wrong = sorted({hex(m) for m in elf_machines if m != MACHINES.get(platform)})
    if wrong:
        return f"it installed ELF files for machine {', '.join(wrong)}, not {platform}'s {hex(MACHINES[platform])}"
    return None
