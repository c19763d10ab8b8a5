"""verl trains: two GRPO steps of `python -m verl.trainer.main_ppo` with vLLM rollout on one GPU.

Run the way users run verl: Hydra overrides on the command line, hybrid engine (FSDP actor and reference plus the
vLLM rollout colocated on the GPU; FSDP's weights reach vLLM every step), rule reward (GSM8K `#### <answer>`).
The model is the committed tiny Llama config with random weights and the tiny tokenizer, the data a 16+4 row
GSM8K-style parquet, both made at test time by scripts/make_verl_inputs.py. The overrides are data
(assets/verl-train.json: a base list plus overlays per verl version), assembled by gpusmoke.train_overrides.

It passes when the trainer exits 0 and its console logger printed loss, score, response length and step time for
steps 1 and 2. The numbers go to the report and, when IMAGEMATRIX_GPU_RESULTS_DIR is set, to verl_train.json there.
IMAGEMATRIX_VERL_TRAIN_TIMEOUT (seconds, default 1200) bounds the trainer.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
import time
from pathlib import Path

import gpusmoke
import pytest

pytestmark = pytest.mark.gpu

RAY_CPUS = 8


def _attention(smoke: gpusmoke.Settings, need, capability: tuple[int, int]) -> str:
    """What the row's row.json says (rendered from knowledge/training.yaml): flash_attention_2 (flash-attn must then
    import), sdpa, or rollout only (skip: the row declares it and validate checked it). Without a row:
    flash_attention_2 where flash-attn imports, else sdpa. flash-attn 2 needs sm80+."""
    declared = smoke.row.training if smoke.row else {}
    if declared:
        attn = declared.get("attn_implementation")
        if attn is None:
            pytest.skip(f"row {smoke.row.id}: {declared.get('note')}")
        if attn == "flash_attention_2":
            need("flash-attn")
        return attn
    if capability < (8, 0):
        return "sdpa"
    try:
        import flash_attn  # noqa: F401
    except Exception:
        return "sdpa"
    return "flash_attention_2"


def _results_file(payload: dict, log: Path, name: str) -> Path | None:
    """<name>.json and a copy of the trainer's log (<name>.main_ppo.log) in $IMAGEMATRIX_GPU_RESULTS_DIR, when set."""
    folder = os.environ.get("IMAGEMATRIX_GPU_RESULTS_DIR")
    if not folder:
        return None
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    if log.is_file():
        shutil.copyfile(log, path.with_name("main_ppo.log" if name == "verl_train" else f"{name}.main_ppo.log"))
    return path


def test_verl_grpo_trains_two_steps_with_vllm_rollout(torch, capability, smoke, need, run_python, tiny_model,
                                                       report, tmp_path):
    _train(1, torch, capability, smoke, need, run_python, tiny_model, report, tmp_path)


@pytest.mark.multi_gpu
def test_verl_grpo_trains_on_two_gpus_with_tensor_parallel_rollout(torch, capability, smoke, need, run_python,
                                                                  tiny_model, report, tmp_path):
    """The same two steps with the FSDP actor sharded over 2 ranks and vLLM's rollout at tensor parallelism 2."""
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 or more GPUs; {torch.cuda.device_count()} visible")
    _train(2, torch, capability, smoke, need, run_python, tiny_model, report, tmp_path)


