"""CPU tests of the verl training smoke test's helpers (gpusmoke.py, assets/verl-train.json): overlays per verl
version, override assembly, console metric parsing, dataset rows. The GPU run itself is imagematrix/suites/gpu/test_gpu_verl_train.py.

"""

from __future__ import annotations

import json
import sys

import pytest

from imagematrix.model import paths

GPU_DIR = paths.SUITES / "gpu"
sys.path.insert(0, str(GPU_DIR))
import gpusmoke  # noqa: E402

SPEC = gpusmoke.load_train_spec(GPU_DIR / "assets" / "verl-train.json")
VALUES = {"model": "/m", "train": "/d/train.parquet", "val": "/d/val.parquet", "ray_cpus": 8}
# The verl versions of the matrix rows (matrix.yaml); 0.9.1 is the one run on a GPU.
VERSIONS = ["0.3.0.post1", "0.4.1", "0.5.0", "0.6.1", "0.8.0", "0.9.1"]

# A console line in verl's format (utils/logger/aggregate_logger.py, concat_dict_to_str: `step:N - k:pformat(v)`),
# as Ray prints it from the TaskRunner actor: a coloured `(TaskRunnerV1 pid=...)` prefix, numpy 2 scalar reprs.
SAMPLE = ("\x1b[36m(TaskRunnerV1 pid=21815)\x1b[0m step:1 - actor/pg_loss:np.float64(-0.0123) - "
          "actor/kl_loss:0.0 - critic/score/mean:np.float32(0.25) - response_length/mean:31.5 - "
          "timing_s/step:12.873 - training/global_step:1 - training/epoch:0 - perf/mfu/actor:nan - flag:True")


def _matchers():
    out = [gpusmoke.simple_matcher]
    try:
        import packaging  # noqa: F401
        out.append(gpusmoke.packaging_matcher())
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("matches", _matchers())
@pytest.mark.parametrize(("version", "spec", "want"), [
    ("0.9.1", ">=0.9", True), ("0.8.0", ">=0.9", False), ("0.3.0.post1", "<0.4", True),
    ("0.3.0.post1", ">0.3.0", False), ("0.3.0.post1", ">=0.3.0", True), ("0.4.1", ">=0.4,<0.6", True), ("0.6.1", ">=0.4,<0.6", False),
    ("0.9.1", "", True), ("0.9.1", "==0.9.*", True), ("0.10.0", "==0.9.*", False), ("0.10.0rc1", ">=0.10", False),
])
def test_version_matchers_agree(matches, version, spec, want):
    assert matches(version, spec) is want


def test_simple_matcher_rejects_what_it_cannot_read():
    with pytest.raises(ValueError):
        gpusmoke.simple_matcher("0.9.1", "^0.9")


@pytest.mark.parametrize(("version", "want"), [
    ("0.3.0.post1", {"<0.4"}),
    ("0.4.1", {">=0.4,<0.6"}),
    ("0.5.0", {">=0.4,<0.6", ">=0.5"}),
    ("0.6.1", {">=0.6", ">=0.5"}),
    ("0.8.0", {">=0.6", ">=0.5", ">=0.8"}),
    ("0.9.1", {">=0.6", ">=0.5", ">=0.9", ">=0.8"}),
])
def test_overlays_selected_per_version(version, want):
    chosen = gpusmoke.selected_overlays(SPEC, version, "flash_attention_2")
    assert {o["verl"] for o in chosen} == want
    sdpa = gpusmoke.selected_overlays(SPEC, version, "sdpa")
    assert len(sdpa) - len(chosen) == (1 if version >= "0.6" else 0)  # the attn overlay only from 0.6


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("attn", ["sdpa", "flash_attention_2"])
def test_overrides_have_no_duplicate_keys_and_no_placeholders(version, attn):
    overrides = gpusmoke.train_overrides(SPEC, version, attn, VALUES)
    assert gpusmoke.duplicate_keys(overrides) == []
    assert not [o for o in overrides if "{" in o.replace("${", "")]
    keys = [gpusmoke.override_key(o) for o in overrides]
    assert "actor_rollout_ref.rollout.load_format" in keys and "trainer.total_training_steps" in keys


