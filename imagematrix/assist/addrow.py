"""add-row: propose a complete row for a vLLM version, explain each pin, append it to matrix.yaml keeping its layout.

The proposal is the resolver's answer, not a table: verl is the newest release when uv resolves it with the vLLM
version (with its `[vllm]` extra when that admits the version, read from verl's wheel metadata, else without that
extra and with an `overrides` entry for vllm and the reason), else the newest older release whose `[vllm]` extra
admits the version and that uv resolves with it (the pairing search: assist/pairing.py); torch, tensordict and
transformers are what uv picks for `verl[vllm]==V vllm==X` under the constraints that the compatibility rules impose;
CUDA is the CUDA of that torch wheel. A version that cannot work is refused with the resolver's reason and, when no
verl resolves, the newest vLLM that resolves with that verl and the newest verl that resolves with that vLLM.
uv's answers are cached by their exact inputs (assist/resolutions.py); locking the row resolves afresh.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from ruamel.yaml import YAML

from imagematrix import rules
from imagematrix.assist import pairing, resolutions
from imagematrix.model import fields, lockfile, paths, tags, yamlio
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError, InputErrors, RuntimeFailure
from imagematrix.model.matrix import Matrix, Row
from imagematrix.stages import generated, locks, render, resolve

# Constraints the resolver alone would get wrong (no upper bound upstream); each names the symptom it avoids.
# They apply rule vllm-transformers-5 of knowledge/rules.yaml up front; the rules still check the result.
# (vLLM specifier, constraint, reason)
ERA_CONSTRAINTS = [
    (">=0,<=0.11.0", "transformers<5",
     "vLLM <= 0.11 declares no transformers upper bound, yet fails to import with transformers 5"),
]


@dataclass
class Proposal:
    pins: dict[str, str]  # row keys -> versions (verl, vllm, torch, cuda, tensordict, transformers, python)
    why: dict[str, str] = field(default_factory=dict)
    extras: dict[str, str] = field(default_factory=dict)  # packages pinned beside the row's own pins
    overrides: dict[str, str] = field(default_factory=dict)  # package -> reason (its version is the pin)
    verl_extras: tuple[str, ...] = ()  # verl's extras the row installs besides the pins (under a vllm override)
    resolution: dict[str, lockfile.LockEntry] = field(default_factory=dict, repr=False)  # uv's answer, parsed

    def row(self, base: str = "") -> Row:
        """The row as the matrix would load it from the proposal (no defaults beyond it: no flash_attn, env or
        rollout_only), for the rules to check before anything is written. `base` is no rule's input."""
        pins = self.pins
        return Row(id=tags.row_id(verl=pins["verl"], vllm=pins["vllm"], torch=pins["torch"], cuda=pins["cuda"],
                                  python=pins["python"]),
                   verl=pins["verl"], vllm=pins["vllm"], torch=pins["torch"], cuda=pins["cuda"], flash_attn=None,
                   tensordict=pins["tensordict"], transformers=pins["transformers"], python=pins["python"], base=base,
                   extras=dict(self.extras), env={},
                   overrides={name: fields.Override(version=pins[name], reason=reason)
                              for name, reason in self.overrides.items()},
                   skip_patches={}, verl_extras=tuple(sorted(self.verl_extras)))


def _refuse(message: str, fix: str) -> InputError:
    return InputError(message, where="add-row", fix=fix)


def era_constraints(vllm: str) -> list[tuple[str, str]]:
    """(constraint, reason) of ERA_CONSTRAINTS that apply to this vLLM version."""
    return [(constraint, reason) for spec, constraint, reason in ERA_CONSTRAINTS
            if SpecifierSet(spec).contains(vllm, prereleases=True)]


