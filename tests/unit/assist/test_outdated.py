"""`build.py outdated` and add-row's pairing search, over a faked index and a faked uv.

The index (releases, upload times, Requires-Python, verl's declared vLLM ranges, the Requires-Dist the rules read)
and uv's answers are recorded data written into this file, trimmed from a real run against PyPI (no test here reads
the index: the `no_index` fixture fails any that tries): these tests are about the logic (version comparison,
"newer than the matrix", the pairing order, rendering, exit codes, the offline cache and its age), not about PyPI,
which tests/integration/test_outdated_pypi.py reads for real.
"""

from __future__ import annotations

import datetime
import io
import json
import subprocess

import pytest
from rich.console import Console

from imagematrix.assist import addrow, index_snapshot, outdated, pairing, resolutions
from imagematrix.cli import outdated as cli_outdated
from imagematrix.knowledge import requires
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import pypi, pypi_releases
from imagematrix.tools.pypi_releases import File, Release

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.timezone.utc)
FETCHED = "2026-12-02T08:48:00+00:00"  # 3 h 12 min before NOW

MATRIX = """\
defaults:
  python: "3.11"
  base: debootstrap:bookworm
rows:
  - verl: "0.9.1"
    vllm: "0.24.0"
    torch: "2.11.0"
    cuda: "13.0"
    flash_attn: "2.8.3"
    tensordict: "0.10.0"
    transformers: "5.9.0"
"""


def rel(version: str, uploaded: str | None = None, *, wheel: bool = True, rp: str | None = ">=3.10") -> Release:
    return Release(version=version, wheel=wheel, requires_python=rp, uploaded=uploaded)


def snapshot() -> index_snapshot.Snapshot:
    return index_snapshot.Snapshot(
        fetched=FETCHED, index="https://pypi.org/simple",
        releases={
            "verl": [rel("0.9.1", "2026-09-20T08:02:58Z", rp="<3.13,>=3.10"), rel("0.9.0", "2026-08-14T08:07:46Z"),
                     rel("0.8.0", "2026-06-01T11:29:37Z")],
            "vllm": [rel("0.33.0", "2026-11-02T10:12:56Z", rp="<3.15,>=3.11"),
                     rel("0.31.0", "2026-10-05T07:40:41Z", rp="<3.15,>=3.10"),
                     rel("0.25.0", "2026-07-11T00:00:00Z", rp="<3.15,>=3.10"),
                     rel("0.24.0", "2026-06-20T00:00:00Z", rp="<3.15,>=3.10"),
                     rel("0.12.0", "2025-12-03T00:00:00Z", rp="<3.14,>=3.10")],
            "torch": [rel("2.13.0"), rel("2.11.0")],
            "transformers": [rel("5.10.4"), rel("5.9.0")],
            "tensordict": [rel("0.10.0")],
            "flash-attn": [rel("2.8.3.post1", wheel=False, rp=">=3.9"), rel("2.8.3", wheel=False, rp=">=3.9")],
        },
        vllm_ranges={"0.9.1": "==0.24.0", "0.9.0": ">=0.18.0", "0.8.0": "<=0.12.0,>=0.8.5"},
        vllm_includes={"0.9.1": ["verl-core"], "0.9.0": ["verl-core"]},  # as verl's METADATA says
        requires_dist={f"{package}=={version}": lines for (package, version), lines in REQUIRES_DIST.items()},
    )


# Requires-Dist the rules read (trimmed to the lines they check): verl's declared ranges, vLLM's floors
REQUIRES_DIST = {
    ("verl", "0.9.1"): ["ray[default]>=2.41.0", "tensordict!=0.9.0,<=0.10.0,>=0.8.0", "transformers!=5.6.0,<5.11,>=5.5.3",
                        'verl[verl-core]; extra == "vllm"', 'torch==2.11.0; extra == "vllm"',
                        'vllm==0.24.0; extra == "vllm"', 'transformers==5.9.0; extra == "vllm"'],
    ("verl", "0.9.0"): ["ray[default]>=2.41.0", "tensordict!=0.9.0,<=0.10.0,>=0.8.0", "transformers<5.11,>=5.5.3",
                        'verl[verl-core]; extra == "vllm"', 'vllm>=0.18.0; extra == "vllm"'],
    ("verl", "0.8.0"): ["ray[default]>=2.41.0", "tensordict!=0.9.0,<=0.10.0,>=0.8.0", "transformers",
                        'vllm<=0.12.0,>=0.8.5; extra == "vllm"'],
    ("vllm", "0.33.0"): ["transformers<5.21.0,>=5.16.1", "torch==2.15.0"],
    ("vllm", "0.31.0"): ["transformers<5.18,>=5.10.4", "torch==2.13.0"],
    ("vllm", "0.25.0"): ["transformers>=5.5.3", "torch==2.11.0"],
    ("vllm", "0.24.0"): ["transformers>=5.5.3", "torch==2.11.0"],
    ("vllm", "0.12.0"): ["transformers<5,>=4.56.0", "torch==2.9.0"],
}


