"""Make the inputs of the verl training smoke test; print `RESULT {json}`.

    python make_verl_inputs.py --config-dir assets/tiny-llama --out DIR [--train 16 --val 4]

DIR/model: a LlamaForCausalLM with random weights (AutoModelForCausalLM.from_config on the committed tiny config,
seed 0) saved as safetensors, the tiny tokenizer beside it, given gpusmoke.CHAT_TEMPLATE when it has no chat
template (verl applies the tokenizer's chat template to each prompt). DIR/train.parquet, DIR/val.parquet:
GSM8K-style rows from gpusmoke.verl_dataset_rows. Run by test_gpu_verl_train.py in its own process (so the test
process does not import torch and transformers next to the trainer's); CPU only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # gpusmoke.py
import gpusmoke  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-dir", type=Path, default=gpusmoke.TINY_MODEL)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", type=int, default=16)
    parser.add_argument("--val", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import pandas as pd
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    model_dir = args.out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    config = AutoConfig.from_pretrained(str(args.config_dir))
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(str(model_dir))  # safetensors: the default of every transformers the matrix ships

    tokenizer = AutoTokenizer.from_pretrained(str(args.config_dir))
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = gpusmoke.CHAT_TEMPLATE
    tokenizer.save_pretrained(str(model_dir))

    lengths = []
    for split, count in (("train", args.train), ("val", args.val)):
        rows = gpusmoke.verl_dataset_rows(split, count)
        pd.DataFrame(rows).to_parquet(str(args.out / f"{split}.parquet"))
        for row in rows:
            ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
                ids = ids["input_ids"]
            lengths.append(len(ids))

    result = {"model": str(model_dir), "train": str(args.out / "train.parquet"), "val": str(args.out / "val.parquet"),
              "files": sorted(os.listdir(model_dir)), "params": sum(p.numel() for p in model.parameters()),
              "max_prompt_tokens": max(lengths), "chat_template": tokenizer.chat_template == gpusmoke.CHAT_TEMPLATE}
    sys.stdout.flush()
    print(f"RESULT {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