def propose(vllm: str, python: str, verl: str | None = None, *, index: pairing.Index | None = None,
            resolver: Callable[[resolutions.Request], resolutions.Resolution] | None = None) -> Proposal:
    """The row add-row proposes for vLLM `vllm` (verl: the pairing search of assist/pairing.py). index and resolver
    default to the live index and uv behind the on-disk answer cache; `outdated` passes its own."""
    index = index or pairing.LiveIndex()
    resolver = resolver or resolutions.Resolver()
    if Version(vllm) not in index.versions("vllm"):
        raise _refuse(f"vLLM {vllm} has no wheel on the index", "pick a released vLLM version (pip index versions vllm)")
    why: dict[str, str] = {}
    required = index.requires_python("vllm", vllm) or ""
    if not pairing.fits(required, python):
        raise _refuse(f"vLLM {vllm} requires Python {required}, not {python}", "pass --python with a version it supports")
    constraints = []
    for constraint, reason in era_constraints(vllm):
        constraints.append(constraint)
        why[Requirement(constraint).name] = f"{constraint}: {reason}"
    chosen, resolved, why["verl"] = pairing.search(
        index, resolver, vllm, python, lambda v: [c for c, _ in era_constraints(v)], verl=verl)
    verl = chosen.verl
    overrides = {"vllm": chosen.override_reason()} if chosen.overridden else {}
    entries = lockfile.parse(resolved.stdout)
    pins = {"verl": verl, "vllm": vllm, "python": python}
    for key in ("torch", "tensordict", "transformers"):
        if key not in entries:
            raise RuntimeFailure(f"the resolution of verl {verl} + vLLM {vllm} has no {key}")
        pins[key] = entries[key].version
    extras = {}
    numpy, pyarrow = entries.get("numpy"), entries.get("pyarrow")
    if numpy and pyarrow and Version(numpy.version) < Version("2") and Version(pyarrow.version) >= Version("26"):
        # rule pyarrow-26-numpy-1: pyarrow declares no numpy requirement, so uv cannot see that 26 needs numpy 2
        again = resolver(chosen.request(python, [*constraints, "pyarrow<26"]))
        if again.ok:
            entries = lockfile.parse(again.stdout)
            extras["pyarrow"] = entries["pyarrow"].version
            why["extras"] = (f"pyarrow {extras['pyarrow']}: pyarrow 26 needs numpy 2 and this stack has numpy "
                             f"{numpy.version} (rule pyarrow-26-numpy-1)")
    why["torch"] = f"vLLM {vllm} requires it"
    why.setdefault("tensordict", "newest that verl and torch accept")
    why.setdefault("transformers", "newest that vLLM and verl accept")
    cuda = lockfile.torch_cuda(entries)
    if not cuda:
        raise RuntimeFailure(f"cannot tell the CUDA version of torch {pins['torch']} from its dependencies")
    pins["cuda"] = cuda
    why["cuda"] = f"the CUDA of the torch {pins['torch']} wheel on PyPI"
    if chosen.verl_extras:
        why["verl_extras"] = (f"verl {verl}'s [vllm] extra, left out for the vllm override, installs verl["
                              f"{','.join(chosen.verl_extras)}] besides its pins: the row keeps those")
    return Proposal(pins=pins, why=why, extras=extras, overrides=overrides, verl_extras=chosen.verl_extras,
                    resolution=entries)


# The pins and versions a proposal fills in, in the order of the matrix file's keys.
ROW_ORDER = tuple(k for k in fields.ROW_KEYS if k in fields.PIN_PACKAGES or k in ("cuda", "python"))


def row_yaml(pins: dict[str, str | None], defaults: dict, comment: str, extras: dict[str, str] | None = None,
             overrides: dict[str, str] | None = None, base: str | None = None,
             verl_extras: tuple[str, ...] = ()) -> str:
    """The row as matrix.yaml writes rows: a list item of quoted pins; keys equal to the defaults left out."""
    lines = [f"  # {comment}"]
    for key in ROW_ORDER:
        if key not in pins or (pins[key] is not None and defaults.get(key) == pins[key]):
            continue
        value = "null" if pins[key] is None else f'"{pins[key]}"'
        lines.append(f"{'  - ' if len(lines) == 1 else '    '}{key}: {value}")
    if base and base != defaults.get("base"):
        lines.append(f"    base: {base}")
    if extras:
        lines.append("    extras:")
        lines += [f'      {name}: "{version}"' for name, version in sorted(extras.items())]
    if verl_extras:
        lines.append(f"    verl_extras: [{', '.join(verl_extras)}]")
    if overrides:  # reasons hold no quotes or backslashes (fields.REASON_RE), so double quotes always work
        lines.append("    overrides:")
        for name, reason in sorted(overrides.items()):
            lines += [f"      {name}:", f'        version: "{pins[name]}"', f'        reason: "{reason}"']
    return "\n".join(lines) + "\n"


def appended(path: Path, snippet: str) -> str:
    """matrix.yaml's text with the row snippet appended, every other byte kept (comments, quotes, layout)."""
    text = path.read_text()
    doc = yamlio.load(path)
    if list(doc)[-1] != "rows":
        raise InputError("`rows:` is not the last key of the matrix file, so a row cannot be appended to it",
                         where=str(path), fix="move `rows:` to the end of the file")
    new = text.rstrip("\n") + "\n\n" + snippet
    before = YAML(typ="safe").load(text)["rows"]
    after = YAML(typ="safe").load(new)["rows"]
    if after[:-1] != before or len(after) != len(before) + 1:
        raise RuntimeFailure(f"appending to {path} would not add exactly one row; add it by hand:\n{snippet}")
    return new