@pytest.fixture(autouse=True)
def no_index(monkeypatch):
    """The rules read their facts from the snapshot: reading the index instead fails the test."""
    def asked(*args, **kwargs):
        pytest.fail(f"the index was read: {args}")

    monkeypatch.setattr(requires, "read_requires_dist", asked)
    monkeypatch.setattr(pypi, "requires_python", asked)


# uv's answers, recorded (stacks trimmed to what a proposal reads): (verl, vllm, with verl's [vllm] extra) -> pins
STACKS = {
    ("0.9.0", "0.31.0", True): ("2.13.0", "13.0.96", "0.10.0", "5.10.4"),
    ("0.9.0", "0.25.0", True): ("2.11.0", "13.0.96", "0.10.0", "5.10.4"),
    ("0.9.1", "0.31.0", False): ("2.13.0", "13.0.96", "0.10.0", "5.10.4"),
    ("0.8.0", "0.33.0", False): ("2.15.0", "13.0.96", "0.10.0", "5.20.2"),
    ("0.9.1", "0.24.0", True): ("2.11.0", "13.0.96", "0.10.0", "5.9.0"),
}
CONFLICT = """\
error: No solution found when resolving dependencies:
  cause: Because vllm=={vllm} depends on transformers>=5.16.1,<5.21.0 and verl=={verl} depends on one of:
             transformers>=5.5.3,<5.6.0
             transformers>5.6.0,<5.11
         we can conclude that verl=={verl} and vllm=={vllm} are incompatible.
         And because you require verl=={verl} and vllm=={vllm}, we can conclude that your requirements are unsatisfiable.
"""


def lock_text(verl: str, vllm: str, stack: tuple[str, str, str, str]) -> str:
    torch, cuda_runtime, tensordict, transformers = stack
    return (f"numpy==2.3.5\nnvidia-cuda-runtime=={cuda_runtime}\ntensordict=={tensordict}\ntorch=={torch}\n"
            f"transformers=={transformers}\nverl=={verl}\nvllm=={vllm}\n")


def parse_request(request: resolutions.Request) -> tuple[str, str, bool]:
    verl_line, vllm_line = request.requirements.splitlines()[:2]
    return verl_line.split("==")[1], vllm_line.split("==")[1], "[vllm]" in verl_line


class FakeResolver:
    """Answers from STACKS; counts questions like resolutions.Resolver."""

    def __init__(self, stacks=None):
        self.stacks = STACKS if stacks is None else stacks
        self.asked = 0
        self.from_cache = 0
        self.requests: list[resolutions.Request] = []

    def __call__(self, request: resolutions.Request) -> resolutions.Resolution:
        self.asked += 1
        self.requests.append(request)
        verl, vllm, extra = parse_request(request)
        stack = self.stacks.get((verl, vllm, extra))
        if stack:
            return resolutions.Resolution(True, lock_text(verl, vllm, stack), "", FETCHED)
        return resolutions.Resolution(False, "", CONFLICT.format(verl=verl, vllm=vllm), FETCHED)


def fake_uv(monkeypatch) -> list:
    """uv.compile_requirements answering from STACKS (for the on-disk Resolver)."""
    calls = []

    def compile_requirements(requirements, python, *, overrides="", constraints="", **_):
        calls.append(requirements)
        answer = FakeResolver()(resolutions.Request(requirements, python, constraints, overrides))
        return subprocess.CompletedProcess([], 0 if answer.ok else 1, answer.stdout, answer.stderr)

    monkeypatch.setattr(resolutions.uv, "compile_requirements", compile_requirements)
    return calls


@pytest.fixture
def matrix(write_matrix):
    return matrix_mod.load(write_matrix(MATRIX))


