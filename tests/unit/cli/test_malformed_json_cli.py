"""Issue 26, item 9: the JSON the commands take from the user (`sbom --row`'s SBOM file, `promote --plan-json`,
`flash-attn import --record`) is bad input when malformed: exit 2 naming the file (or the option), before any work,
never an internal error."""

from __future__ import annotations

import pytest

from imagematrix.cli import sbom
from imagematrix.model import matrix

DEEP = "[" * 100_000 + "]" * 100_000
ROW = "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py312"
FA_ROW = "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py312-fa2.8.3"
WHEEL = "flash_attn-2.8.3+cu13torch2.11cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"
NOT_UTF8 = b'{"a": "\xff"}'


def _short(value) -> str:
    """A test id that stays short for long contents."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def _refused(result, name: str) -> None:
    assert result.code == 2, result
    assert name in result.err, result
    assert "internal error" not in result.err and "Traceback" not in result.err, result


@pytest.mark.parametrize("content", ["{not json", DEEP, NOT_UTF8, "[]", '"sbom"', "null", "NaN", "x" * 5000],
                         ids=_short)
def test_a_malformed_sbom_file_is_bad_input_naming_it(content, run, tmp_path, monkeypatch):
    monkeypatch.setattr(sbom, "SBOM_MAX_BYTES", 4096)  # the size limit, made small enough to test
    path = tmp_path / "logs" / ROW / "sbom.cdx.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    _refused(run("sbom", "--row", ROW, "--log-dir", tmp_path / "logs"), str(path))


def test_a_good_sbom_file_is_printed(run, tmp_path):
    path = tmp_path / "logs" / ROW / "sbom.cdx.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"bomFormat": "CycloneDX", "components": []}')
    result = run("sbom", "--row", ROW, "--log-dir", tmp_path / "logs")
    assert result.code == 0 and '"bomFormat": "CycloneDX"' in result.out, result


@pytest.mark.parametrize("plan", ["{not json", DEEP, "[]", "null", '{"include": "x"}', '{"include": [1]}',
                                  '{"include": [{"row": ["a"]}]}', '{"include": [{"row": 1}]}',
                                  '{"include": [{"job": "x"}]}', '{"include": [{"row": {"a": 1}}]}'], ids=_short)
def test_a_malformed_plan_json_is_bad_input_naming_the_option(plan, run):
    _refused(run("promote", "--plan-json", plan, "--registry", "127.0.0.1:9/x"), "--plan-json")


def test_a_plan_json_of_known_rows_is_taken(run):
    """The check lets `plan --github`'s matrix through: promote goes on to the registry (here a dead one)."""
    result = run("promote", "--plan-json", f'{{"include": [{{"row": "{ROW}", "x": 1}}]}}', "--registry",
                 "127.0.0.1:9/x", "--need", "smoke")
    assert "--plan-json" not in result.err, result


RECORDS = {"not JSON": "{not json", "nested too deeply": DEEP, "not UTF-8": NOT_UTF8, "a list": "[]",
           "a string": '"record"', "archs a string": '{"archs": "90"}', "archs numbers": '{"archs": [90]}',
           "sha256 a number": '{"archs": ["90"], "sha256": 5}', "seconds text": '{"archs": ["90"], "seconds": "x"}',
           "units a fraction": '{"archs": ["90"], "units": 1.5}', "sdist of two lines": '{"archs": ["90"], "sdist": "a\\nb"}',
           "over the size limit": '{"archs": ["90"], "x": ' + "1" * 1_100_000 + "}"}


@pytest.mark.parametrize("case", sorted(RECORDS))
def test_a_malformed_compile_record_is_bad_input_naming_it(case, run, tmp_path):
    record = RECORDS[case]
    assert any(r.id == FA_ROW for r in matrix.load().rows)
    wheel = tmp_path / WHEEL
    wheel.write_bytes(b"x")
    path = tmp_path / "record.json"
    path.write_bytes(record if isinstance(record, bytes) else record.encode())
    _refused(run("flash-attn", "import", wheel, "--row", FA_ROW, "--record", path, "--registry", "127.0.0.1:9/x"),
             str(path))
