"""Issue 26, item 8: GPU run records (docs/gpu-runs/*.json) and a run's raw results are data, not trusted.

- a malformed record (not JSON or UTF-8, a list, wrong types, extra keys, nested too deeply, over the size limit) is
  bad input naming the file and the fix, for `gpu-record` and `docs`; `gpu-record` checks every record it will read
  before it writes its own;
- malformed raw results (junit.xml, env.json, host-versions.json, verl_train.json, a token line of pytest.log,
  gpu.csv, over the size limit) are bad input naming the file, and nothing is written;
- `--note` is one line;
- whatever text a record holds renders in docs/gpu-runs.md (and the image tables) as text: no HTML, heading, list
  or table cell of its own.
"""

from __future__ import annotations

import json
import shutil

import pytest

from imagematrix.model import gpurun
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError
from imagematrix.model.yamlio import MAX_BYTES  # the one limit on data files (model/datafile.py)
from imagematrix.stages import gpu_docs, gpu_record
from tests.conftest import ROOT
from tests.support import GPU_JUNIT as JUNIT
from tests.support import GPU_ROW as ROW
from tests.support import gpu_raw_results


@pytest.fixture
def raw(tmp_path):
    return gpu_raw_results(tmp_path / "raw")


GOOD_RECORD = sorted(gpurun.RUNS.glob(f"*-{ROW}-1.json"))[0]  # the committed H200 run: numbers, wheels, tests
DEEP = "[" * 100_000 + "]" * 100_000