def report(rows, resolver=None, **kw) -> outdated.Report:
    return outdated.build_report(rows, snapshot(), resolver or FakeResolver(), python="3.11", now=NOW, jobs=1, **kw)


# --- versions ----------------------------------------------------------------------------------------------------


def test_newer_compares_versions_not_strings():
    releases = [rel(v) for v in ("0.10.0", "0.9.2", "0.9.10", "2.8.3.post1", "2.8.3")]
    assert [r.version for r in outdated.newer(releases, "0.9.2")] == ["2.8.3.post1", "2.8.3", "0.10.0", "0.9.10"]
    assert [r.version for r in outdated.newer(releases, "2.8.3")] == ["2.8.3.post1"]  # a post release is newer
    assert outdated.newer(releases, "2.8.3.post1") == []


def test_since_is_inclusive_and_limit_keeps_the_newest():
    releases = [rel(v) for v in ("0.8.0", "0.7.3", "0.7.0", "0.6.6")]
    assert [r.version for r in outdated.newer(releases, "0.9.0", since="0.7.0")] == ["0.8.0", "0.7.3", "0.7.0"]
    assert [r.version for r in outdated.newer(releases, "0.6.0", limit=2)] == ["0.8.0", "0.7.3"]
    assert outdated.newer(releases, None) == []  # no row pins it: nothing to be newer than


def test_covered_is_the_newest_pin_of_any_row(write_matrix):
    two = MATRIX + MATRIX.split("rows:\n", 1)[1].replace('"0.24.0"', '"0.9.2"').replace('"2.8.3"', "null")
    rows = matrix_mod.load(write_matrix(two)).rows
    assert outdated.covered(rows) == {"verl": "0.9.1", "vllm": "0.24.0", "torch": "2.11.0", "transformers": "5.9.0",
                                      "tensordict": "0.10.0", "flash-attn": "2.8.3"}


def test_releases_from_files_counts_sdists_and_skips_pre_and_yanked_releases():
    files = [File("flash_attn-2.8.3.tar.gz", ">=3.9", "2025-08-15T08:28:12Z"),
             File("flash_attn-2.8.3.post1.tar.gz", ">=3.9", "2026-06-11T04:35:21Z"),
             File("flash_attn-2.9.0b1.tar.gz", ">=3.9"),
             File("flash_attn-2.8.4.tar.gz", ">=3.9", yanked=True),
             File("vllm-0.33.0-cp38-abi3-manylinux_2_31_x86_64.whl", "<3.15,>=3.11", "2026-11-02T10:12:56Z"),
             File("vllm-0.33.0.tar.gz", ">=3.9", "2026-11-02T10:00:00Z")]
    assert pypi_releases.releases_from_files("flash-attn", files) == [
        Release("2.8.3.post1", False, ">=3.9", "2026-06-11T04:35:21Z"), Release("2.8.3", False, ">=3.9", "2025-08-15T08:28:12Z")]
    # a release with a wheel: the wheel's Requires-Python, the earliest upload
    assert pypi_releases.releases_from_files("vllm", files) == [
        Release("0.33.0", True, "<3.15,>=3.11", "2026-11-02T10:00:00Z")]


def test_both_page_forms_are_read():
    html = ('<a href="https://files.example/p/flash_attn-2.8.3.tar.gz#sha256=ab" data-requires-python="&gt;=3.9">'
            'flash_attn-2.8.3.tar.gz</a>\n<a href="../../p/flash_attn-2.8.2.tar.gz" data-yanked="">flash_attn-2.8.2.tar.gz</a>')
    assert pypi_releases.parse_html_page(html) == [File("flash_attn-2.8.3.tar.gz", ">=3.9"),
                                                   File("flash_attn-2.8.2.tar.gz", None, yanked=True)]
    page = {"files": [{"filename": "verl-0.9.1-py3-none-any.whl", "requires-python": "<3.13,>=3.10",
                       "upload-time": "2026-09-20T08:02:58Z", "yanked": False}]}
    assert pypi_releases.parse_json_page(json.dumps(page)) == [
        File("verl-0.9.1-py3-none-any.whl", "<3.13,>=3.10", "2026-09-20T08:02:58Z")]


# --- the pairing search ---------------------------------------------------------------------------------------------


