"""Known vLLM failures per version and GPU (knowledge/vllm-advice.yaml, imagematrix/knowledge/vllm_advice.py): the
loader takes the project's file and rejects malformed ones as bad input naming file:line; the queries pick the
entries by vLLM version and compute capability."""

from __future__ import annotations

import shutil

import pytest

from imagematrix.knowledge import vllm_advice
from imagematrix.model.errors import InputError
from tests.conftest import ROOT

FILE = ROOT / "knowledge" / "vllm-advice.yaml"
GOOD = """advice:
  - id: some-failure
    vllm: ">=0.10,<0.11"
    capability: "<9.0"
    when: the engine starts on such a GPU
    symptom: "Some error text"
    advice: do the other thing
    source: vLLM 0.10.0 source
"""


def ids(vllm, caps=(), **kw) -> list[str]:
    return [m.advice.id for m in vllm_advice.matching(vllm, list(caps), **kw)]


def test_the_project_file_loads_with_unique_ids_and_a_source_each():
    entries = vllm_advice.load(FILE)
    assert {"fa2-full-cuda-graph", "memory-profiling-shared-gpu", "memory-profiling-shared-gpu-v1-only"} <= {
        e.id for e in entries}
    assert all(e.source and e.symptom and e.advice for e in entries)


def test_a_good_file(tmp_path):
    path = tmp_path / "vllm-advice.yaml"
    path.write_text(GOOD)
    (entry,) = vllm_advice.load(path)
    assert entry.for_vllm("0.10.2") and not entry.for_vllm("0.11.0") and not entry.for_vllm("not a version")
    assert entry.for_gpu((8, 6)) and not entry.for_gpu((9, 0))
    matched = vllm_advice.matching("0.10.0", [(8, 6), (9, 0)], advice=(entry,))
    assert [(m.advice.id, m.gpus) for m in matched] == [("some-failure", ((8, 6),))]
    assert vllm_advice.matching("0.10.0", [(9, 0)], advice=(entry,)) == []
    assert vllm_advice.matching("0.10.0", [], advice=(entry,)) == []  # GPU unknown: a GPU condition is not met
    assert vllm_advice.matching(None, [(8, 6)], advice=(entry,)) == []


@pytest.mark.parametrize(("old", "new", "line", "said"), [
    ('vllm: ">=0.10,<0.11"', 'vllm: ">=0.10,<<0.11"', 2, "vllm"),  # not a specifier
    ('capability: "<9.0"', 'capability: ""', 2, "capability"),
    ("    source: vLLM 0.10.0 source\n", "", 2, "source"),  # a field missing
    ("id: some-failure", "id: Some Failure", 2, "id"),
    ("advice: do the other thing", "advice: do the other thing\n    extra: 1", 2, "extra"),  # an unknown field
    ('symptom: "Some error text"', 'symptom: "two\\nlines"', 2, "symptom"),
])
def test_a_malformed_entry_is_bad_input_naming_its_line(tmp_path, old, new, line, said):
    path = tmp_path / "vllm-advice.yaml"
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(InputError) as caught:
        vllm_advice.load(path)
    assert caught.value.where == f"{path}:{line}" and said in caught.value.message


@pytest.mark.parametrize("text", ["advice: {}\n", "- 1\n", "advice:\n  - just a string\n", "advice: [", "",
                                  GOOD + GOOD.replace("advice:\n", "")])  # the last: an id twice
def test_a_malformed_file_is_bad_input(tmp_path, text):
    path = tmp_path / "vllm-advice.yaml"
    path.write_text(text)
    with pytest.raises(InputError):
        vllm_advice.load(path)


def test_full_cuda_graph_on_flash_attention_2_only_for_the_versions_that_raise():
    # 0.9.2 and 0.10.0 raise "AoT scheduling is required for full cuda graph." on FlashAttention-2 (every GPU from
    # Ampere on but Hopper); 0.10.1 and later downgrade the CUDA graph mode themselves
    for vllm in ("0.9.2", "0.10.0", "0.10.0+cu128"):
        for cap in ((8, 0), (8, 6), (8, 9), (10, 0), (12, 0)):
            assert "fa2-full-cuda-graph" in ids(vllm, [cap]), (vllm, cap)
        assert "fa2-full-cuda-graph" not in ids(vllm, [(9, 0)])
        assert "fa2-full-cuda-graph" not in ids(vllm, [(7, 5)])  # no FlashAttention-2 below sm_80
        assert "fa2-full-cuda-graph" not in ids(vllm)  # GPU unknown
    for vllm in ("0.9.0", "0.10.1", "0.11.0", "0.12.0", "0.24.0"):
        assert not [i for i in ids(vllm, [(8, 6)]) if i.startswith("fa2-full-cuda-graph")], vllm
    assert ids("0.9.1", [(8, 6)], gpu_only=True) == ["fa2-full-cuda-graph-0.9.1"]


def test_memory_profiling_advice_names_vllm_use_v1_only_where_v0_exists():
    for vllm, entry in [("0.7.2", "memory-profiling-shared-gpu"), ("0.10.0", "memory-profiling-shared-gpu"),
                        ("0.10.2", "memory-profiling-shared-gpu"), ("0.11.0", "memory-profiling-shared-gpu-v1-only"),
                        ("0.12.0", "memory-profiling-shared-gpu-v1-only"), ("0.31.0", "memory-profiling-shared-gpu-v1-only")]:
        matched = [m for m in vllm_advice.matching(vllm, []) if m.advice.symptom == "Error in memory profiling"]
        assert [m.advice.id for m in matched] == [entry], vllm
        assert ("VLLM_USE_V1=0" in matched[0].advice.advice) == (entry == "memory-profiling-shared-gpu"), vllm
        assert "gpu_memory_utilization" in matched[0].advice.advice


def test_the_default_path_follows_the_knowledge_folder(tmp_path, monkeypatch):
    from imagematrix.model import paths

    shutil.copy(FILE, tmp_path / "vllm-advice.yaml")
    monkeypatch.setattr(paths, "KNOWLEDGE", tmp_path)
    assert vllm_advice.default_path() == tmp_path / "vllm-advice.yaml"
    assert vllm_advice.load() == vllm_advice.load(FILE)
