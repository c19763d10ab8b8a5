"""vLLM engine: a few tokens from the tiny model with random weights, eager and with CUDA graphs."""

from __future__ import annotations

import json

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
    assert ran.returncode == 0 and ran.results, ran.explain(f"vLLM {vllm.__version__} engine ({mode}) failed")
    token_ids = ran.results[0]["token_ids"]
    vocab = json.loads((tiny_model / "config.json").read_text())["vocab_size"]
    assert [len(ids) for ids in token_ids] == [8, 8], ran.explain("expected 8 tokens per prompt")
    assert all(0 <= t < vocab for ids in token_ids for t in ids), ran.explain("token ids outside the vocabulary")
    report(f"vLLM {vllm.__version__} ({mode}, dtype {dtype}): generated {token_ids}")
