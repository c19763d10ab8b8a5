"""The conflict verdict from the pins' declared requirements (issue 30, item 4): resolve.declared_conflicts decides
without uv only where uv must find no solution, and leaves every other case to uv. Each case runs the real uv
against a local index (tiny wheels whose METADATA declares the case's requirements, read by byte ranges as from
PyPI) and holds the two verdicts side by side; nothing needs the network."""

from __future__ import annotations

from functools import partial

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from imagematrix.knowledge import requires
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError
from imagematrix.stages import resolve, validate
from imagematrix.tools import uv
from tests.conftest import GOOD_MATRIX, ROOT
from tests.process.stages.test_lock_refresh_local_index import PINS_UPLOADED, Handler, Index, use_index
from tests.support import serving

OVERRIDE_VLLM = '    overrides:\n      vllm:\n        version: "0.7.2"\n        reason: the case under test\n'


class RangeHandler(Handler):
    """The local index, with byte ranges for wheels (the metadata reader asks for them, as PyPI serves them)."""

    def do_HEAD(self):
        self._wheel(head=True) or super().do_HEAD()

    def do_GET(self):
        self._wheel(head=False) or super().do_GET()

    def _wheel(self, head: bool) -> bool:
        name = self.path.split("?")[0].rsplit("/", 1)[-1]
        project = self.path.split("?")[0].strip("/").split("/")[-2] if self.path.count("/") >= 2 else ""
        path = self.index.root / project / name
        if not name.endswith(".whl") or not path.is_file():
            return False
        data, status, extra = path.read_bytes(), 200, {}
        asked = self.headers.get("Range", "")
        if asked.startswith("bytes=") and not head:
            first, last = (int(n) for n in asked[len("bytes="):].split("-"))
            last = min(last, len(data) - 1)
            extra = {"Content-Range": f"bytes {first}-{last}/{len(data)}"}
            data, status = data[first:last + 1], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(data)
        return True