def _tree(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _good() -> dict:
    return json.loads(GOOD_RECORD.read_text())


def _changed(**changes) -> str:
    return json.dumps({**_good(), **changes})


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the matrix, its locks, README and records; gpu-record writes into the copy's docs/gpu-runs."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("matrix.yaml", "README.md"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "locks", root / "locks")
    runs = root / "docs" / "gpu-runs"
    runs.mkdir(parents=True)
    for path in gpurun.RUNS.glob("*.json"):
        shutil.copy(path, runs / path.name)
    monkeypatch.setattr(gpurun, "RUNS", runs)
    return root




def _gpu_record(run, project, raw, *extra):
    return run("gpu-record", raw, "--row", ROW, "--date", "2026-12-09", "--matrix", project / "matrix.yaml", *extra)


def _refused(result, names: str) -> None:
    assert result.code == 2, result
    assert names in result.err, result
    assert "internal error" not in result.err and "Traceback" not in result.err, result
    assert "wrote" not in result.out, result


RECORDS = {
    "not JSON": "{not json",
    "a list": "[]",
    "a string": '"a record"',
    "null": "null",
    "not UTF-8": b'{"note": "\xff"}',
    "nested too deeply": DEEP,
    "over the size limit": _changed(note="x" * 1000) + " " * MAX_BYTES,
    "an extra key": _changed(extra=1),
    "gpus a string": _changed(gpus="many"),
    "tests a mapping": _changed(tests={"a": 1}),
    "a test of no outcome": _changed(tests=[{"name": "t", "outcome": "great", "duration_s": 1}]),
    "a NaN duration": _changed(tests=[{"name": "t", "outcome": "passed", "duration_s": 1}]).replace("1}]", "NaN}]"),
    "a note of two lines": _changed(note="one\n# two"),
    "a date that is none": _changed(date="yesterday"),
    "a row id with a slash": _changed(row="../x"),
    "metrics of the wrong shape": _changed(numbers={"verl_train": {"metrics": {"pg_loss": [1, 2]}}}),
    "weight sync of the wrong shape": _changed(numbers={"verl_weight_sync": {"1": 0.5}}),
    "token ids that are text": _changed(numbers={"vllm_eager_token_ids": "<script>"}),
    "an unknown number": _changed(numbers={"<h1>x": 1}),
    "an image mode record without its image": _changed(mode="image"),
}


@pytest.mark.parametrize("command", ["gpu-record", "docs"])
@pytest.mark.parametrize("case", sorted(RECORDS))
def test_a_malformed_record_is_bad_input_naming_the_file_and_nothing_is_written(case, command, run, project, raw):
    bad = gpurun.RUNS / f"2026-12-01-{ROW}-9.json"
    content = RECORDS[case]
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = _tree(project)
    if command == "gpu-record":  # the record it would write lists the row's runs: the bad one is read first
        result = _gpu_record(run, project, raw)
    else:
        result = run("docs", "--offline", "--matrix", project / "matrix.yaml")
    _refused(result, str(bad))
    assert "fix:" in result.err and "gpu-record" in result.err, result
    assert _tree(project) == before


def test_every_bad_record_is_named_at_once(project):
    for seq, text in enumerate(("[]", "{"), 1):
        (gpurun.RUNS / f"2026-12-01-{ROW}-{seq + 7}.json").write_text(text)
    with pytest.raises(InputError) as caught:
        gpurun.load_all(gpurun.RUNS)
    assert f"{ROW}-8.json" in str(caught.value) and f"{ROW}-9.json" in str(caught.value)


def test_the_committed_records_load_and_a_good_one_is_written_beside_them(run, project, raw):
    assert len(gpurun.load_all(gpurun.RUNS)) >= 6
    result = _gpu_record(run, project, raw, "--note", "a rerun: <b>|x|</b> # not a heading")
    assert result.code == 0, result
    written = gpurun.RUNS / f"2026-12-09-{ROW}-1.json"
    assert json.loads(written.read_text())["note"] == "a rerun: <b>|x|</b> # not a heading"
    assert f"wrote docs/gpu-runs/2026-12-09-{ROW}-1.json (1 passed); row {ROW}: GPU suite" in result.out, result


RAW = {  # file -> content; None: written as bytes that are not UTF-8
    "junit.xml": ["<testsuites><testcase", "not xml at all", None,
                  JUNIT.replace('time="4.5"', 'time="soon"'), JUNIT.replace('time="4.5"', 'time="inf"'),
                  JUNIT.replace('time="4.5"', 'time="-3"')],
    "env.json": ["[]", "{", '"env"', json.dumps({"row": ROW, "python": 3.12, "versions": {}}),
                 json.dumps({"row": ROW, "python": "3.12.3", "versions": ["torch"]}),
                 json.dumps({"row": ROW, "python": "3.12.3"}), json.dumps({"row": [ROW], "python": "3", "versions": {}}),
                 json.dumps({"row": ROW, "python": "3.12\n# x", "versions": {}}), None, DEEP,
                 json.dumps({"row": ROW, "python": "3.12.3", "versions": {}, "pad": "x" * MAX_BYTES})],
    "host-versions.json": ["[]", '{"packages": {}}', '{"packages": [{"name": "torch"}]}',
                           '{"packages": [], "missing": "torch"}', '{"packages": [], "extra": 1}', "nope"],
    "verl_train.json": ["[1]", '"done"', '{"steps": [1]}', '{"steps": {"1": 5}}', '{"metrics": {"pg_loss": 1}}',
                        '{"wall_s": "long"}', '{"passed": "yes"}', "{"],
    "pytest.log": ["vLLM 0.24.0 (eager, dtype bfloat16): generated [[1, 2], [3,]]\n",
                   "vLLM 0.24.0 (eager, dtype bfloat16): generated [[1, 2], [\"<script>\"]]\n",
                   "vLLM 0.24.0 (<script>alert(1)</script>, dtype bfloat16): generated [[1]]\n",
                   "ok\nvLLM 0.24.0 (eager, dtype bf16): generated [[" + "[" * 100_000 + "]]\n"],
    "gpu.csv": ["NVIDIA H200\x1b[31m, 580.159.04, 143771 MiB, 9.0\n", None],
}


@pytest.mark.parametrize(("name", "content"), [(name, content) for name, contents in RAW.items()
                                               for content in contents],
                         ids=[f"{name}-{i}" for name, contents in RAW.items() for i in range(len(contents))])
def test_malformed_raw_results_are_bad_input_naming_the_file_and_nothing_is_written(name, content, run, project,
                                                                                     raw):
    path = raw / name
    path.write_bytes(b"\xff\xfe{" if content is None else content.encode())
    before = _tree(project)
    _refused(_gpu_record(run, project, raw), str(path))
    assert _tree(project) == before


@pytest.mark.parametrize("note", ["two\nlines", "tab\there", "\x1b[31mred", "line\u2028separator", "nul\x00",
                                  "x" * 2001], ids=["newline", "tab", "escape", "line separator", "nul", "too long"])
def test_a_note_of_more_than_one_line_is_refused(note, run, project, raw):
    before = _tree(project)
    result = _gpu_record(run, project, raw, "--note", note)
    _refused(result, "--note")
    assert _tree(project) == before


INJECTED = "<script>alert(1)</script> | # x | [link](http://x) *em* `code`"


def test_record_text_renders_as_text_in_the_page_and_the_table():
    """Every record field that is text (the note, test names and details, the GPU's name, driver, versions, wheels,
    the numbers' names) is escaped by one helper: no HTML, no heading, no link and no extra table cell."""
    data = _good()
    data.update(note="# " + INJECTED, gpu="NVIDIA " + INJECTED, driver=INJECTED, capability=INJECTED,
                python=INJECTED, torch=INJECTED, torch_cuda="- " + INJECTED)
    data["tests"] = [{"name": "t::" + INJECTED, "outcome": "failed", "duration_s": 1.0, "detail": INJECTED},
                     {"name": "`x` | y", "outcome": "passed", "duration_s": 2.0}]
    data["wheels"] = {"source": INJECTED, "from_lock": 1, "from_host_same_version": [INJECTED],
                      "from_host_other_version": [INJECTED], "absent": [INJECTED], "omitted": [INJECTED]}
    data["numbers"]["verl_train"]["attn_implementation"] = INJECTED
    data["numbers"]["verl_train"]["metrics"] = {INJECTED: {"1": 0.5, "<b>2": None}}
    data["numbers"]["verl_weight_sync"] = {"<i>1": {"training/" + INJECTED: 0.25}}
    run_ = gpurun.GpuRun.model_validate(data)
    m = matrix_mod.load(ROOT / "matrix.yaml")
    page = gpu_docs.page(m, [run_])
    assert "<script>" not in page and "<b>" not in page and "<i>" not in page and "[link](" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the text is kept, as text
    headings = [line for line in page.splitlines() if line.startswith("#")]
    assert headings[:2] == ["# GPU runs", "## Records, newest first"] and len(headings) == 3, headings
    assert headings[2].startswith(f"### 2026-12-02: {ROW} on 1x NVIDIA &lt;script&gt;"), headings
    for line in page.splitlines():
        if line.startswith("|"):
            cells = line.replace("\\|", "").count("|") - 1
            assert cells in (2, 4), line  # the row table and the training table (step, one metric); the tests
        else:
            assert not line.startswith(("- <", "-  ", "1. ", "> ")), line
    # the image tables' GPU cell (docs/images.md, README) is the same summary
    assert "&lt;script&gt;" in gpurun.summary([run_]) and "|" not in gpurun.summary([run_]).replace("\\|", "")


def test_the_raw_reader_keeps_a_failure_line_of_tabs_and_escapes_as_one_line(raw):
    (raw / "junit.xml").write_text(JUNIT.replace(
        '/>', '><failure message="AssertionError:&#9;x&#13;!= y&#10;tb">tb</failure></testcase>', 1))
    m = matrix_mod.load(ROOT / "matrix.yaml")
    record = gpu_record.record(m, m.select([ROW])[0], raw, "2026-12-09", "host")
    assert record.tests[0].detail == "AssertionError: x"  # \r ends the first line; the tab became a space