def test_newest_verl_first_even_with_an_override():
    # verl 0.9.0's [vllm] extra admits vLLM 0.31.0 and that pairing resolves too (STACKS), yet the newest verl,
    # 0.9.1, is tried first: without its extra (which pins vllm==0.24.0) and with an override, and it resolves
    resolver = FakeResolver()
    assert ("0.9.0", "0.31.0", True) in resolver.stacks
    proposal = addrow.propose("0.31.0", "3.11", index=snapshot(), resolver=resolver)
    assert proposal.pins["verl"] == "0.9.1" and proposal.pins["torch"] == "2.13.0"
    assert "verl 0.9.1 declares vllm==0.24.0" in proposal.overrides["vllm"]
    assert proposal.why["verl"].startswith("the newest verl; its [vllm] extra declares vllm==0.24.0")
    assert "0.9.0" not in proposal.why["verl"]
    # one question, asked as resolve.inputs asks for a row with a vllm override: verl with the extras its [vllm]
    # extra installs besides its pins (verl-core: TransferQueue, which the trainer imports), vllm overridden
    assert len(resolver.requests) == 1
    last = resolver.requests[-1]
    assert last.requirements == "verl[verl-core]==0.9.1\nvllm==0.31.0\n" and last.overrides == "vllm==0.31.0\n"
    assert proposal.verl_extras == ("verl-core",) and "verl[verl-core]" in proposal.why["verl_extras"]
    snippet = addrow.row_yaml(proposal.pins, {"python": "3.11"}, "test", proposal.extras, proposal.overrides,
                              verl_extras=proposal.verl_extras)
    assert 'verl_extras: [verl-core]\n    overrides:\n      vllm:\n        version: "0.31.0"\n        reason: "verl 0.9.1' in snippet


def test_newest_verl_with_its_extra_when_that_admits_the_vllm():
    resolver = FakeResolver()
    proposal = addrow.propose("0.24.0", "3.11", index=snapshot(), resolver=resolver)
    assert proposal.pins["verl"] == "0.9.1" and not proposal.overrides
    assert proposal.why["verl"] == "the newest verl, whose [vllm] extra admits vLLM 0.24.0 (==0.24.0)"
    assert [r.requirements for r in resolver.requests] == ["verl[vllm]==0.9.1\nvllm==0.24.0\n"]
    assert resolver.requests[0].overrides == ""


def test_older_declared_pairing_when_the_newest_does_not_resolve():
    # vLLM 0.25.0: verl 0.9.1 does not resolve with it even without its extra; verl 0.9.0, whose extra declares
    # >=0.18.0, does, and is proposed with that extra and no override
    resolver = FakeResolver()
    assert ("0.9.1", "0.25.0", False) not in resolver.stacks and ("0.9.1", "0.25.0", True) not in resolver.stacks
    proposal = addrow.propose("0.25.0", "3.11", index=snapshot(), resolver=resolver)
    assert proposal.pins["verl"] == "0.9.0" and not proposal.overrides
    assert proposal.pins["torch"] == "2.11.0" and proposal.pins["cuda"] == "13.0"
    assert [(r.requirements, r.overrides) for r in resolver.requests] == [
        ("verl[verl-core]==0.9.1\nvllm==0.25.0\n", "vllm==0.25.0\n"), ("verl[vllm]==0.9.0\nvllm==0.25.0\n", "")]
    assert "admits vLLM 0.25.0 (>=0.18.0)" in proposal.why["verl"]
    assert ("verl 0.9.1 without its vllm extra (which declares vllm==0.24.0) with vLLM 0.25.0 does not resolve"
            in proposal.why["verl"])


def test_the_override_row_loads_as_a_matrix_row(matrix):
    stacks = {k: v for k, v in STACKS.items() if k != ("0.9.0", "0.31.0", True)}
    proposal = addrow.propose("0.31.0", "3.11", index=snapshot(), resolver=FakeResolver(stacks))
    row, _, _ = addrow.prepare(matrix, proposal, "0.31.0")
    assert row.overrides["vllm"].version == "0.31.0" and row.verl == "0.9.1" and row.verl_extras == ("verl-core",)