# (case, requirements of each package on the index, extra releases, row's extra text,
#  the declared verdict: does it decide "conflict"?, uv's verdict: unsatisfiable?)
CASES = [
    ("vllm pins another torch", {"vllm": ("torch==2.5.0",)}, [("torch", "2.5.0")], "", True, True),
    ("vllm's torch range holds the pin", {"vllm": ("torch>=2.5,<2.6",)}, [], "", False, False),
    ("the conflict is behind a marker on the Python patch level: left to uv",
     {"vllm": ("torch==2.5.0; python_full_version >= '3.11.0'",)}, [("torch", "2.5.0")], "", False, True),
    ("a marker that does not hold on the row's Python", {"vllm": ("torch==2.5.0; python_version < '3.11'",)},
     [("torch", "2.5.0")], "", False, False),
    ("a marker that holds on linux x86_64", {"vllm": ("torch==2.5.0; sys_platform == 'linux' and "
                                                      "platform_machine == 'x86_64'",)},
     [("torch", "2.5.0")], "", True, True),
    ("verl's [vllm] extra pins another vllm", {"verl": ("vllm==0.7.1; extra == 'vllm'",)}, [("vllm", "0.7.1")], "",
     True, True),
    ("... unless the row overrides vllm", {"verl": ("vllm==0.7.1; extra == 'vllm'",)}, [("vllm", "0.7.1")],
     OVERRIDE_VLLM, False, False),
    ("an extra of verl's own, pulled in by [vllm]", {"verl": ("verl[core]; extra == 'vllm'",
                                                              "transformers<4.49; extra == 'core'")},
     [("transformers", "4.48.0")], "", True, True),
    ("a conflict through an unpinned package: left to uv", {"vllm": ("leftpad<2",), "tensordict": ("leftpad>=2",)},
     [("leftpad", "1.0"), ("leftpad", "2.0")], "", False, True),
    ("a requirement on a local version: left to uv", {"vllm": ("torch==2.5.1+cpu",)}, [], "", False, True),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_declared_verdict_agrees_with_uv(case, tmp_path, monkeypatch, write_matrix):
    _, declared, extra_releases, row_extra, conflict, unsatisfiable = case
    idx = Index(tmp_path / "index")
    idx.root.mkdir()
    pins = {"verl": "0.3.0.post1", "vllm": "0.7.2", "torch": "2.5.1", "tensordict": "0.6.2", "transformers": "4.49.0"}
    for name, version in pins.items():
        idx.add(name, version, PINS_UPLOADED, requires=declared.get(name, ()),
                extras=("vllm", "core") if name == "verl" else ())
    for name, version in extra_releases:
        idx.add(name, version, PINS_UPLOADED)
    handler = type("BoundHandler", (RangeHandler,), {"index": idx})
    with serving(partial(handler, directory=str(idx.root))) as server:
        use_index(monkeypatch, tmp_path, f"http://127.0.0.1:{server.server_address[1]}/simple")
        requires.read_requires_dist.cache_clear()
        path = write_matrix(GOOD_MATRIX + row_extra)
        m = matrix_mod.load(path)
        row = m.rows[0]
        causes = resolve.declared_conflicts(row)
        spec = resolve.inputs(row)
        proc = uv.compile_requirements(spec.requirements, row.python, overrides=spec.overrides)
        uv_unsatisfiable = proc.returncode != 0 and "No solution found" in proc.stderr
        assert proc.returncode == 0 or uv_unsatisfiable, proc.stderr  # uv answered, not a fetch error
        assert bool(causes) == conflict, causes
        assert uv_unsatisfiable == unsatisfiable, proc.stderr
        assert not causes or uv_unsatisfiable  # the declared verdict never says more than uv
        # the whole verdict (validate's): unsatisfiable exactly when uv says so, whoever decided
        report = validate.validate(m, [row], ROOT / "dockerfiles" / "patches")
        assert report.rows[0].resolution == ("unsatisfiable" if unsatisfiable else "ok"), report.errors
        rendered = [e.render() for e in report.errors if "cannot be resolved together" in e.render()]
        assert bool(rendered) == unsatisfiable, [e.render() for e in report.errors]
        if conflict:
            assert resolve.DECLARED_VERDICT in rendered[0] and causes[0] in rendered[0]
        elif unsatisfiable:
            assert "No solution found" in rendered[0]  # uv's own explanation
    requires.read_requires_dist.cache_clear()


def test_a_declared_conflict_runs_no_uv(monkeypatch, write_matrix):
    """The fail-fast path: a conflict the pins declare is the verdict before uv (or the era of a new row) is asked."""
    path = write_matrix(GOOD_MATRIX.replace('vllm: "0.7.2"', 'vllm: "0.10.0"'))
    row = matrix_mod.load(path).rows[0]
    declared = {("vllm", "0.10.0"): ("torch==2.7.1",), ("verl", "0.3.0.post1"): ("vllm<=0.7.3; extra == 'vllm'",)}
    monkeypatch.setattr(requires, "requires_dist", lambda package, version: declared.get((package, version), ()))
    monkeypatch.setattr(resolve.requires_python, "check", lambda row: [])

    def no_uv(*args, **kwargs):
        raise AssertionError("uv ran")

    monkeypatch.setattr(resolve.uv, "compile_requirements", no_uv)
    with pytest.raises(InputError) as info:
        resolve.resolve(row, exclude_newer=no_uv, matrix_path=path)
    assert info.value.where == f"{path}:5, row {row.id}"
    assert info.value.message.splitlines()[1:] == [
        "    verl==0.3.0.post1 depends on vllm<=0.7.3, and you require vllm==0.10.0",
        "    vllm==0.10.0 depends on torch==2.7.1, and you require torch==2.5.1",
        "    " + resolve.DECLARED_VERDICT]


@pytest.mark.parametrize("spec,version,excluded", [
    ("==2.7.1", "2.6.0", True), ("==2.6.0", "2.6.0", False), (">=0.7.3,<=0.8.5", "0.10.0", True),
    (">=2.6", "2.6.0rc1", True), (">=2.6rc1", "2.6.0rc2", False), ("!=0.9.0", "0.9.0", True),
    ("~=4.48.0", "4.49.0", True), ("", "1.0", False),
    ("==2.6.0+cpu", "2.6.0", False),  # undecided: the index may hold 2.6.0+cpu, which `==2.6.0` takes
    ("===2.6.0", "2.6.1", False),  # undecided
    ("==2.6.*", "2.7.0", True), (">2.6.0", "2.6.0", True), ("<2.6.0", "2.6.0", True),
])
def test_surely_excludes(spec, version, excluded):
    assert requires.surely_excludes(SpecifierSet(spec), version) is excluded


@pytest.mark.parametrize("line,extras,applies", [
    ("torch==2.7.1", set(), True),
    ("torch==2.7.1; extra == 'vllm'", set(), False),
    ("torch==2.7.1; extra == 'vllm'", {"vllm"}, True),
    ("torch==2.7.1; python_version >= '3.12'", set(), False),
    ("torch==2.7.1; sys_platform == 'darwin'", set(), False),
    ("torch==2.7.1; platform_system == 'Linux' and platform_machine == 'x86_64'", set(), True),
    ("torch==2.7.1; python_full_version >= '3.11.3'", set(), None),
    ("torch==2.7.1; implementation_name == 'cpython'", set(), None),
    ("torch==2.7.1; platform_release >= '5'", set(), None),
    ("torch==2.7.1; extra == 'python_full_version'", set(), False),  # a value, not a variable
])
def test_surely_applies(line, extras, applies):
    assert requires.surely_applies(Requirement(line), "3.11", extras) is applies


def test_shown_writes_lower_bounds_first():
    assert requires.shown(SpecifierSet("<=0.8.5,>=0.7.3")) == ">=0.7.3,<=0.8.5"
    assert requires.shown(SpecifierSet("!=0.9.0,<=0.9.1,>=0.8.0")) == ">=0.8.0,!=0.9.0,<=0.9.1"
