"""Apply source patches to installed packages: standard library only.

This file runs in two places: inside the image build (render copies it into the build context, the Dockerfile
runs it with the image's Python), and in the tests against real files from vLLM wheels. A patch whose anchor is
not found exactly once fails loudly; every applied patch is recorded in a JSON file in the image.

Patch fields (see dockerfiles/patches/*.yaml): id, package, file (inside the installed package's
site-packages), scope (dotted def/class name the anchor is searched in), anchor (Python regex, MULTILINE),
replacement (re.sub template, may use \\g<name>), check (literal text present after patching).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

FLAGS = re.MULTILINE


class PatchError(Exception):
    pass


def scope_span(text: str, scope: str | None) -> tuple[int, int]:
    """(start, end) offsets of the dotted def/class `scope` in text; the whole text when scope is empty."""
    start, end = 0, len(text)
    for name in (scope.split(".") if scope else []):
        region = text[start:end]
        heads = list(re.finditer(rf"^(?P<indent>[ \t]*)(?:async[ \t]+)?(?:def|class)[ \t]+{re.escape(name)}\b", region, FLAGS))
        if len(heads) != 1:
            raise PatchError(f"scope {name!r} found {len(heads)} times (expected exactly once)")
        head = heads[0]
        indent = len(head.group("indent").expandtabs())
        body_start = start + head.start()
        cursor = start + region.index("\n", head.end()) + 1 if "\n" in region[head.end():] else end
        scope_end = end
        for line in re.finditer(r"^.*$", text[cursor:end], FLAGS):
            content = line.group(0)
            stripped = content.strip()
            if not stripped or stripped.startswith("#") or stripped[0] in ")]}":
                continue
            if len(content) - len(content.lstrip()) <= indent:
                scope_end = cursor + line.start()
                break
        start, end = body_start, scope_end
    return start, end


def apply_text(text: str, patch: dict) -> str:
    """Return text with the patch applied; PatchError unless the anchor matches exactly once."""
    start, end = scope_span(text, patch.get("scope"))
    region = text[start:end]
    matches = list(re.finditer(patch["anchor"], region, FLAGS))
    if len(matches) != 1:
        raise PatchError(
            f"patch {patch['id']}: anchor found {len(matches)} times in {patch['file']}"
            f"{' scope ' + patch['scope'] if patch.get('scope') else ''} (expected exactly once)"
        )
    try:
        replaced = matches[0].expand(patch["replacement"])
    except (re.error, IndexError) as exc:
        raise PatchError(f"patch {patch['id']}: its replacement is not a valid template: {exc}") from None
    new_region = region[: matches[0].start()] + replaced + region[matches[0].end():]
    patched = text[:start] + new_region + text[end:]
    problem = verify_text(patched, patch)
    if problem:
        raise PatchError(f"patch {patch['id']}: applied, but {problem}")
    try:
        compile(patched, patch["file"], "exec")
    except SyntaxError as exc:
        raise PatchError(f"patch {patch['id']}: the patched {patch['file']} is not valid Python: {exc}") from None
    return patched


def verify_text(text: str, patch: dict) -> str | None:
    """None when the patch is in place (anchor gone, check present), else what is wrong."""
    try:
        start, end = scope_span(text, patch.get("scope"))
    except PatchError as exc:
        return str(exc)
    if re.search(patch["anchor"], text[start:end], FLAGS):
        return f"anchor of {patch['id']} still matches in {patch['file']}"
    if patch["check"] not in text[start:end]:
        return f"check text of {patch['id']} not found in {patch['file']}: {patch['check']!r}"
    return None


def _installed_file(package: str, file: str) -> Path:
    from importlib import metadata

    dist = metadata.distribution(package)
    return Path(str(dist.locate_file(file)))


FIELDS = ("id", "package", "version", "file", "anchor", "replacement", "check")  # strings; scope: a string or null


def read_patches(path: Path) -> list[dict]:
    """The patches JSON render wrote; ValueError saying what is wrong with it (unreadable, not JSON, another shape,
    an anchor that is no regular expression)."""
    try:
        patches = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except RecursionError:
        raise ValueError(f"{path} is not JSON this script reads: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is not JSON: {exc}") from None
    for index, patch in enumerate(patches if isinstance(patches, list) else [None]):
        if not isinstance(patches, list) or not isinstance(patch, dict) \
                or not all(isinstance(patch.get(key), str) for key in FIELDS) \
                or not isinstance(patch.get("scope"), (str, type(None))):
            raise ValueError(f"{path} is not a JSON list of patches (entry {index}): each an object with "
                             f"{', '.join(FIELDS)} as strings and scope a string or null")
        try:
            re.compile(patch["anchor"], FLAGS)
        except re.error as exc:
            raise ValueError(f"{path}: the anchor of patch {patch['id']!r} is no regular expression: {exc}") from None
    return patches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="apply source patches to installed packages")
    parser.add_argument("patches", type=Path, help="JSON list of patches (written by build.py render)")
    parser.add_argument("--record", type=Path, required=True, help="where to write what was applied")
    parser.add_argument("--verify", action="store_true", help="only check that the patches are in place")
    args = parser.parse_args(argv)
    from importlib import metadata

    try:  # bad arguments: the usage line and exit 2 (argparse's), never a traceback
        patches = read_patches(args.patches)
    except ValueError as exc:
        parser.error(str(exc))
    if args.record.is_dir():
        parser.error(f"--record {args.record} is a directory: pass the file the record goes to")
    record, failures = [], []
    for patch in patches:
        try:
            installed = metadata.version(patch["package"])
            if installed != patch["version"]:
                raise PatchError(f"patch {patch['id']}: {patch['package']} {installed} installed, "
                                 f"the patch was selected for {patch['version']}")
            path = _installed_file(patch["package"], patch["file"])
            before = path.read_text(encoding="utf-8")
            if args.verify:
                problem = verify_text(before, patch)
                if problem:
                    raise PatchError(problem)
                continue
            after = apply_text(before, patch)
            path.write_text(after, encoding="utf-8")
            record.append({
                "id": patch["id"], "package": patch["package"], "version": installed, "file": patch["file"],
                "sha256_before": hashlib.sha256(before.encode()).hexdigest(),
                "sha256_after": hashlib.sha256(after.encode()).hexdigest(),
            })
            print(f"patched {patch['id']}: {path}", flush=True)
        except (PatchError, OSError, metadata.PackageNotFoundError) as exc:
            failures.append(str(exc))
    for failure in failures:
        print(f"PATCH FAILED: {failure}", file=sys.stderr)
    if failures:
        return 1
    if not args.verify:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
