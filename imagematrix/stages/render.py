"""Render each row to dockerfiles/generated/<row-id>/: a Dockerfile plus the build context files it needs.

Output is byte-for-byte deterministic and committed; `render --check` reports drift. Every row is rendered in
memory first, so a row with bad input gets nothing written (its directory stays as it was) while the other rows are
written; each row directory is swapped in whole.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import jinja2

from imagematrix.knowledge import envdefaults, flash_attn, patches, training
from imagematrix.model import fields, labels, lockfile, paths, tags
from imagematrix.model.errors import InputError, InputErrors
from imagematrix.model.matrix import Matrix, Row
from imagematrix.stages import locks

# A row's image is built FROM this local image when its base is `debootstrap:<suite>`.


@dataclass(frozen=True)
class Rendered:
    row: Row
    files: dict[str, bytes]  # name -> content, inside dockerfiles/generated/<row-id>/
    platform: str = fields.DEFAULT_PLATFORM  # the platform this context builds (one context per platform of a row)

    @property
    def name(self) -> str:
        """The context's directory under dockerfiles/generated/: the row id for linux/amd64 (where it was before
        rows had platforms), `<row-id>@linux-arm64` for another platform (`@` is in no tag, so in no row id)."""
        return context_name(self.row.id, self.platform)

    def context_digest(self) -> str:
        """Digest of everything the build reads: the image's input digest."""
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return "sha256:" + h.hexdigest()


    def stage_keys(self) -> dict[str, str]:
        """The shared build stages and a key of everything each reads: {"os": key, "torch": key}.

        Rows with the same os key (base, Python, tools) build the same os stage; with the same torch key (that, and
        the same base.txt) the same torch stage. CI names a shared BuildKit cache after each key
        (buildcache-os-<key>, buildcache-torch-<key>), so a row imports the stages a sibling built."""
        text = self.files["Dockerfile"].decode()
        lines = text.splitlines(keepends=True)
        starts = [i for i, line in enumerate(lines) if line.startswith("FROM ")]

        def stage(name: str) -> str:  # its instructions; comments (row ids, versions) are no part of the build
            first = next(i for i in starts if lines[i].rstrip().endswith(f" AS {name}"))
            end = next((i for i in starts if i > first), len(lines))
            return "".join(line for line in lines[first:end] if not line.lstrip().startswith("#"))

        preamble = "".join(line for line in lines[:starts[0]] if line.startswith("ARG BASE_REGISTRY"))
        keys = {}
        h = hashlib.sha256((preamble + stage("os")).encode())
        for name in ("buildenv.sh", "tools.txt"):
            h.update(name.encode() + b"\0" + hashlib.sha256(self.files.get(name, b"")).digest())
        keys["os"] = h.hexdigest()[:24]
        h = hashlib.sha256((keys["os"] + stage("torch")).encode())
        h.update(b"base.txt\0" + hashlib.sha256(self.files.get("base.txt", b"")).digest())
        keys["torch"] = h.hexdigest()[:24]
        return keys


def context_name(row_id: str, platform: str) -> str:
    return row_id if platform == fields.DEFAULT_PLATFORM else f"{row_id}@{fields.platform_slug(platform)}"


class _Loader(jinja2.FileSystemLoader):
    """Templates from a directory, a compiled one reused while its file holds the same text (Jinja's own check,
    the file's mtime, misses a rewrite within the same clock tick)."""

    def get_source(self, environment, template):
        source, filename, _ = super().get_source(environment, template)

        def uptodate() -> bool:
            try:
                return Path(filename).read_text(encoding="utf-8") == source
            except (OSError, UnicodeDecodeError):
                return False

        return source, filename, uptodate