def test_unpairable_names_the_nearest_pairings_found_by_resolution():
    with pytest.raises(pairing.Unpairable) as caught:
        addrow.propose("0.33.0", "3.11", index=snapshot(), resolver=FakeResolver())
    exc = caught.value
    # tried in add-row's order: the newest verl (without its extra), then the older verl whose extra declares 0.33.0
    assert [label for label, _ in exc.causes] == [
        "verl 0.9.1 without its vllm extra (which declares vllm==0.24.0) with vLLM 0.33.0", "verl 0.9.0 with vLLM 0.33.0"]
    assert exc.causes[0][1].startswith("vllm==0.33.0 depends on transformers>=5.16.1,<5.21.0 and verl==0.9.1")
    assert exc.causes[1][1].startswith("vllm==0.33.0 depends on transformers>=5.16.1,<5.21.0 and verl==0.9.0")
    assert (exc.by_vllm.verl, exc.by_vllm.vllm, exc.by_vllm.overridden) == ("0.9.1", "0.31.0", True)
    assert (exc.by_verl.verl, exc.by_verl.overridden) == ("0.8.0", True)
    assert "add-row --vllm 0.31.0 --verl 0.9.1" in exc.fix and "add-row --vllm 0.33.0 --verl 0.8.0" in exc.fix
    assert "[" not in exc.render()  # printed as console markup: no brackets to swallow


def test_given_verl_outside_its_range_is_tried_without_the_extra():
    proposal = addrow.propose("0.31.0", "3.11", "0.9.1", index=snapshot(), resolver=FakeResolver())
    assert proposal.pins["verl"] == "0.9.1" and "vllm" in proposal.overrides


def test_short_cause_is_the_first_because_clause():
    assert pairing.short_cause(CONFLICT.format(verl="0.9.0", vllm="0.33.0")) == (
        "vllm==0.33.0 depends on transformers>=5.16.1,<5.21.0 and verl==0.9.0 depends on one of: "
        "transformers>=5.5.3,<5.6.0 transformers>5.6.0,<5.11")
    assert pairing.short_cause("error: Failed to fetch: boom\nmore") == "Failed to fetch: boom"


# --- the report, its rendering and exit code ----------------------------------------------------------------------


def test_report_lists_what_is_newer_and_proposes_a_row_per_new_vllm(matrix):
    r = report(matrix.rows)
    assert [x.version for x in r.newer["vllm"]] == ["0.33.0", "0.31.0", "0.25.0"]
    assert [x.version for x in r.newer["flash-attn"]] == ["2.8.3.post1"]  # sdist-only releases count
    assert r.newer["verl"] == [] and [x.version for x in r.newer["torch"]] == ["2.13.0"]
    by = {o.version: o for o in r.outcomes}
    nearest = by["0.33.0"].nearest["vllm"]
    assert by["0.33.0"].proposal is None and (nearest["verl"], nearest["vllm"], nearest["override"]) == ("0.9.1", "0.31.0", True)
    assert nearest["offered"] is True  # it passes the rules too
    # the newest verl first: 0.9.1 without its extra (override) for 0.31.0; 0.9.0 (declared) for 0.25.0, with which
    # 0.9.1 does not resolve
    assert by["0.31.0"].row_id == "verl0.9.1-vllm0.31.0-torch2.13.0-cu130-py311" and "vllm" in by["0.31.0"].proposal.overrides
    assert by["0.25.0"].row_id == "verl0.9.0-vllm0.25.0-torch2.11.0-cu130-py311" and not by["0.25.0"].proposal.overrides
    assert [o.version for o in r.addable] == ["0.31.0", "0.25.0"] and r.exit_code == 1


def test_since_vllm_marks_versions_the_matrix_has(matrix):
    r = report(matrix.rows, since_vllm="0.24.0", limit=2)
    assert [(o.version, o.in_matrix) for o in r.outcomes] == [("0.33.0", False), ("0.31.0", False)]
    r = report(matrix.rows, since_vllm="0.12.0")
    assert {o.version: o.in_matrix for o in r.outcomes}["0.24.0"] is True


