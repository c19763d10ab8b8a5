"""Property test (issue 13): random mutations of matrix.yaml and of every data file (knowledge/*.yaml, the patches
in dockerfiles/patches/, the templates in dockerfiles/templates/) never crash the loaders or the offline commands.

Each example writes one mutated file into a temporary copy of the project (matrix.yaml, locks/, knowledge/,
dockerfiles/), or removes it, points the code at that copy, then:
- calls the file's loader (and the queries the commands make over it): it returns, or raises InputError /
  InputErrors / RuntimeFailure, never another exception;
- runs `render` (and `plan --bake` for the matrix, `pick` for the vLLM advice) in-process: exit 0, 1 or 2, never
  "internal error"; on exit 2 nothing under the temporary directory changed, and on any exit only
  dockerfiles/generated/ may have.

YAML files get structural mutations (types, keys, values) and truncation; templates (Jinja and the files copied as
they are) get line and Jinja-fragment mutations and truncation; any of them may be removed.

paths.py has no environment variable for the knowledge folder, and several modules bound its paths at import
(default arguments, module constants), so `_redirect` patches each of those places; caches are cleared around
every example so no mutated data leaks into other tests.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from imagematrix import rules
from imagematrix.cli import app
from imagematrix.knowledge import coverage as coverage_rules
from imagematrix.knowledge import (
    envdefaults,
    extras,
    flash_attn,
    gpus,
    patches,
    platform_wheels,
    training,
    vllm_advice,
    wheel_tags,
)
from imagematrix.model import fields, lockfile, paths
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.rules import schema
from imagematrix.stages import render as render_stage
from tests.support import fuzz_settings

ROOT = Path(__file__).resolve().parents[2]
KNOWLEDGE_FILES = ("rules.yaml", "gpus.yaml", "env-defaults.yaml", "bases.yaml", "training.yaml", "flash-attn.yaml",
                   "extras.yaml", "vllm-advice.yaml", "coverage.yaml", "platform-wheels.yaml", "wheel-tags.yaml")
PATCH_FILES = tuple(f"dockerfiles/patches/{p.name}" for p in sorted((ROOT / "dockerfiles" / "patches").glob("*.yaml")))
TEMPLATES = tuple(f"dockerfiles/templates/{p.name}" for p in sorted((ROOT / "dockerfiles" / "templates").iterdir()))
JINJA = tuple(name for name in TEMPLATES if name.endswith(".j2"))  # the others are copied into each context as they are
FILES = ("matrix.yaml", *(f"knowledge/{name}" for name in KNOWLEDGE_FILES), *PATCH_FILES)
# the fuzz must reach every data file: a new one is added to FILES or TEMPLATES (test_every_data_file_is_fuzzed)
DATA_DIRS = ("knowledge", "dockerfiles/patches", "dockerfiles/templates")
NETWORK_RULE_KINDS = {"verl-ranges", "python-requires", "pin-requires"}  # read metadata / Requires-Python from the index
EXPECTED = (InputError, RuntimeFailure)  # InputErrors is an InputError

RENDERED_ROWS = ("verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311",
                 "verl0.6.1-vllm0.11.0-torch2.8.0-cu128-py311",  # trains with sdpa (training.yaml's override)
                 "verl0.4.1-vllm0.8.5-torch2.6.0-cu124-py311-fa2.7.4.post1",
                 "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py312-fa2.8.3")

ODD_STRINGS = [
    "", " ", "\t", "\n\n", "..", "../", "../../../../etc/passwd", "/etc/shadow", "$(touch pwned)", "`id`",
    "; rm -rf / #", "a|b && c > d", "${HOME}", "'", '"', "#", "::", "- x", "{a: b}", "[1, 2", "*alias", "&anchor",
    "!!python/object/apply:os.system ['id']", "%TAG", "~", "null", "yes", "no", "1e999", "-0", "0x1F", "0o17",
    "NaN", "x" * 5000, "9" * 400, "ü", "🙂" * 3, "\u202e\u200b", "\u2028", "\x85", "\x7f", "C:\\Windows",
    "2.8.3\n  evil: 1", "12.4; echo owned", "torch==2.6.0 --hash=sha256:" + "0" * 64, "sm_90", "9.0", "3.11",
]

# Parts of ODD_STRINGS that must never reach a file the build executes or feeds to pip (Dockerfile, *.sh, *.txt):
# every value on such a line is checked against a strict pattern first (model/fields.py, knowledge loaders).
INJECTED = ("touch pwned", "`id`", "rm -rf", "a|b && c", "${HOME}", "evil: 1", "echo owned")

SHELLISH = [s for s in ODD_STRINGS if any(m in s for m in INJECTED)]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(),
    st.sampled_from(ODD_STRINGS), st.text(max_size=30),
)
keys = st.one_of(st.sampled_from(ODD_STRINGS[:40]), st.text(min_size=1, max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(keys, inner, max_size=3)), max_leaves=6)


# --- the project copy -----------------------------------------------------------------------------------------

def _redirect(mp: pytest.MonkeyPatch, root: Path) -> None:
    """Point every reader of matrix/knowledge data at the copy under root."""
    knowledge = root / "knowledge"
    mp.setattr(paths, "ROOT", root)  # messages print data paths relative to ROOT
    mp.setattr(paths, "MATRIX", root / "matrix.yaml")
    mp.setattr(paths, "LOCKS", root / "locks")
    mp.setattr(paths, "GENERATED", root / "dockerfiles" / "generated")
    mp.setattr(paths, "KNOWLEDGE", knowledge)
    mp.setattr(paths, "BASES", knowledge / "bases.yaml")
    mp.setattr(paths, "ENV_DEFAULTS", knowledge / "env-defaults.yaml")
    mp.setattr(paths, "RULES", knowledge / "rules.yaml")
    mp.setattr(paths, "GPUS", knowledge / "gpus.yaml")
    mp.setattr(paths, "FLASH_ATTN", knowledge / "flash-attn.yaml")
    mp.setattr(paths, "TEMPLATES", root / "dockerfiles" / "templates")
    mp.setattr(paths, "PATCHES", root / "dockerfiles" / "patches")
    mp.setattr(gpus, "GPUS", knowledge / "gpus.yaml")
    mp.setattr(training, "TRAINING", knowledge / "training.yaml")
    mp.setattr(platform_wheels, "PLATFORM_WHEELS", knowledge / "platform-wheels.yaml")
    # default arguments bound at import time
    mp.setattr(envdefaults.load, "__defaults__", (knowledge / "env-defaults.yaml",))
    mp.setattr(wheel_tags.load, "__defaults__", (knowledge / "wheel-tags.yaml",))
    mp.setattr(flash_attn.data.__wrapped__, "__defaults__", (knowledge / "flash-attn.yaml",))
    mp.setattr(gpus.data.__wrapped__, "__defaults__", (knowledge / "gpus.yaml",))
    mp.setattr(coverage_rules.rules.__wrapped__, "__defaults__", (knowledge / "coverage.yaml",))
    mp.setattr(schema.load.__wrapped__, "__defaults__", (knowledge / "rules.yaml",))
    mp.setattr(patches.load, "__defaults__", (root / "dockerfiles" / "patches",))
    mp.setattr(render_stage.render, "__defaults__", (root / "dockerfiles" / "patches",))


@contextlib.contextmanager
def _project_with(pristine: Path, name: str, text: str) -> Iterator[Path]:
    """A copy of the project whose data file `name` holds `text`, the loaders pointed at it, caches clear."""
    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        shutil.copytree(pristine, root)
        (root / name).write_text(text, encoding="utf-8")
        mp.setenv("IMAGEMATRIX_CACHE", str(Path(tmp) / "cache"))
        _redirect(mp, root)
        _clear_caches()
        try:
            yield root
        finally:
            _clear_caches()


def _clear_caches() -> None:
    for cached in (fields.bootstrap_suites, fields.gpu_models, schema.load, envdefaults._env_defaults,
                   envdefaults._env_default_lines, gpus.data, training.bands, flash_attn.data, flash_attn._spec,
                   extras.entries, vllm_advice.entries, coverage_rules.rules, platform_wheels.load, wheel_tags.tags_for):
        cached.cache_clear()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """The project's inputs and committed output, copied once; each example copies this."""
    root = tmp_path_factory.mktemp("pristine") / "project"
    root.mkdir()
    shutil.copy(ROOT / "matrix.yaml", root / "matrix.yaml")
    shutil.copytree(ROOT / "locks", root / "locks")
    shutil.copytree(ROOT / "knowledge", root / "knowledge")
    shutil.copytree(ROOT / "coverage", root / "coverage")  # the rows' GPU verdicts: pick reads them
    for folder in ("generated", "patches", "templates"):
        shutil.copytree(ROOT / "dockerfiles" / folder, root / "dockerfiles" / folder)
    return root


