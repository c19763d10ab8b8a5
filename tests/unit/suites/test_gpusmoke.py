"""CPU parts of the GPU smoke suite: options and skip logic, arch coverage, dtype advice, the docker line."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from imagematrix.model import matrix as matrix_mod
from imagematrix.model import paths
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.stages import smoke_gpu
from tests.conftest import ROOT

GPU_DIR = paths.SUITES / "gpu"
ROW_072 = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
ROW_FA = "verl0.4.1-vllm0.8.5-torch2.6.0-cu124-py311-fa2.7.4.post1"


def _load_gpusmoke():
    if "gpusmoke" in sys.modules:  # already imported by the GPU suite's conftest in this run
        return sys.modules["gpusmoke"]
    spec = importlib.util.spec_from_file_location("gpusmoke", GPU_DIR / "gpusmoke.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpusmoke"] = module
    spec.loader.exec_module(module)
    return module


gs = _load_gpusmoke()


def _row_json(row_id: str) -> Path:
    return ROOT / "dockerfiles" / "generated" / row_id / "row.json"


# --- options and skip logic ---------------------------------------------------------------------------------

def test_settings_modes_and_usage_errors(tmp_path):
    assert gs.settings(False, False, None, None, None).mode is None
    assert gs.settings(True, False, None, None, None) == gs.Settings(mode="host", row=None)
    with pytest.raises(ValueError, match="exclude each other"):
        gs.settings(True, True, None, None, None)
    with pytest.raises(ValueError, match="--in-image needs --row-json"):
        gs.settings(False, True, None, None, None)
    with pytest.raises(ValueError, match="no row expectations"):
        gs.settings(False, True, str(tmp_path / "nope.json"), None, None)


def test_settings_read_the_row_from_row_json_or_from_the_matrix_in_host_mode():
    image = gs.settings(False, True, str(_row_json(ROW_072)), None, None)
    assert image.mode == "image" and image.row.id == ROW_072
    assert image.row.pins["vllm"] == "0.7.2" and "vllm-external-launcher-local-rank" in image.row.patches
    host = gs.settings(True, False, None, ROW_FA, str(ROOT / "matrix.yaml"))
    assert host.row.id == ROW_FA and host.ships("flash-attn") is True
    assert image.ships("flash-attn") is False and gs.Settings(mode="host").ships("flash-attn") is None
    # the CPU smoke tests' --row alone (no --host) does not switch the GPU suite on or load anything
    assert gs.settings(False, False, None, ROW_FA, str(ROOT / "matrix.yaml")).row is None


def test_missing_package_skips_on_the_host_and_fails_in_the_image_when_pinned():
    row = gs.RowSpec.load(_row_json(ROW_072))
    gone = ModuleNotFoundError("No module named 'vllm'")
    broken = ImportError("undefined symbol: _ZN3c10")
    assert gs.missing(gs.Settings("host", row), "vllm", gone)[0] == "skip"
    assert gs.missing(gs.Settings("host"), "vllm", gone) == (
        "skip", "vllm is not importable in this Python (host mode): No module named 'vllm'")
    assert gs.missing(gs.Settings("host"), "vllm", broken)[0] == "fail"
    action, reason = gs.missing(gs.Settings("image", row), "vllm", gone)
    assert action == "fail" and "pins vllm==0.7.2" in reason and ROW_072 in reason
    assert gs.missing(gs.Settings("image", row), "flash-attn", gone) == ("skip", f"{ROW_072} does not ship flash-attn")
    assert gs.missing(gs.Settings("image", row), "flash-attn", broken)[0] == "fail"


def test_launcher_test_applies_only_to_rows_with_the_vllm_07_patches():
    assert gs.launcher_test_reason(gs.Settings("image", gs.RowSpec.load(_row_json(ROW_072))), "0.7.2") is None
    assert "carries no vLLM 0.7.x" in gs.launcher_test_reason(gs.Settings("image", gs.RowSpec.load(_row_json(ROW_FA))), "0.8.5")
    host = gs.Settings("host")
    assert gs.launcher_test_reason(host, "0.7.1") is None
    assert gs.launcher_test_reason(host, "0.7.2+cu124") is None
    assert "installed: vllm 0.7.3" in gs.launcher_test_reason(host, "0.7.3")
    assert gs.launcher_test_reason(host, "0.7.10") is not None


# --- kernels and precision ----------------------------------------------------------------------------------

TORCH_25_CU124 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


@pytest.mark.parametrize(("capability", "arch_list", "sass", "ptx"), [
    ((9, 0), TORCH_25_CU124, ["sm_90"], []),
    ((8, 9), TORCH_25_CU124, ["sm_80", "sm_86"], []),           # Ada runs Ampere machine code
    ((12, 0), TORCH_25_CU124, [], []),                           # Blackwell: sm_90 machine code does not run
    ((12, 0), ["sm_80", "sm_90", "compute_90"], [], ["compute_90"]),  # ... but PTX JITs forward
    ((10, 0), ["sm_90a", "compute_90a"], [], []),                # arch-specific code serves 9.0 alone
    ((9, 0), ["sm_90a"], ["sm_90a"], []),
    ((7, 0), ["sm_80", "sm_90", "compute_80"], [], []),          # PTX never JITs backwards
    ((10, 3), ["sm_100f"], ["sm_100f"], []),
])
def test_arch_coverage(capability, arch_list, sass, ptx):
    assert gs.coverage(capability, arch_list) == (sass, ptx)


def test_kernel_image_message_names_the_error_and_the_fix():
    msg = gs.kernel_image_message("NVIDIA B200", (10, 0), TORCH_25_CU124, "2.5.1+cu124", "12.4")
    assert msg.startswith("no kernel image is available for execution on the device")
    assert "sm_100" in msg and "2.5.1+cu124" in msg and "Fix: use a row whose torch/CUDA build includes sm_100" in msg


@pytest.mark.parametrize(("capability", "dtype"), [((7, 0), "float16"), ((7, 5), "float16"), ((8, 0), "bfloat16"),
                                                  ((8, 6), "bfloat16"), ((9, 0), "bfloat16"), ((12, 0), "bfloat16")])
def test_dtype_advice(capability, dtype):
    assert gs.dtype_advice(capability) == dtype


def test_result_lines_and_visible_devices(monkeypatch):
    assert gs.result_line('noise\nRESULT {"rank": 1}\nRESULT {"rank": 0}\n') == [{"rank": 1}, {"rank": 0}]
    # two ranks on one pipe: a result right after another rank's text, and a cut one that is left out
    interleaved = 'RESULT {"rank": 0, "a": {"b": 1}}RESULT {"rank": 1}\nW0 warningRESULT {"rank": 2}\nRESULT {"ra\n'
    assert gs.result_line(interleaved) == [{"rank": 0, "a": {"b": 1}}, {"rank": 1}, {"rank": 2}]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    assert gs.visible_devices(2) == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gs.visible_devices(2) == ["0", "1"]


def _fake_pip(calls: list, files: tuple[str, ...] = ("pytest/__init__.py",), code: int = 0):
    def run(cmd, **kwargs):
        calls.append(cmd)
        target = Path(cmd[cmd.index("--target") + 1])
        for name in files:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_text("")
        return subprocess.CompletedProcess(cmd, code, "", "ERROR: no index" if code else "")
    return run


def test_pytest_dir_installs_once_for_the_rows_python(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(smoke_gpu.subprocess, "run", _fake_pip(calls))
    first = smoke_gpu.pytest_dir("3.11", cache=tmp_path)
    assert first == tmp_path / "gpu-pytest" / f"py3.11-pytest{smoke_gpu.pytest_version()}"
    assert (first / "pytest" / "__init__.py").is_file()
    cmd = calls[0]
    assert cmd[cmd.index("--python-version") + 1] == "3.11" and "--only-binary=:all:" in cmd
    assert cmd[-1] == f"pytest=={smoke_gpu.pytest_version()}"
    assert smoke_gpu.pytest_dir("3.11", cache=tmp_path) == first and len(calls) == 1  # cached
    smoke_gpu.pytest_dir("3.10", cache=tmp_path)
    assert len(calls) == 2


def test_pytest_dir_refuses_compiled_files_and_reports_pip_failures(tmp_path, monkeypatch):
    monkeypatch.setattr(smoke_gpu.subprocess, "run", _fake_pip([], files=("pytest/__init__.py", "speedup/_c.so")))
    with pytest.raises(RuntimeFailure, match="compiled files.*speedup/_c.so"):
        smoke_gpu.pytest_dir("3.11", cache=tmp_path)
    monkeypatch.setattr(smoke_gpu.subprocess, "run", _fake_pip([], code=1))
    with pytest.raises(RuntimeFailure, match="(?s)cannot install pytest.*no index"):
        smoke_gpu.pytest_dir("3.11", cache=tmp_path)
    assert not list((tmp_path / "gpu-pytest").iterdir())  # nothing half-installed is left to be reused


def test_run_logs_the_command_and_reports_the_outcome(tmp_path, monkeypatch):
    m = matrix_mod.load(ROOT / "matrix.yaml")
    row = m.select([ROW_072])[0]
    seen = {}
    monkeypatch.setattr(smoke_gpu.docker, "cli", lambda: "/usr/bin/docker")
    monkeypatch.setattr(smoke_gpu, "pytest_dir", lambda python: seen.setdefault("python", python) and tmp_path)

    class FakePopen:  # docker run --gpus all, which this machine cannot do
        def __init__(self, cmd, **kw):
            self.stdout = iter(["11 passed\n"])

        def wait(self):
            return seen.get("rc", 0)

    monkeypatch.setattr(smoke_gpu.process.subprocess, "Popen", FakePopen)
    log = tmp_path / "logs" / "gpu.log"
    assert smoke_gpu.run(m, row, "img:tag", log) is True
    text = log.read_text()
    assert text.startswith("$ /usr/bin/docker run --rm --gpus all") and "11 passed" in text
    assert seen["python"] == "3.11" and f"{_row_json(ROW_072)}:/imagematrix/row.json:ro" in text
    seen["rc"] = 1
    assert smoke_gpu.run(m, row, "img:tag", log) is False


def test_run_needs_the_rendered_row(tmp_path, monkeypatch):
    monkeypatch.setattr(smoke_gpu.docker, "cli", lambda: pytest.fail("looked for docker before checking the row"))
    (tmp_path / "matrix.yaml").write_text((ROOT / "matrix.yaml").read_text())
    m = matrix_mod.load(tmp_path / "matrix.yaml")
    with pytest.raises(InputError, match="no rendered build context"):
        smoke_gpu.run(m, m.rows[0], "img", tmp_path / "log")


def test_row_json_is_the_rendered_one():
    m = matrix_mod.load(ROOT / "matrix.yaml")
    path = smoke_gpu.row_json(m, m.select([ROW_FA])[0])
    assert json.loads(path.read_text())["pins"]["flash-attn"] == "2.7.4.post1"


def test_generated_tokens_are_checked_against_count_and_vocabulary():
    model = GPU_DIR / "assets" / "tiny-llama"

    def ran(ids, rc=0):
        return gs.Ran(["python", "vllm_generate.py"], rc, "RESULT " + json.dumps({"token_ids": ids}) + "\n")

    assert gs.generated_tokens(ran([[1] * 8, [2] * 8]), model, "vLLM") == [[1] * 8, [2] * 8]
    for bad in (ran([[1] * 7, [2] * 8]), ran([[1] * 8, [5000] * 8]), ran([[1] * 8, [2] * 8], rc=1)):
        with pytest.raises(AssertionError):
            gs.generated_tokens(bad, model, "vLLM")
