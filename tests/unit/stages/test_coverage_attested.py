"""Issue 28, item 2: the GPU verdict of a pushed image travels in its signed provenance (a label would have to be
fixed before the tests and the scan); `build.py verify` reads it back and holds it against the committed
coverage/<row-id>.json that `pick` answers from."""

from __future__ import annotations

import pytest

from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import RuntimeFailure
from imagematrix.stages import attest, coverage_row, verify
from imagematrix.stages.coverage_image import FileCoverage, ImageScan

ROW_ID = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
SP = "/opt/venv/lib/python3.11/site-packages"


def baseline(row, vllm=("sm_70", "sm_75", "sm_80", "sm_86", "sm_90")) -> coverage_row.Baseline:
    files = {f"{SP}/torch/lib/libtorch_cuda.so": ("sm_70", "sm_75", "sm_80", "sm_86", "sm_90"),
             f"{SP}/vllm/_C.abi3.so": vllm}
    return coverage_row.make_baseline(row, ImageScan("img", {p: FileCoverage("0" * 64, 1, "so", s, ())
                                                              for p, s in files.items()}, {}, 1, 0, 1.0))


def predicate(row, coverage: dict | None) -> dict:
    return attest.provenance(row, image="r/verl:x", digest="sha256:" + "a" * 64, lock_text="", input_digest="sha256:b",
                             base="base", base_id="sha256:c", smoke={"summary": "9 passed"}, tools={},
                             started="s", finished="f", coverage=coverage)


@pytest.fixture
def m(project_copy):
    return matrix_mod.load(project_copy)


def test_the_provenance_carries_the_verdict_as_a_byproduct(m):
    row = m.select([ROW_ID])[0]
    found = baseline(row)
    doc = predicate(row, coverage_row.byproduct(found))
    smoke, coverage = doc["runDetails"]["byproducts"]
    assert smoke["name"] == "smoke tests" and coverage["name"] == coverage_row.COVERAGE_BYPRODUCT
    assert coverage["annotations"]["coverage"]["8.0"] == "native" and coverage["annotations"]["coverage"]["6.0"] == "none"
    assert coverage["annotations"]["driver_minimum"] == found.driver["minimum"]
    assert len(coverage["digest"]["sha256"]) == 64 and coverage["uri"] == f"coverage/{ROW_ID}.json"
    assert predicate(row, None)["runDetails"]["byproducts"] == [smoke]  # a build without the step: as before


def test_verify_reads_the_verdict_back_and_refuses_one_worse_than_what_pick_answers_from(m):
    row = m.select([ROW_ID])[0]
    committed = coverage_row.baseline_path(m.root, ROW_ID)
    signed = predicate(row, coverage_row.byproduct(baseline(row)))
    line = verify.gpu_coverage(m, "r/verl:x", row, signed)
    assert "native sm_70 sm_75 sm_80 sm_86 sm_89 sm_90" in line and "no committed" in line
    coverage_row.write(committed, baseline(row))
    assert "as coverage/" in verify.gpu_coverage(m, "r/verl:x", row, signed)
    lost = predicate(row, coverage_row.byproduct(baseline(row, vllm=("sm_80", "sm_86", "sm_90"))))
    with pytest.raises(RuntimeFailure, match=r"sm_70: image none, coverage/.*json native"):
        verify.gpu_coverage(m, "r/verl:x", row, lost)
    coverage_row.write(committed, baseline(row, vllm=("sm_80", "sm_86", "sm_90")))
    assert "better than coverage/" in verify.gpu_coverage(m, "r/verl:x", row, signed)
    assert "not in the provenance" in verify.gpu_coverage(m, "r/verl:x", row, predicate(row, None))


def test_a_recompressed_copy_keeps_the_verdict(m):
    row = m.select([ROW_ID])[0]
    signed = predicate(row, coverage_row.byproduct(baseline(row)))
    copy = attest.recompressed(signed, source="r/verl@sha256:" + "a" * 64, compression="zstd", level=3, tool="skopeo",
                               finished="f")
    assert copy["runDetails"]["byproducts"] == signed["runDetails"]["byproducts"]