@functools.lru_cache(maxsize=4)
def _environment_of(templates: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=_Loader(templates),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _environment() -> jinja2.Environment:
    """One environment per templates directory, so each template compiles once per process, not once per row."""
    return _environment_of(str(paths.TEMPLATES))


def _template_where(exc: Exception, name: str) -> str:
    """`<template>:<line>` of a Jinja error: its own line for a syntax error, else the innermost template frame of
    the traceback (Jinja rewrites template frames to the template's file and line)."""
    path, line = str(paths.TEMPLATES / name), getattr(exc, "lineno", None)
    if isinstance(exc, jinja2.TemplateSyntaxError):
        path = exc.filename or str(paths.TEMPLATES / (exc.name or name))
    else:
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.startswith(str(paths.TEMPLATES)):
                path, line = tb.tb_frame.f_code.co_filename, tb.tb_lineno
            tb = tb.tb_next
    return f"{path}:{line}" if line else path


def render_template(name: str, **context) -> str:
    """dockerfiles/templates/<name> rendered; a missing template, a syntax error or an undefined variable is bad
    input (exit 2) naming the template's file and line, not an internal error."""
    try:
        return _environment().get_template(name).render(**context)
    except jinja2.TemplateNotFound as exc:
        raise InputError(f"template {exc.name} not found", where=str(paths.TEMPLATES / str(exc.name)),
                         fix="restore it (`git checkout -- dockerfiles/templates/`)") from None
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(f"template syntax error: {exc.message}", where=_template_where(exc, name),
                         fix="fix the Jinja syntax at that line") from None
    except jinja2.UndefinedError as exc:
        raise InputError(f"template uses an undefined variable: {exc.message}", where=_template_where(exc, name),
                         fix="use a variable render passes (render.render_row) or define it in the template") from None
    except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError, AttributeError,
            RecursionError) as exc:  # the template's own expressions ({{ 1 / 0 }}, {{ 'a' + 1 }}) or includes
        raise InputError(f"template failed: {exc.__class__.__name__}: {exc}", where=_template_where(exc, name),
                         fix="fix the expression at that line") from None


def _template_file(name: str) -> bytes:
    """A file copied from dockerfiles/templates/ into each row's context as it is."""
    path = paths.TEMPLATES / name
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the template file: {exc.strerror or exc}", where=str(path),
                         fix="restore it (`git checkout -- dockerfiles/templates/`)") from None


def image_labels(row: Row, lock_sha: str, selection: patches.Selection, fa_name: str | None,
                 platform: str = fields.DEFAULT_PLATFORM) -> dict[str, str]:
    out = {
        "org.opencontainers.image.title": f"verl {row.verl} + vLLM {row.vllm}",
        "org.opencontainers.image.version": row.id,
        "org.opencontainers.image.base.name": row.base,
        labels.ROW: row.id,
        labels.PYTHON: row.python,
        labels.CUDA: row.cuda,
        labels.LOCK_SHA256: lock_sha,
        labels.PATCHES: ",".join(p.id for p in selection.applied),
    }
    for name, version in sorted(row.pins().items()):
        out[labels.pin(name)] = version
    if fa_name:
        out[labels.FLASH_ATTN_WHEEL] = fa_name
    out[labels.TRAINING] = training.attention(row).note
    if platform != fields.DEFAULT_PLATFORM:  # amd64 contexts stay as they were before rows had platforms
        out[labels.PLATFORM] = platform
    return out


def _training(row: Row) -> dict:
    """How the image trains with verl, for the GPU training smoke test inside it (row.json)."""
    how = training.attention(row)
    return {"attn_implementation": how.attn_implementation, "override": how.override, "note": how.note}


def render_row(matrix: Matrix, row: Row, patch_list: list[patches.Patch], env_defaults,
               platform: str = fields.DEFAULT_PLATFORM) -> Rendered:
    """The row's build context for platform: the Dockerfile and what it reads, from the platform's lock."""
    lock, entries = locks.read_lock_entries(matrix, row, platform)
    base_entries = lockfile.torch_closure(entries)
    base_names = {e.name for e in base_entries}
    selection = patches.select(row, patch_list)
    env = envdefaults.for_row(row, env_defaults)
    fa = _flash_attn(row, lock)
    lock_sha = lockfile.file_sha256(lock)
    row_labels = image_labels(row, lock_sha, selection, fa["key"] if fa else None, platform)
    dockerfile = render_template(
        "Dockerfile.j2",
        row=row, base_image=row.platform_base_image(platform), selection=selection, env=env, labels=row_labels, fa=fa,
        base_digest=row.base_digest if platform == fields.DEFAULT_PLATFORM else None,
        base_repository=fields.BASE_REPOSITORY, default_registry=tags.DEFAULT_REGISTRY,
    )
    # No row id in the header: rows with the same torch must get byte-identical base.txt to share layers.
    header = "# DO NOT EDIT: generated by `python build.py render` from the row's lock (locks/).\n"
    files = {
        "Dockerfile": dockerfile.encode(),
        "base.txt": (header + "".join(e.text for e in base_entries)).encode(),
        "requirements.txt": (header + "".join(e.text for n, e in sorted(entries.items()) if n not in base_names)).encode(),
        "tools.txt": _tools_lock(matrix).encode(),
        "buildenv.sh": _template_file("buildenv.sh"),
        "patch_apply.py": (paths.IN_IMAGE / "patch_apply.py").read_bytes(),
        "preflight.py": (paths.IN_IMAGE / "preflight.py").read_bytes(),
        "entrypoint.sh": _template_file("entrypoint.sh"),
        "patches.json": (json.dumps([p.for_image(patches.pinned(row, p)) for p in selection.applied],
                                    indent=2, sort_keys=True) + "\n").encode(),
        "row.json": (json.dumps({
            "id": row.id, "pins": row.pins(), "python": row.python, "cuda": row.cuda, "base": row.base,
            "lock_sha256": lock_sha, "patches": [p.id for p in selection.applied],
            "skipped_patches": selection.skipped, "env": env, "labels": row_labels,
            "training": _training(row),
            **({"platform": platform} if platform != fields.DEFAULT_PLATFORM else {}),
        }, indent=2, sort_keys=True) + "\n").encode(),
    }
    if fa:
        files["flash-attn-build.txt"] = ("".join(f"{line}\n" for line in flash_attn.data().build_requirements)).encode()
        files["cuda-toolchain.txt"] = ("".join(f"{line}\n" for line in flash_attn.toolchain(row.cuda) or [])).encode()
        files["flash_attn_compile.py"] = (paths.IN_IMAGE / "flash_attn_compile.py").read_bytes()
    return Rendered(row=row, files=files, platform=platform)