def test_overrides_for_verl_0_9_1_exactly():
    overrides = gpusmoke.train_overrides(SPEC, "0.9.1", "sdpa", VALUES)
    assert overrides[:2] == ["algorithm.adv_estimator=grpo", "data.train_files=/d/train.parquet"]
    for must in ["actor_rollout_ref.model.path=/m", "actor_rollout_ref.rollout.name=vllm",
                 "actor_rollout_ref.rollout.load_format=dummy", "actor_rollout_ref.rollout.n=2",
                 "actor_rollout_ref.rollout.tensor_model_parallel_size=1", "trainer.logger=['console']",
                 "trainer.val_before_train=False", "trainer.total_training_steps=2", "trainer.n_gpus_per_node=1",
                 "ray_kwargs.ray_init.num_cpus=8", "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
                 "transfer_queue.backend.SimpleStorage.num_data_storage_units=1", "reward.num_workers=2"]:
        assert must in overrides, must
    assert not any("dummy_dtensor" in o or o.startswith("ray_init.") for o in overrides)
    fa2 = gpusmoke.train_overrides(SPEC, "0.9.1", "flash_attention_2", VALUES)
    assert not any("attn_implementation" in o for o in fa2)
    # batch sizes verl checks: train_batch_size * n divisible by GPUs; mini batch divides the batch
    get = {gpusmoke.override_key(o): o.split("=", 1)[1] for o in overrides}
    assert int(get["data.train_batch_size"]) % int(get["actor_rollout_ref.actor.ppo_mini_batch_size"]) == 0
    assert (int(get["actor_rollout_ref.actor.ppo_mini_batch_size"]) * int(get["actor_rollout_ref.rollout.n"])
            % int(get["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"]) == 0)


def test_old_verl_has_its_own_keys():
    v03 = gpusmoke.train_overrides(SPEC, "0.3.0.post1", "flash_attention_2", VALUES)
    assert "+trainer.val_before_train=False" in v03 and "actor_rollout_ref.rollout.load_format=dummy_dtensor" in v03
    assert not any(o.startswith(("ray_init.", "ray_kwargs.")) for o in v03)
    v04 = gpusmoke.train_overrides(SPEC, "0.4.1", "flash_attention_2", VALUES)
    assert "ray_init.num_cpus=8" in v04


def test_overlay_add_replaces_in_place_and_remove_drops():
    spec = {"base": ["a=1", "b=2", "+c.d=3"],
            "overlays": [{"verl": ">=1", "add": ["b=20", "e=5"], "remove": ["c.d"]},
                         {"verl": "<1", "add": ["never=1"]},
                         {"verl": ">=1", "attn": "sdpa", "add": ["+f={x}"]}]}
    assert gpusmoke.train_overrides(spec, "1.0", "fa", {}) == ["a=1", "b=20", "e=5"]
    assert gpusmoke.train_overrides(spec, "1.0", "sdpa", {"x": "y"}) == ["a=1", "b=20", "e=5", "+f=y"]
    with pytest.raises(ValueError, match="placeholder"):
        gpusmoke.train_overrides(spec, "1.0", "sdpa", {})


@pytest.mark.parametrize(("override", "key"), [
    ("a.b=1", "a.b"), ("+a.b=1", "a.b"), ("++a.b=1", "a.b"), ("~a.b", "a.b"), ("trainer.logger=['console']", "trainer.logger"),
])
def test_override_key(override, key):
    assert gpusmoke.override_key(override) == key


def test_duplicate_keys():
    assert gpusmoke.duplicate_keys(["a=1", "+a=2", "b=1", "a=3"]) == ["a"]


@pytest.mark.parametrize(("version", "attn", "blocked"), [
    ("0.3.0.post1", "sdpa", True), ("0.5.0", "sdpa", True), ("0.6.1", "sdpa", False), ("0.9.1", "sdpa", False),
    ("0.3.0.post1", "flash_attention_2", False),
])
def test_attention_blocker(version, attn, blocked):
    reason = gpusmoke.attention_blocker(SPEC, version, attn)
    assert (reason is not None) is blocked
    if blocked:
        assert "flash-attn" in reason and version in reason


def test_not_runnable_fails_in_an_image_and_skips_on_a_host():
    assert gpusmoke.not_runnable(gpusmoke.Settings(mode=gpusmoke.IMAGE), "r") == ("fail", "r")
    assert gpusmoke.not_runnable(gpusmoke.Settings(mode=gpusmoke.HOST), "r") == ("skip", "r")