def test_a_new_verl_gets_the_newest_vllm_that_resolves_with_it(write_matrix):
    older = MATRIX.replace('verl: "0.9.1"', 'verl: "0.8.0"').replace('"0.24.0"', '"0.12.0"')
    r = report(matrix_mod.load(write_matrix(older)).rows)
    by = {(o.package, o.version): o for o in r.outcomes}
    assert by["verl", "0.9.1"].proposal.pins["vllm"] == "0.24.0"  # the one vLLM its extra admits
    # verl 0.9.0 admits >=0.18.0: vLLM 0.33.0 does not resolve with it, 0.31.0 does; its row is verl 0.9.0's, given
    # explicitly, although add-row --vllm 0.31.0 alone proposes the newest verl, 0.9.1, with an override
    new_verl = by["verl", "0.9.0"]
    assert new_verl.row_id == "verl0.9.0-vllm0.31.0-torch2.13.0-cu130-py311"
    assert new_verl.proposal.why["verl"] == "given" and not new_verl.proposal.overrides
    assert by["vllm", "0.31.0"].row_id == "verl0.9.1-vllm0.31.0-torch2.13.0-cu130-py311"
    assert [(o.package, o.version) for o in r.addable] == [
        ("vllm", "0.31.0"), ("vllm", "0.25.0"), ("vllm", "0.24.0"), ("verl", "0.9.0")]
    summary = cli_outdated.summary(r)
    assert "--vllm 0.31.0 --verl 0.9.0" in summary
    assert "--vllm 0.24.0 --verl 0.9.1" not in summary  # vLLM 0.24.0's row is verl 0.9.1's


def test_a_current_matrix_exits_0(write_matrix):
    current = MATRIX.replace('"0.24.0"', '"0.33.0"')  # the newest vLLM; verl 0.9.1 is the newest verl
    r = report(matrix_mod.load(write_matrix(current)).rows)
    assert r.newer["vllm"] == [] and r.outcomes == [] and r.exit_code == 0
    assert cli_outdated.summary(r) == "no row can be added yet (see the reasons above)"  # torch etc. are newer


def test_unpairable_releases_alone_exit_0(matrix):
    r = report(matrix.rows, resolver=FakeResolver(stacks={}))
    assert r.outcomes and not r.addable and r.exit_code == 0


def test_json_rendering(matrix):
    data = json.loads(cli_outdated.render_json(report(matrix.rows)))
    assert data["exit"] == 1 and data["addable"] == 2 and data["offline"] is False and data["python"] == "3.11"
    assert data["packages"]["vllm"]["matrix"] == "0.24.0"
    assert data["packages"]["flash-attn"]["newer"] == [
        {"version": "2.8.3.post1", "wheel": False, "requires_python": ">=3.9", "uploaded": None}]
    rows = {r["version"]: r for r in data["rows"]}
    assert rows["0.31.0"]["row"]["pins"]["verl"] == "0.9.1" and rows["0.31.0"]["reason"] is None
    override = rows["0.31.0"]["row"]["overrides"]["vllm"]
    assert override["version"] == "0.31.0" and override["reason"].startswith("verl 0.9.1 declares vllm==0.24.0")
    assert rows["0.25.0"]["row"]["pins"]["verl"] == "0.9.0" and rows["0.25.0"]["row"]["overrides"] == {}
    assert rows["0.33.0"]["row"] is None and rows["0.33.0"]["nearest"]["verl"]["verl"] == "0.8.0"
    assert [t["pairing"] for t in rows["0.33.0"]["tried"]] == [
        "verl 0.9.1 without its vllm extra (which declares vllm==0.24.0) with vLLM 0.33.0", "verl 0.9.0 with vLLM 0.33.0"]
    assert data["age_s"] == 3 * 3600 + 12 * 60


def test_table_rendering(matrix):
    r = report(matrix.rows)
    console = Console(file=io.StringIO(), width=250, record=True)
    console.print(cli_outdated.releases_table(r))
    console.print(cli_outdated.rows_table(r))
    text = console.export_text()
    assert "2.8.3.post1 (sdist)" in text and "0.33.0, 0.31.0, 0.25.0" in text
    assert "vllm 0.31.0" in text and "can be added" in text
    assert "→ verl 0.9.1: newest vLLM that resolves 0.31.0 (override)" in text
    assert "→ vLLM 0.33.0: newest verl that resolves 0.8.0 (override)" in text
    assert cli_outdated.summary(r) == "2 row(s) can be added: build.py add-row --vllm 0.31.0, --vllm 0.25.0"


def test_age_text():
    assert [index_snapshot.age_text(s) for s in (42, 300, 3 * 3600, 3 * 3600 + 12 * 60, 2 * 86400 + 4 * 3600, 86400)] == [
        "42 s", "5 min", "3 h", "3 h 12 min", "2 days 4 h", "1 day"]
    assert "3 h 12 min ago" in index_snapshot.cache_note(snapshot(), NOW, offline=True)


# --- the caches and the command -------------------------------------------------------------------------------------


