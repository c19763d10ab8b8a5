"""Source patches as data (dockerfiles/patches/*.yaml): loading, validation, selection by version.

A row picks up every patch whose `versions` specifier contains the row's version of `package`, unless the row
lists the patch id under `skip_patches:` with a reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from imagematrix.model import paths, yamlio
from imagematrix.model.errors import InputError, InputErrors
from imagematrix.model.fields import PACKAGE_RE, PATCH_ID_RE
from imagematrix.model.matrix import Row

try:  # the parser match.expand uses (re._parser from Python 3.11, sre_parse before)
    from re import _parser as _template_parser
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _template_parser

FILE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\.py\Z")
SCOPE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def _specifier(value: str) -> str:
    try:
        spec = SpecifierSet(value)
    except InvalidSpecifier:
        raise ValueError(f"{value!r} is not a PEP 440 specifier (e.g. \">=0.7.0,<0.7.3\")") from None
    if not str(spec):
        raise ValueError("empty specifier: a patch must say which versions it applies to")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value, re.MULTILINE)
    except re.error as exc:
        raise ValueError(f"anchor is not a valid regular expression: {exc}") from None
    return value


def _pattern(pattern: re.Pattern[str], what: str):
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        if ".." in value.split("/"):
            raise ValueError(f"{value!r} leaves the package directory")
        return value

    return check


class Patch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, AfterValidator(_pattern(PATCH_ID_RE, "patch id"))]
    # PEP 503 normalized (`vLLM`, `Flash_Attn` -> vllm, flash-attn): compared with the row's pins that way
    package: Annotated[str, AfterValidator(_pattern(PACKAGE_RE, "package name")), AfterValidator(canonicalize_name)]
    versions: Annotated[str, AfterValidator(_specifier)]
    file: Annotated[str, AfterValidator(_pattern(FILE_RE, "relative path of a .py file"))]
    scope: Annotated[str, AfterValidator(_pattern(SCOPE_RE, "dotted def/class name"))] | None = None
    description: str
    anchor: Annotated[str, AfterValidator(_regex)]
    replacement: str
    check: str

    def applies_to(self, version: str) -> bool:
        return SpecifierSet(self.versions).contains(version, prereleases=True)

    def for_image(self, version: str) -> dict:
        """The JSON the in-image applier reads (patch_apply.py)."""
        data = self.model_dump(exclude={"versions", "description"})
        data["version"] = version
        return data


@dataclass(frozen=True)
class Selection:
    applied: list[Patch]
    skipped: dict[str, str]  # id -> reason


def load(directory: Path = paths.PATCHES) -> list[Patch]:
    """Load and validate every patch file; check that replacements are valid templates for their anchors."""
    files = sorted(directory.glob("*.yaml"))
    patches: list[Patch] = []
    errors: list[InputError] = []
    for file in files:
        try:
            doc = yamlio.load_mapping(file, keys="one key, `patches:`, with a list of patches")
        except InputError as exc:
            errors.append(exc)
            continue
        items = doc.get("patches")
        if not isinstance(items, list) or set(doc) != {"patches"}:
            errors.append(InputError("a patch file holds one key, `patches:`, with a list of patches", where=str(file)))
            continue
        for index, item in enumerate(items):
            where = f"{file}:{yamlio.line_of(items, index)}"
            try:
                patch = Patch.model_validate(dict(item) if isinstance(item, dict) else item)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = ".".join(str(p) for p in err["loc"]) or "(patch)"
                    errors.append(InputError(err["msg"].removeprefix("Value error, "), where=f"{where}, field {loc}",
                                             fix="see the field reference at the top of imagematrix/in_image/patch_apply.py"))
                continue
            problem = _replacement_problem(patch)
            if problem:
                errors.append(InputError(problem, where=f"{where}, patch {patch.id}, field replacement"))
                continue
            if patch.check and re.search(patch.anchor, patch.check, re.MULTILINE):
                errors.append(InputError("the check text matches the anchor, so it cannot prove the patch applied",
                                         where=f"{where}, patch {patch.id}, field check"))
            patches.append(patch)
    seen: set[str] = set()
    for patch in patches:
        if patch.id in seen:
            errors.append(InputError(f"duplicate patch id {patch.id!r}", where=str(directory)))
        seen.add(patch.id)
    if errors:
        raise InputErrors(errors)
    return patches


def _replacement_problem(patch: Patch) -> str | None:
    """The replacement must be a valid template for its anchor, as re's match.expand reads it in the build: groups
    the anchor defines (\\g<name>, \\1) and known escapes only (\\q or \\9 failed only inside the build)."""
    anchor = re.compile(patch.anchor, re.MULTILINE)
    for ref in re.findall(r"\\g<(\w+)>", patch.replacement):
        if ref not in anchor.groupindex and not (ref.isdigit() and int(ref) <= anchor.groups):
            return f"replacement uses \\g<{ref}>, which the anchor does not define"
    try:
        _template_parser.parse_template(patch.replacement, anchor)
    except (re.error, IndexError) as exc:
        return f"replacement is not a valid template for its anchor: {exc}"
    return None


def pinned(row: Row, patch: Patch) -> str | None:
    """The row's pinned version of the patch's package (names compared PEP 503 normalized), None if it pins none."""
    return {canonicalize_name(name): version for name, version in row.pins().items()}.get(patch.package)


def select(row: Row, patches: list[Patch]) -> Selection:
    known = {p.id for p in patches}
    unknown = sorted(set(row.skip_patches) - known)
    if unknown:
        raise InputError(f"skip_patches names unknown patch(es): {', '.join(unknown)}",
                         where=f"row {row.id}, field skip_patches", fix=f"known patches: {', '.join(sorted(known))}")
    applied, skipped = [], {}
    for patch in patches:
        version = pinned(row, patch)
        if version is None or not patch.applies_to(version):
            continue
        if patch.id in row.skip_patches:
            skipped[patch.id] = row.skip_patches[patch.id]
        else:
            applied.append(patch)
    return Selection(applied=applied, skipped=skipped)
