"""Make the tiny model the GPU smoke tests run vLLM on: a BPE tokenizer trained here plus a small Llama config.

    python imagematrix/suites/gpu/assets/make_tiny_model.py            # rewrite imagematrix/suites/gpu/assets/tiny-llama/
    python imagematrix/suites/gpu/assets/make_tiny_model.py --check    # exit 1 when the committed files differ

No weights: vLLM fills the model with random values (`load_format="dummy"`), so nothing is downloaded. The
tokenizer is a byte-level BPE (vocabulary 1024) trained with the `tokenizers` package on corpus.txt, a frozen copy
of the project's README; training is deterministic. The trained vocabulary and merges are written into a fixed
tokenizer.json layout (merges as "a b" strings), so the files depend on the training result only and load with
every `tokenizers` the matrix ships (0.21 and later). tests/unit/suites/test_gpu_assets.py checks the committed files
against this script.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus.txt"
OUT = HERE / "tiny-llama"
VOCAB_SIZE = 1024
EOS = "<|endoftext|>"

# Two layers, hidden 256, 4 query heads of 64 (2 KV heads): head size 64 is one every attention backend of vLLM
# 0.7-0.24 and flash-attn 2 take.
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0,
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
    "use_cache": True,
    "torch_dtype": "bfloat16",
}

BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def train(text: str) -> tuple[dict[str, int], list[str]]:
    """Vocabulary (token -> id) and merges ("a b") of a byte-level BPE trained on `text`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(text.splitlines(), trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def tokenizer_json(vocab: dict[str, int], merges: list[str]) -> dict:
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": vocab[EOS], "content": EOS, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": BYTE_LEVEL,
        "post_processor": {**BYTE_LEVEL, "trim_offsets": False},
        "decoder": BYTE_LEVEL,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": dict(sorted(vocab.items(), key=lambda kv: kv[1])), "merges": merges},
    }


def _dump(data: dict) -> bytes:
    return (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode()


def build_files(corpus: str | None = None) -> dict[str, bytes]:
    """File name -> content of the tiny model directory."""
    vocab, merges = train(CORPUS.read_text(encoding="utf-8") if corpus is None else corpus)
    eos_id = vocab[EOS]
    config = {**CONFIG, "vocab_size": len(vocab), "bos_token_id": eos_id, "eos_token_id": eos_id}
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": CONFIG["max_position_embeddings"],
                        "bos_token": EOS, "eos_token": EOS, "pad_token": EOS, "unk_token": None,
                        "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False}
    return {
        "config.json": _dump(config),
        "generation_config.json": _dump({"bos_token_id": eos_id, "eos_token_id": eos_id}),
        "tokenizer.json": _dump(tokenizer_json(vocab, merges)),
        "tokenizer_config.json": _dump(tokenizer_config),
        "special_tokens_map.json": _dump({"bos_token": EOS, "eos_token": EOS, "pad_token": EOS}),
    }


def drift(files: dict[str, bytes], out: Path = OUT) -> list[str]:
    """Names of files that differ between `files` and the directory `out` (missing and extra ones included)."""
    present = {p.name for p in out.iterdir() if p.is_file()} if out.is_dir() else set()
    return sorted(n for n in present | set(files) if n not in files or n not in present
                  or (out / n).read_bytes() != files[n])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing")
    args = parser.parse_args(argv)
    files = build_files()
    if args.check:
        changed = drift(files, args.out)
        if changed:
            print(f"{args.out}: out of date ({', '.join(changed)}); run {Path(__file__).name} without --check",
                  file=sys.stderr)
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in drift(files, args.out):
        if stale not in files:
            (args.out / stale).unlink()
    for name, data in files.items():
        (args.out / name).write_bytes(data)
    print(f"wrote {len(files)} files to {args.out} (vocabulary {json.loads(files['config.json'])['vocab_size']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
