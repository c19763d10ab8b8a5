"""doctor and pick give the known vLLM failures (knowledge/vllm-advice.yaml) for the installed vLLM and the GPU:
full CUDA graphs on FlashAttention-2 (vLLM 0.9.2-0.10.0, every GPU from Ampere on but Hopper) and the memory
profiling assertion on shared GPUs (VLLM_USE_V1=0 named only while the V0 engine exists)."""

from __future__ import annotations

import json

from imagematrix.assist import doctor, pick
from imagematrix.model import matrix as matrix_mod
from tests.conftest import ROOT

M = matrix_mod.load(ROOT / "matrix.yaml")
A10 = {"name": "NVIDIA A10", "capability": [8, 6]}
H100 = {"name": "NVIDIA H100 80GB HBM3", "capability": [9, 0]}
CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


def row_of(vllm: str):
    return next(r for r in M.rows if r.vllm == vllm)


def facts(vllm: str, gpus: list) -> dict:
    pins = {**row_of(vllm).pins()} if any(r.vllm == vllm for r in M.rows) else {"vllm": vllm}
    return {"python": "3.11.2", "executable": "/opt/venv/bin/python", "packages": {**pins, "vllm": vllm},
            "driver": None, "env": {}, "torch": {"version": pins.get("torch"), "cuda": "12.6", "archs": CU126,
                                                 "gpus": gpus}}


def advice_ids(report) -> list[str]:
    return [a.id for a in report.vllm_advice]


def test_full_cuda_graph_advice_on_sm86_not_on_sm90():
    on_a10 = doctor.analyse(M, facts("0.10.0", [A10]))
    (item,) = [a for a in on_a10.vllm_advice if a.id == "fa2-full-cuda-graph"]
    assert item.gpus == ["NVIDIA A10 (sm_86)"]
    assert "AoT scheduling is required for full cuda graph" in item.symptom and "piecewise" in item.fix
    text = "\n".join(doctor.lines(on_a10))
    assert "known vLLM 0.10.0 failures" in text and "[fa2-full-cuda-graph] on NVIDIA A10 (sm_86)" in text
    assert "fa2-full-cuda-graph" not in advice_ids(doctor.analyse(M, facts("0.10.0", [H100])))
    assert "fa2-full-cuda-graph" not in advice_ids(doctor.analyse(M, facts("0.10.0", [])))  # GPU unknown
    both = doctor.analyse(M, facts("0.10.0", [A10, H100]))
    assert [a.gpus for a in both.vllm_advice if a.id == "fa2-full-cuda-graph"] == [["NVIDIA A10 (sm_86)"]]


def test_no_full_cuda_graph_advice_where_vllm_downgrades_the_mode_itself():
    # vLLM 0.10.1 and later (cudagraph_mode) fall back on FlashAttention-2 instead of failing
    for vllm in ("0.11.0", "0.12.0", "0.24.0"):
        assert not [i for i in advice_ids(doctor.analyse(M, facts(vllm, [A10]))) if i.startswith("fa2-")], vllm


def test_memory_profiling_advice_matches_the_vllm_version():
    old = doctor.analyse(M, facts("0.10.0", []))
    (item,) = [a for a in old.vllm_advice if a.symptom == "Error in memory profiling"]
    assert "VLLM_USE_V1=0" in item.fix and item.gpus == []
    new = doctor.analyse(M, facts("0.11.0", [A10]))
    (item,) = [a for a in new.vllm_advice if a.symptom == "Error in memory profiling"]
    assert "VLLM_USE_V1=0" not in item.fix and "own GPUs" in item.fix and "gpu_memory_utilization" in item.fix
    assert any("symptom: \"Error in memory profiling\"" in line for line in doctor.lines(new))


def test_advice_is_no_finding_and_comes_in_the_json():
    report = doctor.analyse(M, facts("0.10.0", [A10]))
    assert report.vllm_advice and not [f for f in report.findings if "AoT" in f.message]
    data = json.loads(report.as_json())
    assert {a["id"] for a in data["vllm_advice"]} == set(advice_ids(report))
    assert all({"gpus", "when", "symptom", "fix", "source"} <= set(a) for a in data["vllm_advice"])


def test_without_vllm_no_advice():
    report = doctor.analyse(M, {**facts("0.10.0", [A10]), "packages": {"torch": "2.7.1", "vllm": None}})
    assert report.vllm_advice == []


def test_pick_prints_the_full_cuda_graph_advice_for_such_gpus(run, monkeypatch):
    asked = []  # the registry is not asked: its answer (published, with some labels) is faked here

    def published(registry, tag):
        asked.append((registry, tag))
        return {"org.opencontainers.image.version": tag}

    monkeypatch.setattr(pick.publish, "remote_labels", published)
    on_a10 = pick.pick(M, "A10", vllm="0.10.0")
    assert on_a10.best.row.vllm == "0.10.0"
    assert any("AoT scheduling is required" in n and "piecewise" in n for n in on_a10.best.notes)
    assert not [n for n in pick.pick(M, "H100", vllm="0.10.0").best.notes if "AoT" in n]
    assert not [n for n in pick.pick(M, "A10", vllm="0.12.0").best.notes if "AoT" in n]
    assert not [n for n in pick.pick(M, "A10", vllm="0.10.0").best.notes if "memory profiling" in n]  # GPU-free
    result = run("pick", "--gpu", "sm_86", "--vllm", "0.10.0")
    assert result.code == 0
    out = " ".join(result.out.split())  # rich wraps long lines
    assert "AoT scheduling is required for full cuda graph" in out
    assert out.index("AoT scheduling") < out.index("docker pull")
    assert len(asked) == 1 and asked[0][1] == on_a10.best.row.id
