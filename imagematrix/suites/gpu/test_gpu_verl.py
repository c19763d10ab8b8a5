"""verl: imports, and the pieces of its vLLM rollout path come together on the GPU."""

from __future__ import annotations

import importlib
import inspect

import pytest

pytestmark = pytest.mark.gpu


# Where verl keeps the class that drives vLLM for a rollout, oldest layout first: the package's vLLMRollout
# (0.3-0.4), the same class in its spmd module (0.5-0.8), and the async server's ServerAdapter (0.9: vLLM runs as a
# server and the adapter feeds it). Each has generate_sequences(DataProto) -> DataProto.
ROLLOUT_CLASSES = (("", "vLLMRollout"), (".vllm_rollout_spmd", "vLLMRollout"), (".vllm_rollout", "ServerAdapter"))


def _rollout_class(module):
    """The rollout class the installed verl has (see ROLLOUT_CLASSES), or None."""
    for suffix, name in ROLLOUT_CLASSES:
        try:
            found = getattr(importlib.import_module(module.__name__ + suffix), name, None)
        except ModuleNotFoundError:
            continue
        if found is not None:
            return found
    return None


def test_verl_vllm_rollout_path(torch, need, tiny_model, report):
    verl = need("verl")
    need("vllm")
    transformers = need("transformers")
    rollout = importlib.import_module("verl.workers.rollout.vllm_rollout")  # imports vLLM and verl's glue for it
    cls = _rollout_class(rollout)
    assert inspect.isclass(cls) and callable(getattr(cls, "generate_sequences", None)), (
        f"verl {verl.__version__}: none of {ROLLOUT_CLASSES} with generate_sequences in {rollout.__name__}")

    # The smallest object of that path: the batch of prompts vLLMRollout.generate_sequences consumes, made
    # from the tiny tokenizer as verl's trainer makes it (left-padded ids, mask, positions; tensordict inside).
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_model), padding_side="left")
    enc = tokenizer(["The matrix pins", "Smoke tests for one image"], return_tensors="pt", padding=True)
    mask = enc["attention_mask"].cuda()
    batch = verl.DataProto.from_dict(
        tensors={"input_ids": enc["input_ids"].cuda(), "attention_mask": mask,
                 "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)},
        meta_info={"eos_token_id": tokenizer.eos_token_id, "do_sample": False})
    assert len(batch) == 2
    assert batch.batch["input_ids"].device.type == "cuda"
    assert batch.batch["input_ids"][0, 0].item() == tokenizer.pad_token_id  # the shorter prompt is left-padded
    report(f"verl {verl.__version__}: {cls.__module__}.{cls.__name__}, prompt batch {tuple(batch.batch['input_ids'].shape)}")