def test_step_metrics_reads_verl_console_lines():
    old = "step:2 - actor/pg_loss:0.001 - critic/score/mean:0.000 - response_length/mean:32.000 - timing_s/step:3.210"
    noise = "(TaskRunnerV1 pid=1) Training Progress:  50%|#####     | 1/2\nstep:not-a-step\nepoch:1 - x:1"
    steps = gpusmoke.step_metrics("\n".join([noise, SAMPLE, old]))
    assert sorted(steps) == [1, 2]
    one = steps[1]
    assert one["actor/pg_loss"] == pytest.approx(-0.0123)
    assert one["critic/score/mean"] == pytest.approx(0.25)
    assert one["response_length/mean"] == 31.5 and one["timing_s/step"] == pytest.approx(12.873)
    assert one["training/global_step"] == 1.0 and one["flag"] == 1.0
    assert one["perf/mfu/actor"] != one["perf/mfu/actor"]  # nan
    assert steps[2]["timing_s/step"] == pytest.approx(3.21)
    assert gpusmoke.missing_metrics(steps, [1, 2], SPEC["require"]) == []
    assert gpusmoke.missing_metrics(steps, [1, 2, 3], ["actor/pg_loss", "nope"]) == [
        "step 1: nope", "step 2: nope", "step 3"]


def test_step_metrics_merges_lines_of_one_step():
    steps = gpusmoke.step_metrics("step:1 - a:1\nstep:1 - b:np.int64(2)")
    assert steps == {1: {"a": 1.0, "b": 2.0}}


def test_verl_dataset_rows_are_gsm8k_style():
    train, val = gpusmoke.verl_dataset_rows("train", 16), gpusmoke.verl_dataset_rows("val", 4)
    assert len(train) == 16 and len(val) == 4
    for split, rows in (("train", train), ("val", val)):
        for i, row in enumerate(rows):
            assert row["data_source"] == "openai/gsm8k"  # verl's default_compute_score name for GSM8K
            assert row["reward_model"] == {"style": "rule", "ground_truth": "42"}
            assert row["extra_info"] == {"split": split, "index": i}
            [message] = row["prompt"]
            assert message["role"] == "user" and "####" in message["content"]
            a, b = (int(x) for x in message["content"].split("?")[0].removeprefix("What is ").split(" + "))
            assert a + b == 42 and a > 0 and b > 0
    json.dumps(train)  # plain data: pandas writes it to parquet as is


def test_chat_template_renders_roles():
    template = gpusmoke.CHAT_TEMPLATE
    assert "add_generation_prompt" in template and "message['role']" in template


def test_spec_is_well_formed():
    assert SPEC["steps"] == [1, 2]
    assert {"actor/pg_loss", "critic/score/mean", "response_length/mean", "timing_s/step"} <= set(SPEC["require"])
    for overlay in SPEC["overlays"]:
        assert set(overlay) <= {"verl", "attn", "multi_gpu", "add", "remove", "note"} and overlay["note"]
        gpusmoke.simple_matcher("0.9.1", overlay["verl"])  # readable without packaging


def test_two_gpus_shard_fsdp_and_split_the_rollout_by_tensor_parallelism():
    """The multi_gpu training test's overrides (issue: 2 ranks, vLLM tensor parallel 2); composed and validated
    with verl 0.9.1's own validate_config on CPU when written."""
    one = gpusmoke.train_overrides(SPEC, "0.9.1", "sdpa", VALUES)
    two = gpusmoke.train_overrides(SPEC, "0.9.1", "sdpa", VALUES, gpus=2)
    assert "trainer.n_gpus_per_node=1" in one and "actor_rollout_ref.rollout.tensor_model_parallel_size=1" in one
    assert "trainer.n_gpus_per_node=2" in two and "actor_rollout_ref.rollout.tensor_model_parallel_size=2" in two
    assert not gpusmoke.duplicate_keys(two)
    assert [o for o in one if "gpus_per_node" not in o and "tensor_model_parallel" not in o] == \
        [o for o in two if "gpus_per_node" not in o and "tensor_model_parallel" not in o]