def test_resolutions_are_cached_by_their_exact_inputs(tmp_path, monkeypatch):
    calls = fake_uv(monkeypatch)
    request = resolutions.Request("verl[vllm]==0.9.0\nvllm==0.25.0\n", "3.11")
    online = resolutions.Resolver(root=tmp_path, index="https://pypi.org/simple")
    first, second = online(request), online(request)
    assert first.ok and not first.cached and second.cached and second.stdout == first.stdout
    assert len(calls) == 1 and online.asked == 1 and online.from_cache == 1
    online(resolutions.Request(request.requirements, "3.12"))  # another Python: another question
    assert len(calls) == 2
    offline = resolutions.Resolver(root=tmp_path, index="https://pypi.org/simple", offline=True)
    assert offline(request).ok
    with pytest.raises(resolutions.NotCached):
        offline(resolutions.Request(request.requirements, "3.13"))
    stale = resolutions.Resolver(root=tmp_path, index="https://pypi.org/simple", max_age_s=0)
    stale(request)
    assert len(calls) == 3  # too old online: asked again


def test_a_failure_that_is_no_verdict_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(resolutions.uv, "compile_requirements",
                        lambda *a, **k: subprocess.CompletedProcess([], 2, "", "error: Failed to fetch `https://pypi.org/simple/vllm/`"))
    resolver = resolutions.Resolver(root=tmp_path)
    with pytest.raises(RuntimeFailure):
        resolver(resolutions.Request("vllm==0.25.0\n", "3.11"))
    assert not list(tmp_path.rglob("*.json"))


def test_offline_without_a_cache_is_bad_input_with_a_fix(run, matrix, tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "empty"))
    result = run("outdated", "--offline", "--matrix", matrix.path)
    assert result.code == 2 and "no cached index answers" in result.err and "once with the network" in result.err


def test_offline_uses_the_cache_and_says_how_old_it_is(run, matrix, tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(index_snapshot, "utcnow", lambda: NOW)
    fake_uv(monkeypatch)
    index_snapshot.save(snapshot())
    online = resolutions.Resolver(index="https://pypi.org/simple")
    monkeypatch.setattr(resolutions.pypi, "index_url", lambda: "https://pypi.org/simple")
    outdated.build_report(matrix.rows, snapshot(), online, python="3.11", now=NOW)  # what an online run leaves
    monkeypatch.setattr(resolutions.uv, "compile_requirements", lambda *a, **k: pytest.fail("offline asked uv"))
    result = run("outdated", "--offline", "--json", "--matrix", matrix.path)
    assert result.code == 1, result
    assert "as read 2026-12-02 08:48 UTC, 3 h 12 min ago" in result.err
    data = json.loads(result.out)
    assert data["offline"] is True and data["addable"] == 2 and data["resolutions"]["asked"] == 0


def test_offline_says_which_proposals_were_never_cached(run, matrix, tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "cache"))
    index_snapshot.save(snapshot())
    result = run("outdated", "--offline", "--matrix", matrix.path)
    assert result.code == 0, result  # nothing known to be addable
    assert "not in the cache" in result.out


@pytest.mark.parametrize("argv", [["--since-vllm", "abc"], ["--limit", "0"], ["--python", "3"]])
def test_bad_options_exit_2(run, argv, capsys):
    with pytest.raises(SystemExit) as exited:
        run("outdated", *argv)
    assert exited.value.code == 2


def test_a_python_the_default_base_lacks_gets_a_base_that_packages_it():
    """add-row --python 3.12 on a matrix whose default base is debootstrap:bookworm (3.11 only): the row gets the
    first suite of knowledge/bases.yaml that packages 3.12, preferring the default's distribution."""
    from imagematrix.assist import addrow

    defaults = {"base": "debootstrap:bookworm", "python": "3.11"}
    assert addrow.base_for(defaults, "3.11") is None
    assert addrow.base_for(defaults, "3.12") == "debootstrap:noble"
    assert addrow.base_for(defaults, "3.13") == "debootstrap:trixie"  # Debian first
    assert addrow.base_for(defaults, "3.9") is None  # nothing packages it: validate then says so
    assert addrow.base_for({"base": "nvidia/cuda:12.4.1-runtime-ubuntu22.04"}, "3.12") is None  # a pulled base
    snippet = addrow.row_yaml({"verl": "0.9.1", "python": "3.12"}, defaults, "c", base="debootstrap:noble")
    assert snippet.splitlines()[-1] == "    base: debootstrap:noble"
