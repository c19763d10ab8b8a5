"""The tiny model of the GPU smoke tests: committed files equal what its script makes, and transformers loads them."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from imagematrix.model import paths

ASSETS = paths.SUITES / "gpu" / "assets"
MODEL = ASSETS / "tiny-llama"


def _script():
    spec = importlib.util.spec_from_file_location("make_tiny_model", ASSETS / "make_tiny_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_committed_assets_are_what_the_script_makes():
    pytest.importorskip("tokenizers", reason="the tokenizer is trained with the `tokenizers` package")
    script = _script()
    files = script.build_files()
    assert script.drift(files, MODEL) == [], "run: python imagematrix/suites/gpu/assets/make_tiny_model.py"
    assert script.main(["--check"]) == 0


def test_drift_is_detected(tmp_path):
    pytest.importorskip("tokenizers", reason="the tokenizer is trained with the `tokenizers` package")
    script = _script()
    files = script.build_files("the matrix pins known-good combinations of verl and vLLM\n" * 50)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert script.drift(files, tmp_path) == []
    (tmp_path / "config.json").write_bytes(files["config.json"].replace(b'"num_hidden_layers": 2', b'"num_hidden_layers": 3'))
    (tmp_path / "stale.txt").write_text("x")
    assert script.drift(files, tmp_path) == ["config.json", "stale.txt"]
    assert script.main(["--check", "--out", str(tmp_path)]) == 1


def test_assets_are_small_and_consistent():
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total < 256 * 1024, f"imagematrix/suites/gpu/assets holds {total} bytes"
    config = json.loads((MODEL / "config.json").read_text())
    tokenizer = json.loads((MODEL / "tokenizer.json").read_text())
    assert config["vocab_size"] == len(tokenizer["model"]["vocab"]) == 1024
    assert config["hidden_size"] // config["num_attention_heads"] == config["head_dim"] == 64
    assert sorted(tokenizer["model"]["vocab"].values()) == list(range(1024))
    eos = tokenizer["added_tokens"][0]
    assert eos["special"] and config["eos_token_id"] == tokenizer["model"]["vocab"][eos["content"]]


def test_transformers_loads_the_tokenizer_and_config():
    transformers = pytest.importorskip("transformers", reason="transformers is not installed here")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(MODEL))
    config = transformers.AutoConfig.from_pretrained(str(MODEL))
    assert config.model_type == "llama" and config.vocab_size == len(tokenizer) == 1024
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == config.eos_token_id
    text = "Smoke tests for one image: every pin is the installed version."
    ids = tokenizer(text)["input_ids"]
    assert len(ids) < len(text) / 2  # trained merges, not bytes
    assert tokenizer.decode(ids) == text