def matrix_defaults(matrix: Matrix) -> dict[str, str]:
    """The string values of the matrix file's `defaults:` (what a new row inherits)."""
    return {k: str(v) for k, v in (yamlio.load(matrix.path).get("defaults") or {}).items() if isinstance(v, str)}


def base_for(defaults: dict[str, str], python: str) -> str | None:
    """The base a new row needs when the default base is a bootstrapped suite that does not package its Python:
    a suite that does (the default's distribution first, as knowledge/bases.yaml lists them); None otherwise."""
    default = defaults.get("base", "")
    if not default.startswith(fields.DEBOOTSTRAP_PREFIX):
        return None
    suites = fields.bootstrap_suites()
    current = suites.get(default[len(fields.DEBOOTSTRAP_PREFIX):], {})
    if python in current.get("python", []):
        return None
    fitting = [name for name, suite in suites.items() if python in suite.get("python", [])]
    fitting.sort(key=lambda name: suites[name]["distro"] != current.get("distro"))
    return f"{fields.DEBOOTSTRAP_PREFIX}{fitting[0]}" if fitting else None


def prepare(matrix: Matrix, proposal: Proposal, vllm: str) -> tuple[Row, str, str]:
    """(the new row as loaded, its YAML snippet, the whole new matrix text); nothing is written.

    The whole matrix as it would be is loaded (schema, duplicate ids) from a probe file beside it."""
    pins = proposal.pins
    new_id = tags.row_id(verl=pins["verl"], vllm=pins["vllm"], torch=pins["torch"], cuda=pins["cuda"],
                         python=pins["python"])
    if new_id in {r.id for r in matrix.rows}:
        raise InputError(f"the matrix already has row {new_id} (same verl, vLLM, torch, CUDA and Python)",
                         where=str(matrix.path), fix="pass another --verl or --python, or edit that row")
    defaults = matrix_defaults(matrix)
    snippet = row_yaml(pins, defaults, f"vLLM {vllm}: proposed by `build.py add-row`", proposal.extras,
                       proposal.overrides, base=base_for(defaults, pins["python"]), verl_extras=proposal.verl_extras)
    text = appended(matrix.path, snippet)
    probe = matrix.path.with_name(f".{matrix.path.name}.add-row-{os.getpid()}")
    probe.write_text(text)
    try:
        new_matrix = matrix_mod.load(probe)
    except InputError as exc:
        raise _from_probe(exc, probe, matrix.path, new_id) from None
    finally:
        probe.unlink()
    return new_matrix.rows[-1], snippet, text


def _from_probe(exc: InputError, probe: Path, path: Path, row_id: str) -> InputError:
    """The probe matrix's errors told about the proposed row and add-row's options: the probe file (gone once this
    returns) and its line numbers, which matrix.yaml does not have yet, would only mislead."""
    location = re.compile(rf"{re.escape(str(probe))}(:\d+)?(, row #\d+)?")
    errors = [InputError(e.message.replace(str(probe), str(path)),
                         where=location.sub(f"add-row, proposed row {row_id}", e.where or "") or None,
                         fix=f"{e.fix}; with add-row: pass another --python, --verl or --vllm" if e.fix else None)
              for e in (exc.errors if isinstance(exc, InputErrors) else [exc])]
    return errors[0] if len(errors) == 1 else InputErrors(errors)


def apply(matrix: Matrix, row: Row, text: str) -> Path:
    """Lock the row, check it against the rules, then write matrix, lock and build context; returns the lock path.
    A proposal the rules reject is refused with nothing written."""
    cutoff = locks.now()
    compiled = resolve.resolve(row, hashes=True, exclude_newer=cutoff, cache_first=False)
    problems = rules.to_errors(row, rules.evaluate(row, lockfile.parse(compiled)), matrix.path)
    if problems:
        raise InputErrors(problems)
    lock = locks.lock_text(row, compiled, cutoff, locks.index_sdist(row) if row.flash_attn else None)
    paths.write_atomic(matrix.path, text)
    paths.write_atomic(locks.lock_path(matrix, row), lock)
    new_matrix = matrix_mod.load(matrix.path)
    generated.write(new_matrix, render.render(new_matrix, [row]), prune=False)
    return locks.lock_path(matrix, row)
