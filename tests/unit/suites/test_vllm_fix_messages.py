"""A GPU smoke test whose vLLM engine fails to start with a known error names the fix from knowledge/vllm-advice.yaml
(issue 16): the same entries reach the suite as JSON (vllm_advice.export(): mounted into the image by smoke_gpu, read
from the project in host mode), and gpusmoke.known_fixes matches them as vllm_advice.for_failure does."""

from __future__ import annotations

import itertools
import json

import pytest

from imagematrix.knowledge import vllm_advice
from imagematrix.stages import smoke_gpu
from tests.unit.suites.test_gpusmoke import GPU_DIR, ROW_072, _row_json, gs

# The end of a real report (verl 0.5-era image, vLLM 0.10.0, full_cuda_graph on an sm_8x GPU), as vLLM printed it.
AOT_FAILURE = """\
[rank0]:   File "/usr/local/lib/python3.12/dist-packages/vllm/v1/worker/gpu_model_runner.py", line 2366, in initialize_attn_backend
[rank0]:     attn_metadata_builder_i = attn_backend_i.get_builder_cls()(
[rank0]:                               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
[rank0]:   File "/usr/local/lib/python3.12/dist-packages/vllm/v1/attention/backends/flash_attn.py", line 181, in __init__
[rank0]:     raise ValueError(
[rank0]: ValueError: AoT scheduling is required for full cuda graph.

[rank0]: During handling of the above exception, another exception occurred:
"""
OTHER_FAILURE = """\
  File "/opt/venv/lib/python3.11/site-packages/vllm/worker/worker.py", line 228, in determine_num_available_blocks
    torch.cuda.empty_cache()
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 22.06 GiB
"""


@pytest.fixture
def advice(monkeypatch):
    """The suite's advice state as conftest sets it, restored afterwards."""
    monkeypatch.setattr(gs, "_ADVICE", {"entries": (), "capability": None})
    return gs._ADVICE


def _ran(output: str) -> gs.Ran:
    return gs.Ran(["python", "vllm_generate.py", "--model", "tiny"], 1, output)


def _names_the_fix(message: str) -> None:
    assert "known vLLM failure fa2-full-cuda-graph (vllm-advice.yaml)" in message
    assert "piecewise CUDA graphs" in message and "TRITON_ATTN_VLLM_V1" in message


def test_the_aot_error_on_an_ampere_gpu_names_the_fix(advice, monkeypatch):
    monkeypatch.setattr(gs, "_installed", lambda dist: "0.10.0" if dist == "vllm" else None)
    gs.use_advice(vllm_advice.export(), capability=(8, 6))
    message = _ran(AOT_FAILURE).explain("vLLM 0.10.0 engine (CUDA graphs) failed")
    _names_the_fix(message)
    assert message.index("known vLLM failure") < message.index("--- output (tail) ---")  # first, before the log
    # the project's own query gives the same line
    assert vllm_advice.failure_fix(AOT_FAILURE, "0.10.0", (8, 6)) == message.splitlines()[1]


def test_no_advice_for_another_error_a_hopper_gpu_or_a_vllm_that_downgrades_the_mode(advice, monkeypatch):
    version = {"vllm": "0.10.0"}
    monkeypatch.setattr(gs, "_installed", lambda dist: version.get(dist))
    gs.use_advice(vllm_advice.export(), capability=(8, 6))
    assert "known vLLM failure" not in _ran(OTHER_FAILURE).explain("vLLM engine failed")
    assert vllm_advice.failure_fix(OTHER_FAILURE, "0.10.0", (8, 6)) is None
    gs.use_advice(capability=(9, 0))  # Hopper runs FlashAttention-3, which has AoT scheduling
    assert "known vLLM failure" not in _ran(AOT_FAILURE).explain("vLLM engine failed")
    version["vllm"] = "0.10.1"
    gs.use_advice(capability=(8, 6))
    assert "known vLLM failure" not in _ran(AOT_FAILURE).explain("vLLM engine failed")
    assert gs.known_fixes(AOT_FAILURE, None, (8, 6), vllm_advice.export()) == []  # no vLLM installed


def test_the_suite_matches_as_the_project_does_for_every_entry_version_and_gpu():
    """One source of truth: gpusmoke's standard-library matching over the exported data agrees with
    vllm_advice.for_failure over the loaded data, for the matcher used in images (packaging) and without it."""
    exported, entries = vllm_advice.export(), vllm_advice.entries()
    text = "\n".join(e.symptom for e in entries)
    for vllm, cap in itertools.product(("0.6.4", "0.7.2", "0.9.1", "0.9.2", "0.10.0", "0.10.1", "0.11.0", "0.31.0"),
                                       ((7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0), None)):
        want = [vllm_advice.fix_line(e) for e in vllm_advice.for_failure(text, vllm, cap)]
        assert gs.known_fixes(text, vllm, cap, exported) == want, (vllm, cap)
        assert gs.known_fixes(text, vllm, cap, exported, matches=gs.simple_matcher) == want, (vllm, cap)


def test_host_mode_reads_the_projects_knowledge_and_an_image_the_mounted_json(tmp_path):
    assert gs.load_vllm_advice(None) == vllm_advice.export()  # this folder sits in the checkout
    path = smoke_gpu.write_advice(tmp_path / "vllm-advice.json")
    assert gs.load_vllm_advice(str(path)) == json.loads(path.read_text()) == vllm_advice.export()


def test_the_docker_line_mounts_the_advice_and_passes_it_to_the_suite(tmp_path):
    path = smoke_gpu.write_advice(tmp_path / "vllm-advice.json")
    cmd = smoke_gpu.docker_command("docker", "img", _row_json(ROW_072), tmp_path, advice=path)
    assert f"{path}:/imagematrix/vllm-advice.json:ro" in cmd
    assert cmd[cmd.index("--vllm-advice") + 1] == "/imagematrix/vllm-advice.json"
    assert "--vllm-advice" in (GPU_DIR / "conftest.py").read_text()


@pytest.mark.parametrize("mounted", ["/imagematrix/gpu", "/gpu", "/srv/suite/gpu", "/x/imagematrix/suites/gpu"])
def test_a_suite_mounted_outside_a_checkout_loads_without_advice(mounted):
    """Inside an image the suite sits at a shallow mount (/imagematrix/gpu) with no project around it: loading the
    advice without --vllm-advice gives none, never an IndexError that aborts pytest's collection (CI, session 4)."""
    from pathlib import Path

    assert gs._project_advice(Path(mounted)) == []
    assert gs._project_advice(GPU_DIR.resolve()) == vllm_advice.export()