def _flash_attn(row: Row, lock: str) -> dict | None:
    """What the Dockerfile needs to compile the row's flash-attn: the sdist (the one the row's lock records, else
    knowledge/flash-attn.yaml's), the architectures, the key."""
    if not row.flash_attn:
        return None
    sdist = locks.flash_attn_sdist(lock, row)
    if sdist is None:  # read_lock refuses such a lock first (locks.sdist_problem)
        raise InputError(f"flash-attn {row.flash_attn}: the row's lock records no sdist", where=f"row {row.id}",
                         fix=f"run `python build.py lock --row {row.id}` (it records the sdist's file name and sha256 "
                             "from the index)")
    wheel = flash_attn.wheel_spec(row)
    if not wheel.archs:
        raise InputError(f"no GPU architecture that flash-attn {row.flash_attn} and torch {row.torch} "
                         f"(CUDA {row.cuda}) both support", where=f"row {row.id}",
                         fix="set flash_attn_archs, or pick other versions")
    return {"key": wheel.key, "file": sdist.file, "sha256": sdist.sha256,
            "toolchain": flash_attn.toolchain(row.cuda) is not None,
            "archs": ";".join(wheel.arch_tags), "sm": ", sm_".join(wheel.arch_tags)}


def _tools_lock(matrix: Matrix) -> str:
    path = locks.tools_lock_path(matrix)
    if not path.exists():
        raise InputError(f"{path.relative_to(matrix.root)} is missing", fix="run `python build.py lock`")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"unreadable ({exc.strerror or exc})"
        raise InputError(f"the build tools' lock is {problem}", where=str(path),
                         fix="remove it, then run `python build.py lock`") from None


def render_one(matrix: Matrix, row: Row, platform: str = fields.DEFAULT_PLATFORM) -> Rendered:
    """One context of a row, rendered in memory (InputError when it cannot be)."""
    return render_row(matrix, row, patches.load(paths.PATCHES), envdefaults.load(), platform)


def render_each(matrix: Matrix, rows: list[Row], patch_dir: Path = paths.PATCHES,
                all_platforms: bool = False) -> tuple[list[Rendered], dict[str, InputError]]:
    """Render rows in memory, each on its own: (the rendered rows, {row id: why it did not render}). What every row
    reads (patches, env defaults) stops all of them (InputError). all_platforms: a context for each platform of a
    row (`render` writes them all), else the linux/amd64 one, which plan, promote and docs read."""
    patch_list = patches.load(patch_dir)
    env_defaults = envdefaults.load()
    done, failed = [], {}
    for row in rows:
        try:
            done.extend(render_row(matrix, row, patch_list, env_defaults, platform)
                        for platform in (row.platforms if all_platforms else (fields.DEFAULT_PLATFORM,)))
        except InputError as exc:
            failed[row.id] = exc
    return done, failed


def errors_of(failed: dict[str, InputError]) -> InputError:
    """The rows' render errors as one (a template's error, the same for every row, once)."""
    unique = list({exc.render(): exc for exc in failed.values()}.values())
    return unique[0] if len(unique) == 1 else InputErrors(unique)


def render(matrix: Matrix, rows: list[Row], patch_dir: Path = paths.PATCHES) -> list[Rendered]:
    """Render rows in memory; raises InputError (every row's) before anything is written."""
    done, failed = render_each(matrix, rows, patch_dir)
    if failed:
        raise errors_of(failed)
    return done