def _snapshot(top: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(top)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(top.rglob("*")) if not p.is_symlink()}


def _cli(*args: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = app.main([str(a) for a in args])
    return code, stdout.getvalue(), stderr.getvalue()


# --- mutations ------------------------------------------------------------------------------------------------

def _node_paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _node_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _node_paths(value, (*prefix, index))


def _get(doc, path):
    for part in path:
        doc = doc[part]
    return doc


def _retype(value):
    """str<->int<->list<->dict<->null, one hop."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool) or value is None:
        return "true" if value else ""
    if isinstance(value, (int, float)):
        return [str(value)]
    if isinstance(value, list):
        return {"item": value[0] if value else None}
    return None  # dict -> null


@st.composite
def mutated_text(draw, original: str) -> str:
    mode = draw(st.sampled_from(["structure", "structure", "structure", "truncate", "both"]))
    text = original
    if mode in ("structure", "both"):
        doc = YAML(typ="safe", pure=True).load(original)
        for _ in range(draw(st.integers(1, 3))):
            candidates = list(_node_paths(doc))
            path = draw(st.sampled_from(candidates))
            op = draw(st.sampled_from(["replace", "retype", "delete", "add", "odd", "odd", "swap"]))
            if not path:  # the root itself (a swap or delete of the root is no mutation)
                if op in ("replace", "odd"):
                    doc = draw(values)
                elif op == "retype":
                    doc = _retype(doc)
                elif op == "add" and isinstance(doc, dict):
                    doc[draw(keys)] = draw(values)
                continue
            parent, last = _get(doc, path[:-1]), path[-1]
            if op == "swap":  # another node of the same file: plausible values reach further than random ones
                parent[last] = copy.deepcopy(_get(doc, draw(st.sampled_from(candidates))))
            elif op == "replace":
                parent[last] = draw(values)
            elif op == "odd":  # half of the time one that would inject into a Dockerfile line
                parent[last] = draw(st.sampled_from(ODD_STRINGS) | st.sampled_from(SHELLISH))
            elif op == "retype":
                parent[last] = _retype(parent[last])
            elif op == "delete":
                del parent[last]
            else:
                target = parent[last]
                if isinstance(target, dict):
                    target[draw(keys)] = draw(values)
                elif isinstance(target, list):
                    target.insert(draw(st.integers(0, len(target))), draw(values))
                else:
                    parent[last] = [target, draw(values)]
        stream = io.StringIO()
        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        yaml.width = 4096
        yaml.dump(doc, stream)
        text = stream.getvalue()
    if mode in ("truncate", "both"):
        text = text[:draw(st.integers(0, max(len(text) - 1, 0)))]
    return text


# Jinja fragments a template edit may leave behind: unbalanced tags, unknown names and filters, runtime errors of
# the template's own expressions, an include of a missing file
JINJA_FRAGMENTS = [
    "{{", "}}", "{%", "%}", "{#", "{{ }}", "{{ nope }}", "{{ row.nope }}", "{{ row.id.nope.deeper }}", "{% if %}",
    "{% endif %}", "{% for x in 1 %}{{ x }}{% endfor %}", "{% for %}", "{{ row.id | nosuchfilter }}",
    "{% include 'missing.j2' %}", "{% import 'nowhere.j2' as n %}", "{{ 1 / 0 }}", "{{ 'a' + 1 }}", "{{ row.id[99] }}",
    "{{ none.x }}", "{{ row.pins()['nope'] }}", "{% set row = 1 %}{{ row.id }}", "{{ (1).__class__ }}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "{% raw %}", "{% block b %}", "{{ row.id ~ }}",
]


@st.composite
def mutated_template(draw, original: str) -> str | None:
    """A template edited by hand: lines removed, repeated or moved, Jinja fragments inserted, the file cut short; or
    the file gone (None)."""
    if draw(st.integers(0, 19)) == 0:
        return None
    lines = original.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["delete", "repeat", "move", "fragment", "fragment", "replace-expression",
                                   "truncate"]))
        at = draw(st.integers(0, max(len(lines) - 1, 0)))
        if op == "delete" and lines:
            del lines[at]
        elif op == "repeat" and lines:
            lines.insert(at, lines[at])
        elif op == "move" and lines:
            lines.insert(draw(st.integers(0, len(lines) - 1)), lines.pop(at))
        elif op == "fragment":
            lines.insert(at, draw(st.sampled_from(JINJA_FRAGMENTS)) + draw(st.sampled_from(["\n", ""])))
        elif op == "replace-expression" and lines:
            lines[at] = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", lambda _m: draw(st.sampled_from(JINJA_FRAGMENTS)),
                               lines[at], count=1)
        elif op == "truncate":
            text = "".join(lines)
            lines = [text[:draw(st.integers(0, max(len(text) - 1, 0)))]]
    return "".join(lines)


# --- the property ----------------------------------------------------------------------------------------------

_RESOLUTIONS: dict[str, dict] = {}


def _resolution(root: Path, row_id: str) -> dict:
    """A row's resolution as validate would get it from uv, here from its (unmutated) lock; parsed once."""
    if row_id not in _RESOLUTIONS:
        _RESOLUTIONS[row_id] = lockfile.parse((root / "locks" / f"{row_id}.txt").read_text())
    return _RESOLUTIONS[row_id]


def _loaders(name: str, root: Path) -> None:
    """The loader of `name` and the queries commands make over it; only InputError or RuntimeFailure may escape."""
    path = root / name
    if name == "matrix.yaml":
        matrix_mod.load(path)
        return
    m = matrix_mod.load(root / "matrix.yaml") if name != "knowledge/bases.yaml" else None
    if name == "knowledge/rules.yaml":
        ruleset = rules.load(path)
        skip = tuple(spec.id for spec in ruleset.rules if spec.kind in NETWORK_RULE_KINDS)
        for row in m.rows:
            rules.evaluate(row, _resolution(root, row.id), ruleset=ruleset, skip=skip)
    elif name == "knowledge/gpus.yaml":
        gpus.data(path)
        for cuda in ("12.4", "13.0"):
            gpus.min_driver(cuda), gpus.min_driver_compat(cuda), gpus.driver_status("580.65.06", cuda)
        for row in m.rows:
            gpus.torch_arch_list(row.torch, row.cuda)
        for gpu in ("H100", "NVIDIA A100-SXM4-80GB", "sm_90", "8.6"):
            with contextlib.suppress(InputError):  # an unknown or ambiguous name is bad input, checked below
                gpus.capability(gpu)
    elif name == "knowledge/env-defaults.yaml":
        defaults = envdefaults.load(path)
        for row in m.rows:
            envdefaults.for_row(row, defaults)
            envdefaults.row_environment(row)
    elif name == "knowledge/bases.yaml":
        fields.bootstrap_suites()
        matrix_mod.load(root / "matrix.yaml")
    elif name == "knowledge/training.yaml":
        training.bands()
        for row in m.rows:
            training.attention(row)
    elif name == "knowledge/flash-attn.yaml":
        flash_attn.data(path)
        for row in m.rows:
            if row.flash_attn:
                flash_attn.sdist(row.flash_attn), flash_attn.toolchain(row.cuda), flash_attn.wheel_spec(row).key
    elif name == "knowledge/coverage.yaml":
        found = coverage_rules.rules(path)
        for lib in ("torch/lib/libtorch_cuda.so", "vllm/_C.abi3.so", "nvidia/nccl/lib/libnccl.so.2", "x.so"):
            found.library_of(lib)
    elif name == "knowledge/platform-wheels.yaml":  # what validate asks of it for a linux/arm64 row (before uv)
        platform_wheels.native_packages()
        for row in m.rows:
            if "linux/arm64" in row.platforms:
                platform_wheels.missing_wheels(row.pins(), row.python)
        platform_wheels.releases_with_aarch64("vllm", "3.11")
    elif name == "knowledge/wheel-tags.yaml":  # what the CPU smoke test asks of it (inside images only)
        wheel_tags.load(path)
        wheel_tags.accepted("linux/arm64", ["py3-none-manylinux2014_sbsa"], [0xB7])
    elif name == "knowledge/extras.yaml":
        known = extras.load(path)
        for row in m.rows:
            extras.smoke_plan(row, known)
    elif name == "knowledge/vllm-advice.yaml":
        try:  # the advice is read and matched with no I/O: only InputError may escape, never RuntimeFailure
            advice = vllm_advice.load(path)
            for row in m.rows:
                vllm_advice.matching(row.vllm, [(7, 5), (8, 0), (9, 0), (12, 0)], advice=advice)
                vllm_advice.for_failure("CUDA error: no kernel image is available", row.vllm, (9, 0), advice=advice)
            for vllm in ("0.7.2", "0.10.0", "0.12.0", "0.31.0"):  # versions and a GPU (sm_86) no row has
                vllm_advice.matching(vllm, [(7, 5), (8, 6), (9, 0), (12, 0)], advice=advice)
        except RuntimeFailure as error:
            raise AssertionError(f"knowledge/vllm-advice.yaml: a RuntimeFailure escaped: {error}") from error
        vllm_advice.export()
    elif name in PATCH_FILES:
        found = patches.load(path.parent)
        for row in m.rows:
            patches.select(row, found)


# A LABEL value that is one double-quoted string with no quote, backslash, $ or newline inside is inert text: the
# Dockerfile parser neither runs nor expands it (a reason such as `rollout_only: "; rm -rf / #"` lands there, checked
# by fields.REASON_RE). Anything else on a LABEL line, and every other line, must not carry injected text.
_INERT_LABEL_VALUE = re.compile(r'(?m)^((?:LABEL )?\s*[\w.-]+=)"[^"\\$\n]*"')


def _assert_no_injection(root: Path, pristine: Path) -> None:
    generated = root / "dockerfiles" / "generated"
    for path in sorted(generated.glob("*/*")):
        if not (path.name == "Dockerfile" or path.suffix in (".sh", ".txt")):
            continue
        text = path.read_text(errors="replace")
        if path.name == "Dockerfile":
            text = _INERT_LABEL_VALUE.sub(r'\1""', text)
        before = pristine / path.relative_to(root)
        known = before.read_text(errors="replace") if before.is_file() else ""
        found = [m for m in INJECTED if m in text and m not in known]
        assert not found, f"{path.relative_to(root)} carries {found} from the data into the build"


def _check(name: str, text: str | None, pristine: Path) -> list[int]:
    """text None: the file is removed."""
    codes = []
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        top = Path(tmp)
        root = top / "project"
        shutil.copytree(pristine, root)
        if text is None:
            (root / name).unlink()
        else:
            (root / name).write_text(text, encoding="utf-8")
        try:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("IMAGEMATRIX_CACHE", str(top / "cache"))
                _redirect(mp, root)
                _clear_caches()
                try:
                    _loaders(name, root)
                except EXPECTED:
                    pass
                except FileNotFoundError:  # a removed data file: the commands below must say so (exit 2)
                    if text is not None:
                        raise
                _clear_caches()
                # rules.yaml is read by validate only, which resolves with uv (network): _loaders evaluated it
                # the knowledge files are rendered for four rows (patches; sdpa; flash-attn on CUDA 12 and 13): faster
                some = [] if name == "matrix.yaml" else [a for row in RENDERED_ROWS for a in ("--row", row)]
                # extras.yaml is read by the smoke tests inside images only: _loaders made their plan
                # platform-wheels.yaml is read by validate and lock for linux/arm64 rows only, beside uv (network)
                # wheel-tags.yaml is read by the smoke tests inside images only, as extras.yaml
                offline = name not in ("knowledge/rules.yaml", "knowledge/extras.yaml", "knowledge/platform-wheels.yaml",
                                       "knowledge/wheel-tags.yaml")
                commands = [["render", "--matrix", root / "matrix.yaml", *some]] if offline else []
                if name == "matrix.yaml":
                    commands.append(["plan", "--bake", "--matrix", root / "matrix.yaml"])
                if name == "knowledge/coverage.yaml":  # pick's driver check names the forward-compat package from it
                    commands = [["pick", "--gpu", "H100", "--driver", "550.54.14", "--matrix", root / "matrix.yaml",
                                 "--registry", "127.0.0.1:9/x"]]
                if name == "knowledge/vllm-advice.yaml":  # pick names the advice for the GPU; the registry is dead
                    commands = [["pick", "--gpu", gpu, "--matrix", root / "matrix.yaml", "--registry", "127.0.0.1:9/x"]
                                for gpu in ("H100", "T4")]
                for command in commands:
                    before = _snapshot(top)
                    code, out, err = _cli(*command)
                    codes.append(code)
                    assert code in (0, 1, 2), (command[0], code, err)
                    assert "internal error" not in err, (command[0], err)
                    after = _snapshot(top)
                    if code == 2 and command[0] == "render":
                        # each row on its own (issue 26, item 12): a bad row is not written, the others may be
                        bad = re.findall(r"^not written dockerfiles/generated/(\S+)/", out, re.M)
                        moved = {p for p in set(after) | set(before) if after.get(p) != before.get(p)}
                        touched = [p for p in moved for row in bad if p.startswith(f"project/dockerfiles/generated/{row}")]
                        assert not touched, f"render wrote rows it refused: {sorted(touched)}"
                    elif code == 2:
                        assert after == before, f"{command[0]} exited 2 but wrote: {set(after.items()) ^ set(before.items())}"
                    if code == 0 and command[0] == "render" and name not in TEMPLATES:  # a template is code
                        _assert_no_injection(root, pristine)
                    written = {p for p in set(after) | set(before) if after.get(p) != before.get(p)}
                    outside = {p for p in written if not p.startswith("project/dockerfiles/generated")}
                    assert not outside, f"{command[0]} wrote outside dockerfiles/generated: {sorted(outside)}"
        finally:
            _clear_caches()
    return codes


@pytest.mark.parametrize("name", FILES)
@fuzz_settings(40)
@given(data=st.data())
def test_mutated_input_is_handled(name, data, pristine):
    text = data.draw(mutated_text((ROOT / name).read_text(encoding="utf-8")), label=name)
    _check(name, text, pristine)


@pytest.mark.parametrize("name", JINJA)
@fuzz_settings(30)
@given(data=st.data())
def test_mutated_template_is_handled(name, data, pristine):
    text = data.draw(mutated_template((ROOT / name).read_text(encoding="utf-8")), label=name)
    _check(name, text, pristine)


@pytest.mark.parametrize("name", sorted(set(TEMPLATES) - set(JINJA)))
@fuzz_settings(6)
@given(data=st.data())
def test_mutated_copied_file_is_handled(name, data, pristine):
    """Copied as they are: any content renders (exit 0) into the row's context; only their absence is an error."""
    text = data.draw(mutated_template((ROOT / name).read_text(encoding="utf-8")), label=name)
    assert _check(name, text, pristine) == ([2] if text is None else [0])


def test_every_data_file_is_fuzzed():
    """A data file added to knowledge/, dockerfiles/patches/ or dockerfiles/templates/ is fuzzed too."""
    found = {str(p.relative_to(ROOT)) for d in DATA_DIRS for p in (ROOT / d).rglob("*") if p.is_file()}
    assert found <= set(FILES) | set(TEMPLATES), sorted(found - set(FILES) - set(TEMPLATES))


def test_unmutated_copy_renders_clean(pristine):
    """The harness itself: the unmutated copy loads, renders nothing new and plans (so the fuzz reaches render)."""
    for name in (*FILES, *TEMPLATES):
        expected = {"matrix.yaml": [0, 0], "knowledge/rules.yaml": [], "knowledge/extras.yaml": [],
                    "knowledge/platform-wheels.yaml": [], "knowledge/wheel-tags.yaml": [],
                    "knowledge/vllm-advice.yaml": [0, 0], "knowledge/coverage.yaml": [0]}.get(name, [0])
        assert _check(name, (ROOT / name).read_text(encoding="utf-8"), pristine) == expected


@pytest.mark.parametrize("name", (*FILES[1:], *TEMPLATES))
def test_a_removed_data_file_is_bad_input(name, pristine):
    """A data file that is gone (a bad checkout, a rename): the commands that need it exit 2; its loader says so
    (InputError) or raises FileNotFoundError, which the command turns into exit 2."""
    codes = _check(name, None, pristine)
    # the patches are a folder of files: removing one removes its patches (render --check shows the rows it changes)
    assert set(codes) <= ({0} if name in PATCH_FILES else {2}), codes


def test_a_reason_with_shell_text_stays_an_inert_label_value(pristine):
    """Found by the property above (CI, 2026-12-03): a `rollout_only` reason of '; rm -rf / #' passes the reason
    pattern and renders into the row's LABEL as a plain double-quoted value, which no shell runs and the parser does
    not expand. The check lets exactly that through, and still catches such text anywhere else."""
    original = (ROOT / "matrix.yaml").read_text(encoding="utf-8")
    old = "    rollout_only: flash-attn wheels for torch 2.5"
    assert old in original, "matrix.yaml changed: update this regression's text"
    assert _check("matrix.yaml", original.replace(old, "    rollout_only: '; rm -rf / #'  # x\n    #", 1),
                  pristine) == [0, 0]
    label = 'LABEL a.b="x" \\\n      io.imagematrix.training="rollout only: ; rm -rf / #" \\\n'
    assert "rm -rf" not in _INERT_LABEL_VALUE.sub(r'\1""', label)
    for live in ('RUN echo "; rm -rf / #"\n', 'LABEL a="$(x)"; rm -rf / #\n', 'LABEL a="\\"; rm -rf / #"\n'):
        assert "rm -rf" in _INERT_LABEL_VALUE.sub(r'\1""', live), live


@pytest.mark.parametrize("name", FILES)
def test_an_oversized_data_file_is_refused_before_parsing(name, pristine):
    """Issue 13, item 13: any data file over the size limit (a 1.1 MB comment line took 16 s to parse in matrix.yaml)
    is bad input naming the file and the limit, from its loader and through the commands that read it (exit 2)."""
    text = (ROOT / name).read_text(encoding="utf-8") + "# " + "x" * 1_100_000 + "\n"
    with _project_with(pristine, name, text) as root, pytest.raises(InputError, match="over the limit"):
        _loaders(name, root)
    assert set(_check(name, text, pristine)) <= {2}


@pytest.mark.parametrize(("name", "old", "new"), [
    # each was an internal error, or rendered into the build, before its fix (found by the property above)
    ("knowledge/gpus.yaml", '"8.0": [A100, A800, A30]', '"8.0": 160'),  # TypeError: 'int' is not iterable
    ("knowledge/gpus.yaml", '  "12.4": {toolkit: 550.54.14, compat: 525.60.13}', '  "12.4": null'),  # AttributeError
    ("knowledge/training.yaml", None, "a"),  # AttributeError: 'str' object has no attribute 'get'
    ("knowledge/flash-attn.yaml", 'torch: ["2.2", "2.3", "2.4", "2.5", "2.6"]', 'torch: ["verl"]'),  # InvalidVersion
    ("knowledge/training.yaml", None, "attention: 4\n"),  # TypeError: 'int' object is not iterable
    # rendered without complaint, into a Dockerfile label and a RUN line: instructions injected from the data
    ("knowledge/training.yaml", 'override: "+actor_rollout_ref.model.override_config.attn_implementation=sdpa"',
     'override: "x\\"\\nRUN echo owned > /pwned\\n#"'),
    ("knowledge/flash-attn.yaml", "file: flash_attn-2.7.4.post1.tar.gz", 'file: "x.tar.gz; rm -rf / #"'),
])
def test_found_by_fuzzing(name, old, new, pristine):
    original = (ROOT / name).read_text(encoding="utf-8")
    if old is not None:
        assert old in original, f"{name} changed: update this regression's text"
    text = new if old is None else original.replace(old, new, 1)
    with pytest.raises(InputError):
        with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "project"
            shutil.copytree(pristine, root)
            (root / name).write_text(text, encoding="utf-8")
            _redirect(mp, root)
            _clear_caches()
            try:
                _loaders(name, root)
            finally:
                _clear_caches()
    _check(name, text, pristine)


# --- a top level of the wrong type (issue 26, item 10) -----------------------------------------------------------

# Every data file's top level is a mapping. Each of these in its place is bad input naming the file: before the fix
# training.yaml took a list, null or an empty file as "no training data" (validate and render went on silently), and
# env-defaults.yaml as a list was an AttributeError in validate (the vllm-env rule reads the file's lines itself).
WRONG_TOP_LEVELS = {"a list": "- a\n- b: 1\n", "an empty list": "[]\n", "a string": "just some words\n",
                    "a quoted string": '"rows: []"\n', "a number": "42\n", "a float": "-1.5e3\n", "a boolean": "true\n",
                    "null": "null\n", "an empty file": "", "only a comment": "# nothing here\n",
                    "a list of mappings": "- rows: []\n  defaults: {}\n"}


def _readers(name: str, root: Path) -> dict[str, Callable[[], object]]:
    """Every way the code reads `name` on its own: its loader and each query that reads the file without being handed
    what the loader returned (each is called with cold caches, so none is shielded by another's check)."""
    path = root / name

    def row(flash_attn: bool = False, extras: bool = False):
        rows = matrix_mod.load(root / "matrix.yaml").rows
        return next(r for r in rows if bool(r.flash_attn) == flash_attn and (not extras or r.extras))

    if name in PATCH_FILES:
        return {"patches.load": lambda: patches.load(path.parent)}
    return {
        "matrix.yaml": {"matrix.load": lambda: matrix_mod.load(path)},
        "knowledge/rules.yaml": {"rules.load": lambda: rules.load(path), "schema.load": lambda: schema.load()},
        "knowledge/gpus.yaml": {"gpus.data": lambda: gpus.data(path), "gpus.min_driver": lambda: gpus.min_driver("12.4"),
                                "gpus.capability": lambda: gpus.capability("H100"),
                                "gpus.torch_arch_list": lambda: gpus.torch_arch_list("2.6.0", "12.4")},
        "knowledge/env-defaults.yaml": {"envdefaults.load": lambda: envdefaults.load(path),
                                        "envdefaults.row_environment": lambda: envdefaults.row_environment(row())},
        "knowledge/bases.yaml": {"fields.bootstrap_suites": fields.bootstrap_suites,
                                 "matrix.load": lambda: matrix_mod.load(root / "matrix.yaml")},
        "knowledge/training.yaml": {"training.bands": training.bands,
                                    "training.attention": lambda: training.attention(row())},
        "knowledge/flash-attn.yaml": {"flash_attn.data": lambda: flash_attn.data(path),
                                      "flash_attn.toolchain": lambda: flash_attn.toolchain("13.0"),
                                      "flash_attn.wheel_spec": lambda: flash_attn.wheel_spec(row(flash_attn=True))},
        "knowledge/extras.yaml": {"extras.load": lambda: extras.load(path), "extras.entries": extras.entries,
                                  "extras.smoke_plan": lambda: extras.smoke_plan(row(flash_attn=True, extras=True))},
        "knowledge/coverage.yaml": {"coverage.rules": lambda: coverage_rules.rules(path),
                                    "coverage.rules (default)": coverage_rules.rules},
        "knowledge/platform-wheels.yaml": {"platform_wheels.load": platform_wheels.load,
                                           "platform_wheels.native_packages": platform_wheels.native_packages,
                                           "platform_wheels.missing_wheels":
                                               lambda: platform_wheels.missing_wheels({"vllm": "0.24.0"}, "3.11")},
        "knowledge/wheel-tags.yaml": {"wheel_tags.load": lambda: wheel_tags.load(path),
                                      "wheel_tags.tags_for": lambda: wheel_tags.tags_for("linux/arm64")},
        "knowledge/vllm-advice.yaml": {"vllm_advice.load": lambda: vllm_advice.load(path),
                                       "vllm_advice.entries": vllm_advice.entries,
                                       "vllm_advice.export": vllm_advice.export,
                                       "vllm_advice.matching": lambda: vllm_advice.matching("0.8.5", [(9, 0)])},
    }[name]


def test_every_data_file_has_its_readers():
    """A data file added to FILES gets its readers listed above (a KeyError here until it does)."""
    assert all(_readers(name, ROOT) for name in FILES)


@pytest.mark.parametrize("kind", sorted(WRONG_TOP_LEVELS))
@pytest.mark.parametrize("name", FILES)
def test_a_data_file_whose_top_level_is_not_a_mapping_is_bad_input_naming_it(name, kind, pristine):
    """Every data file, with every wrong top-level type, through each of its readers: an InputError naming the file,
    never another exception nor a silent default."""
    with _project_with(pristine, name, WRONG_TOP_LEVELS[kind]) as root:
        for reader, call in _readers(name, root).items():
            _clear_caches()
            with pytest.raises(InputError) as caught:
                call()
            assert str(root / name) in str(caught.value), (reader, str(caught.value))


@pytest.mark.parametrize("name", FILES)
def test_a_data_file_that_is_a_list_fails_the_commands_that_read_it(name, pristine):
    """The commands over the same (render, plan --bake, pick): exit 2, nothing written."""
    assert set(_check(name, WRONG_TOP_LEVELS["a list"], pristine)) <= {2}