def _train(gpus: int, torch, capability, smoke, need, run_python, tiny_model, report, tmp_path) -> None:
    need("verl")
    vllm = need("vllm")
    need("transformers")
    if capability < (8, 0):
        pytest.skip(f"verl trains in bfloat16 (FSDP mixed precision, vLLM dtype), which needs sm80+; "
                    f"this GPU is sm_{capability[0]}{capability[1]}")
    version = importlib.metadata.version("verl")
    matches = gpusmoke.packaging_matcher()
    spec = gpusmoke.load_train_spec()
    attn = _attention(smoke, need, capability)
    blocker = gpusmoke.attention_blocker(spec, version, attn, matches)
    if blocker:
        action, reason = gpusmoke.not_runnable(smoke, f"{blocker} (row {smoke.row.id if smoke.row else 'unknown'})")
        (pytest.fail if action == "fail" else pytest.skip)(reason)

    # 1. Inputs: the tiny model with random weights, its tokenizer (with a chat template), the parquet files.
    made = run_python([gpusmoke.SCRIPTS / "make_verl_inputs.py", "--config-dir", tiny_model, "--out", tmp_path],
                      timeout=600)
    assert made.returncode == 0 and made.results, made.explain("making the tiny model and dataset failed")
    inputs = made.results[0]
    assert "model.safetensors" in inputs["files"], made.explain("no safetensors weights written")

    overrides = gpusmoke.train_overrides(
        spec, version, attn, {"model": inputs["model"], "train": inputs["train"], "val": inputs["val"],
                              "ray_cpus": RAY_CPUS}, matches=matches, gpus=gpus)
    assert not gpusmoke.duplicate_keys(overrides), gpusmoke.duplicate_keys(overrides)
    max_prompt = next(int(o.split("=", 1)[1]) for o in overrides if o.startswith("data.max_prompt_length="))
    assert inputs["max_prompt_tokens"] <= max_prompt, (
        f"a prompt has {inputs['max_prompt_tokens']} tokens, over data.max_prompt_length={max_prompt}")

    # 2. The trainer, as users start it; its output streams to a file (quoted on failure).
    timeout = float(os.environ.get("IMAGEMATRIX_VERL_TRAIN_TIMEOUT", "1200"))
    log = tmp_path / "main_ppo.log"
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1",
           "RAY_DEDUP_LOGS": "0", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false",
           "RAY_USAGE_STATS_ENABLED": "0"}
    started = time.monotonic()
    ran = gpusmoke.run_logged([sys.executable, "-m", "verl.trainer.main_ppo", *overrides], log, timeout,
                              env=env, cwd=tmp_path)
    wall = time.monotonic() - started
    steps = gpusmoke.step_metrics(ran.output)
    want = [int(s) for s in spec["steps"]]
    missing = gpusmoke.missing_metrics(steps, want, spec["require"])

    record = {name: {str(s): steps.get(s, {}).get(key) for s in want} for key, name in spec["record"].items()}
    payload = {"passed": ran.returncode == 0 and not missing, "returncode": ran.returncode, "wall_s": round(wall, 1),
               "verl": version, "vllm": vllm.__version__, "torch": torch.__version__, "attn_implementation": attn,
               "gpus": gpus,
               "row": smoke.row.id if smoke.row else None, "gpu": torch.cuda.get_device_name(0),
               "metrics": record, "missing": missing, "overrides": overrides, "log": str(log),
               "steps": {str(s): steps[s] for s in sorted(steps)}}
    written = _results_file(payload, log, "verl_train" if gpus == 1 else f"verl_train_{gpus}gpu")

    what = (f"verl {version} GRPO training (vLLM {vllm.__version__} rollout, {attn}"
            + (f", {gpus} GPUs, tensor parallel {gpus})" if gpus > 1 else ")"))
    assert ran.returncode == 0, ran.explain(f"{what}: main_ppo failed; full log: {log}")
    assert not missing, ran.explain(f"{what}: the console log lacks {', '.join(missing)}; full log: {log}")

    def fmt(name: str, step: int) -> str:
        value = record[name][str(step)]
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    per_step = "; ".join(
        f"step {s}: {fmt('step_s', s)} s, pg_loss {fmt('pg_loss', s)}, score {fmt('score_mean', s)}, "
        f"response length {fmt('response_length_mean', s)}" for s in want)
    report(f"{what}: 2 steps in {wall:.0f} s wall; {per_step}" + (f" -> {written}" if written else ""))
