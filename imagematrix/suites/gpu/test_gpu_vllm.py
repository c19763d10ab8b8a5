"""vLLM engine: a few tokens from the tiny model with random weights, eager and with CUDA graphs."""

from __future__ import annotations

import gpusmoke
import pytest

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "cuda-graphs"])
def test_vllm_engine_generates_from_the_tiny_model(torch, capability, need, run_python, tiny_model, report, eager):
    vllm = need("vllm")
    dtype = gpusmoke.dtype_advice(capability)
    args = [gpusmoke.SCRIPTS / "vllm_generate.py", "--model", tiny_model, "--dtype", dtype]
    ran = run_python(args + (["--eager"] if eager else []), timeout=900)
    mode = "eager" if eager else "CUDA graphs"
    token_ids = gpusmoke.generated_tokens(ran, tiny_model, f"vLLM {vllm.__version__} engine ({mode})")
    report(f"vLLM {vllm.__version__} ({mode}, dtype {dtype}): generated {token_ids}")
