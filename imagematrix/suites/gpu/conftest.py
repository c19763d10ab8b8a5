"""GPU smoke tests: does the image (or this Python) run on the GPU it is given?

    python -m pytest imagematrix/suites/gpu --host [--row ID | --row-json PATH] -v -rs   # this Python, on this GPU
    python build.py test --gpu --row ID                                                 # inside the row's image

Inside an image (`--in-image --row-json PATH`, set up by imagematrix/stages/smoke_gpu.py) a package the row pins that does not
import is a failure; in host mode a package that is not installed skips, saying so. Without --host or --in-image
every test here skips. This folder is mounted alone into images, which have no imagematrix and no testinfra:
this conftest uses only pytest, the standard library and gpusmoke.py.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import gpusmoke
import pytest

HERE = Path(__file__).resolve().parent
_REPORT: list[str] = []
_SETTINGS = pytest.StashKey[gpusmoke.Settings]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("imagematrix GPU smoke tests")
    group.addoption("--host", action="store_true", default=False,
                    help="run the GPU smoke tests against this Python (a missing package skips)")
    group.addoption("--in-image", action="store_true", default=False,
                    help="run the GPU smoke tests inside an image (a package the row pins must be there)")
    group.addoption("--row-json", default=None, metavar="PATH",
                    help="the row's rendered dockerfiles/generated/<row-id>/row.json (pins, patches)")
    group.addoption("--row", default=None, metavar="ID",
                    help="host mode: the row whose row.json to read, beside --matrix (instead of --row-json)")
    group.addoption("--matrix", default=None, metavar="PATH",
                    help="with --row: the matrix file whose dockerfiles/generated/ holds the row (default: ./matrix.yaml)")
    group.addoption("--vllm-advice", default=None, metavar="PATH",
                    help="known vLLM failures as JSON (vllm_advice.export(); default in host mode: the project's "
                         "knowledge/vllm-advice.yaml): a failing vLLM start names the fix")


def _option(config: pytest.Config, name: str) -> str | None:
    try:
        return config.getoption(name)
    except ValueError:  # an option this conftest did not declare (a plugin loaded without it)
        return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs one CUDA GPU (imagematrix/suites/gpu; run with --host or --in-image)")
    config.addinivalue_line("markers", "multi_gpu: needs two or more CUDA GPUs (imagematrix/suites/gpu)")
    try:
        config.stash[_SETTINGS] = gpusmoke.settings(
            host=bool(_option(config, "--host")), in_image=bool(_option(config, "--in-image")),
            row_json=_option(config, "--row-json"), row_id=_option(config, "--row"), matrix=_option(config, "--matrix"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.stash[_SETTINGS].mode is not None:
        gpusmoke.use_advice(gpusmoke.load_vllm_advice(_option(config, "--vllm-advice")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.stash[_SETTINGS].mode is not None:
        return
    skip = pytest.mark.skip(reason="GPU smoke tests run only with --host (this Python) or --in-image "
                                   "(inside an image: `build.py test --gpu`)")
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _REPORT:
        terminalreporter.section("imagematrix GPU report")
        for line in _REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def smoke(pytestconfig: pytest.Config) -> gpusmoke.Settings:
    return pytestconfig.stash[_SETTINGS]


@pytest.fixture(scope="session")
def report() -> Callable[[str], None]:
    """Add a line to the 'imagematrix GPU report' section printed at the end of the run."""

    def add(line: str) -> None:
        if line not in _REPORT:
            _REPORT.append(line)

    return add


@pytest.fixture(scope="session")
def need(smoke: gpusmoke.Settings) -> Callable[[str], ModuleType]:
    """need(dist) imports the distribution's module, or skips / fails as gpusmoke.missing decides."""

    def _need(dist: str) -> ModuleType:
        try:
            return importlib.import_module(gpusmoke.MODULES.get(dist, dist))
        except Exception as exc:  # a broken import is an outcome too, not a crash of the suite
            action, reason = gpusmoke.missing(smoke, dist, exc)
            if action == "fail":
                pytest.fail(reason)
            pytest.skip(reason)

    return _need


@pytest.fixture(scope="session")
def torch(need, smoke: gpusmoke.Settings, report) -> ModuleType:
    """torch, with at least one CUDA device visible (host mode: else skip; in an image: else fail)."""
    torch = need("torch")
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        where = (f"torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no CUDA device; "
                 f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}")
        if smoke.mode == gpusmoke.IMAGE:
            pytest.fail(f"{where}: start the container with `--gpus all` on a machine with an NVIDIA driver "
                        f"and the NVIDIA container toolkit")
        pytest.skip(where)
    report(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s); {gpusmoke.versions()}")
    return torch


@pytest.fixture(scope="session")
def capability(torch) -> tuple[int, int]:
    """Compute capability of device 0 (also what a failure's known-fix advice is matched against)."""
    capability = tuple(torch.cuda.get_device_capability(0))
    gpusmoke.use_advice(capability=capability)
    return capability


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return gpusmoke.TINY_MODEL


@pytest.fixture(scope="session")
def run_python() -> Callable[..., gpusmoke.Ran]:
    """run_python(args, timeout=600, env=None) runs this Python in a fresh process and returns a gpusmoke.Ran."""

    def run(args: list, timeout: float = 600, env: dict[str, str] | None = None) -> gpusmoke.Ran:
        return gpusmoke.finish(gpusmoke.start(args, env), timeout)

    return run
