"""Compatibility rules (knowledge/rules.yaml): each rule fails a bad row and passes a good one.

Rows are built through the real matrix loader. The index is not used here: Requires-Python and verl's
Requires-Dist are stubbed with values read from PyPI (tests marked `network` check those against the index).
"""

from __future__ import annotations

import pytest

from imagematrix import rules
from imagematrix.knowledge import envdefaults, requires_python, verl
from imagematrix.model import matrix, paths
from imagematrix.model.errors import InputError
from imagematrix.model.lockfile import LockEntry
from imagematrix.rules import pin_requires
from imagematrix.tools import pypi

HEAD = 'defaults:\n  python: "3.11"\n  base: debootstrap:bookworm\nrows:\n'
HEAD_313 = 'defaults:\n  python: "3.13"\n  base: debootstrap:trixie\nrows:\n'
OVERRIDE_05 = {"vllm": ("0.10.0", "verl publishes 0.5.0 with vLLM 0.10.0")}
# rollout_only: these rows stand for images of every verl, most without flash-attn (rule verl-training-flash-attn)
GOOD = dict(verl="0.3.0.post1", vllm="0.7.2", torch="2.5.1", cuda="12.4", flash_attn=None, tensordict="0.6.2",
            transformers="4.49.0", rollout_only="built to test the rules, not to train")

# Requires-Dist of the verl wheels on PyPI (the lines that matter here), read 2026-11.
VERL_REQUIRES = {
    "0.3.0.post1": ["ray[default]>=2.10", "tensordict<=0.6.2", "transformers", 'flash-attn; extra == "gpu"',
                    'tensordict<=0.6.2; extra == "vllm"', 'vllm<=0.8.2; extra == "vllm"'],
    "0.4.1": ["ray[default]>=2.41.0", "tensordict<=0.6.2", "transformers", 'torch==2.6.0; extra == "sglang"',
              'tensordict<=0.6.2; extra == "vllm"', 'vllm<=0.8.5; extra == "vllm"'],
    "0.5.0": ["ray[default]>=2.41.0", "tensordict!=0.9.0,<=0.9.1,>=0.8.0", "transformers",
              'torch==2.6.0; extra == "sglang"', 'vllm<=0.8.5,>=0.7.3; extra == "vllm"'],
    "0.6.1": ["ray[default]>=2.41.0", "tensordict!=0.9.0,<=0.10.0,>=0.8.0", "transformers",
              'vllm<=0.11.0,>=0.8.5; extra == "vllm"', 'torch==2.8.0; extra == "sglang"'],
    "0.7.1": ["ray[default]>=2.41.0", "tensordict!=0.9.0,<=0.10.0,>=0.8.0", "transformers",
              'tensordict!=0.9.0,<=0.10.0,>=0.8.0; extra == "vllm"', 'vllm<=0.12.0,>=0.8.5; extra == "vllm"',
              'torch==2.9.1; extra == "sglang"'],
    "0.8.0": ["ray[default]>=2.41.0", "tensordict!=0.9.0,<=0.10.0,>=0.8.0", "transformers",
              'vllm<=0.12.0,>=0.8.5; extra == "vllm"', 'torch==2.9.1; extra == "sglang"'],
    "0.9.1": ["ray[default]>=2.41.0", "tensordict!=0.9.0,<=0.10.0,>=0.8.0", "transformers!=5.6.0,<5.11,>=5.5.3",
              'tensordict!=0.9.0,<=0.10.0,>=0.8.0; extra == "verl-core"', 'verl[verl-core]; extra == "vllm"',
              'torch==2.11.0; extra == "vllm"', 'vllm==0.24.0; extra == "vllm"', 'transformers==5.9.0; extra == "vllm"',
              'torch==2.11.0; extra == "sglang"'],
}
REQUIRES_PYTHON = {("verl", "0.9.1"): "<3.13,>=3.10", ("vllm", "0.10.0"): "<3.13,>=3.9"}


# Requires-Dist of the vLLM wheels on PyPI (the lines the vllm-declared-floors rule reads), read 2026-11.
VLLM_REQUIRES = {
    "0.7.2": ["transformers>=4.48.2", "tokenizers>=0.19.1", "torch==2.5.1"],
    "0.8.5": ["transformers>=4.51.1", "tokenizers>=0.21.1", "torch==2.6.0"],
    "0.8.5.post1": ["transformers>=4.51.1", "tokenizers>=0.21.1", "torch==2.6.0"],
    "0.10.0": ["transformers>=4.53.2", "tokenizers>=0.21.1", "torch==2.7.1", 'pytest; extra == "bench"'],
}


@pytest.fixture(autouse=True)
def offline_index(monkeypatch):
    monkeypatch.setattr(verl, "requires_dist", lambda version: tuple(VERL_REQUIRES[version]))
    monkeypatch.setattr(pin_requires, "requires_dist",
                        lambda package, version: tuple(VLLM_REQUIRES.get(version, [])) if package == "vllm" else ())
    monkeypatch.setattr(pypi, "requires_python", lambda package, version: REQUIRES_PYTHON.get((package, version), ">=3.9"))


def row_text(env: dict | None = None, overrides: dict | None = None, extras: dict | None = None,
             verl_extras: list[str] | None = None, **pins) -> str:
    fields = {**GOOD, **pins}
    lines = []
    for key, value in fields.items():
        lines.append(f"{'  - ' if not lines else '    '}{key}: " + ("null" if value is None else f'"{value}"'))
    if verl_extras:
        lines.append(f"    verl_extras: [{', '.join(verl_extras)}]")
    for name, mapping in (("env", env), ("extras", extras)):
        if mapping:
            lines.append(f"    {name}:")
            lines += [f'      {k}: "{v}"' for k, v in mapping.items()]
    if overrides:
        lines.append("    overrides:")
        for package, (version, reason) in overrides.items():
            lines += [f"      {package}:", f'        version: "{version}"', f"        reason: {reason}"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def make_row(write_matrix):
    def _make(head: str = HEAD, **kw) -> matrix.Row:
        return matrix.load(write_matrix(head + row_text(**kw))).rows[0]

    return _make


def results_of(row, rule, resolution=None):
    out = [r for r in rules.evaluate(row, resolution) if r.rule == rule]
    assert out, f"rule {rule} produced no result"
    return out


def status(row, rule, resolution=None) -> str:
    statuses = {r.status for r in results_of(row, rule, resolution)}
    for worst in ("failed", "warned", "passed", "n/a"):
        if worst in statuses:
            return worst
    raise AssertionError(statuses)


def failure(row, rule, resolution=None) -> rules.RuleResult:
    failed = [r for r in results_of(row, rule, resolution) if r.failed]
    assert failed, results_of(row, rule, resolution)
    return failed[0]


# --- the data -----------------------------------------------------------------------------------------------


def test_rules_data_loads_with_the_issue_list():
    ids = {r.id for r in rules.load().rules}
    assert ids == {"tensordict-forkingpickler", "vllm-transformers-5", "flash-attn-prebuilt-wheel", "vllm-env-knobs",
                   "verl-declared-ranges", "python-requires", "pyarrow-26-numpy-1", "verl-training-flash-attn",
                   "vllm-0.20-deepgemm-cp312", "vllm-declared-floors", "verl-transformers-5"}
    for rule in rules.load().rules:
        assert rule.symptom and rule.fix and rule.source


def test_every_rule_has_a_bad_and_a_good_case_below():
    covered = {case[0] for case in CASES}
    assert covered == {r.id for r in rules.load().rules}


def test_invalid_rules_data_is_an_input_error_with_its_line(tmp_path):
    text = paths.RULES.read_text().replace("severity: fail", "severity: fatal", 1)
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        rules.load(path)
    assert info.value.where == f"{path}:{text.splitlines().index('    severity: fatal') + 1}"
    assert "rules.0.severity" in info.value.message


# --- one bad and one good row per rule ------------------------------------------------------------------------

CASES = [
    # (rule, bad row, good row)
    ("tensordict-forkingpickler",
     dict(verl="0.4.1", vllm="0.8.5", torch="2.6.0", tensordict="0.5.0", transformers="4.51.3"),
     dict(verl="0.4.1", vllm="0.8.5", torch="2.6.0", tensordict="0.6.2", transformers="4.51.3")),
    ("vllm-transformers-5",
     dict(verl="0.6.1", vllm="0.11.0", torch="2.8.0", cuda="12.8", tensordict="0.8.3", transformers="5.0.0"),
     dict(verl="0.6.1", vllm="0.11.0", torch="2.8.0", cuda="12.8", tensordict="0.8.3", transformers="4.57.1")),
    ("flash-attn-prebuilt-wheel",
     dict(verl="0.5.0", vllm="0.10.0", torch="2.7.1", cuda="12.6", flash_attn="2.7.4.post1", tensordict="0.8.3",
          transformers="4.55.4", overrides=OVERRIDE_05),
     dict(verl="0.5.0", vllm="0.10.0", torch="2.7.1", cuda="12.6", flash_attn="2.8.1", tensordict="0.8.3",
          transformers="4.55.4", overrides=OVERRIDE_05)),
    ("vllm-env-knobs",
     dict(verl="0.8.0", vllm="0.15.0", torch="2.9.0", cuda="12.8", tensordict="0.8.3", transformers="4.57.3",
          env={"VLLM_ATTENTION_BACKEND": "FLASH_ATTN"}),
     dict(verl="0.8.0", vllm="0.12.0", torch="2.9.0", cuda="12.8", tensordict="0.8.3", transformers="4.57.3",
          env={"VLLM_ATTENTION_BACKEND": "FLASH_ATTN"})),
    ("verl-declared-ranges",
     dict(verl="0.4.1", vllm="0.8.5.post1", torch="2.6.0", tensordict="0.6.2", transformers="4.51.3"),
     dict(verl="0.4.1", vllm="0.8.5", torch="2.6.0", tensordict="0.6.2", transformers="4.51.3")),
    ("python-requires",
     dict(verl="0.5.0", vllm="0.10.0", torch="2.7.1", cuda="12.6", tensordict="0.8.3", transformers="4.55.4",
          overrides=OVERRIDE_05, head=HEAD_313),
     dict(verl="0.5.0", vllm="0.10.0", torch="2.7.1", cuda="12.6", tensordict="0.8.3", transformers="4.55.4",
          overrides=OVERRIDE_05)),
    ("pyarrow-26-numpy-1",
     dict(extras={"pyarrow": "26.0.1", "numpy": "1.26.4"}),
     dict(extras={"pyarrow": "25.0.1", "numpy": "1.26.4"})),
    ("verl-training-flash-attn",
     dict(rollout_only=None),
     dict(rollout_only="flash-attn wheels are out of reach for this test")),
    ("vllm-0.20-deepgemm-cp312",  # verl 0.9.1 without its [vllm] extra (which pins vllm 0.24.0), as add-row proposes
     dict(verl="0.9.1", vllm="0.20.0", torch="2.11.0", cuda="13.0", tensordict="0.10.0", transformers="5.9.0",
          rollout_only=None, overrides={"vllm": ("0.20.0", "verl 0.9.1 without its vllm extra resolves with it")}),
     dict(verl="0.9.1", vllm="0.20.0", torch="2.11.0", cuda="13.0", tensordict="0.10.0", transformers="5.9.0",
          rollout_only=None, overrides={"vllm": ("0.20.0", "verl 0.9.1 without its vllm extra resolves with it")},
          verl_extras=["verl-core"], python="3.12", base="debootstrap:noble")),
    ("vllm-declared-floors",  # transformers forced below vLLM 0.10.0's floor, as verl's own published image has it
     dict(verl="0.5.0", vllm="0.10.0", torch="2.7.1", cuda="12.6", tensordict="0.8.3", transformers="4.51.3",
          overrides={**OVERRIDE_05, "transformers": ("4.51.3", "as the published verl image has it")}),
     dict(verl="0.5.0", vllm="0.10.0", torch="2.7.1", cuda="12.6", tensordict="0.8.3", transformers="4.55.4",
          overrides=OVERRIDE_05)),
    ("verl-transformers-5",  # verl < 0.7.1 imports AutoModelForVision2Seq, which transformers 5 no longer has
     dict(verl="0.6.1", vllm="0.11.0", torch="2.8.0", cuda="12.8", tensordict="0.8.3", transformers="5.0.0"),
     dict(verl="0.6.1", vllm="0.11.0", torch="2.8.0", cuda="12.8", tensordict="0.8.3", transformers="4.57.1")),
]


@pytest.mark.parametrize(("rule", "bad", "good"), CASES, ids=[c[0] for c in CASES])
def test_rule_fails_the_bad_row_and_passes_the_good_one(rule, bad, good, make_row):
    bad_row, good_row = make_row(**bad), make_row(**good)
    severity = next(r.severity for r in rules.load().rules if r.id == rule)
    assert status(bad_row, rule) == {"fail": "failed", "warn": "warned"}[severity]
    result = next(r for r in results_of(bad_row, rule) if not r.passed)
    assert result.severity == severity and result.fix
    assert status(good_row, rule) == "passed", results_of(good_row, rule)
    # the good row passes every fail-severity rule
    assert not [r for r in rules.evaluate(good_row) if r.failed]


def test_tensordict_message_names_the_import_error(make_row):
    result = failure(make_row(**CASES[0][1]), "tensordict-forkingpickler")
    assert "ImportError: cannot import name 'ForkingPickler'" in result.message
    assert "tensordict 0.5.0 with torch 2.6.0" in result.message and "tensordict >= 0.6" in result.fix
    # torch below 2.6 keeps working with the old tensordict
    row = make_row(verl="0.3.0.post1", vllm="0.7.2", torch="2.5.1", tensordict="0.5.0")
    assert status(row, "tensordict-forkingpickler") == "passed"


def test_transformers_5_is_fine_from_vllm_0_11_1(make_row):
    result = failure(make_row(**CASES[1][1]), "vllm-transformers-5")
    assert "all_special_tokens_extended" in result.message and "below 5" in result.fix
    row = make_row(**{**CASES[1][1], "vllm": "0.11.1", "torch": "2.9.0"})
    assert status(row, "vllm-transformers-5") == "passed"


def test_verl_from_0_7_1_takes_transformers_5(make_row):
    """verl 0.7.1 falls back to AutoModelForImageTextToText (verl/utils/transformers_compat.py); older verls import
    AutoModelForVision2Seq, which no transformers 5 release defines."""
    result = failure(make_row(verl="0.4.1", vllm="0.8.5", torch="2.6.0", tensordict="0.6.2", transformers="5.9.0"),
                     "verl-transformers-5")
    assert "verl 0.4.1 with transformers 5.9.0" in result.message and "AutoModelForVision2Seq" in result.message
    row = make_row(verl="0.7.1", vllm="0.12.0", torch="2.9.0", cuda="12.8", tensordict="0.8.3", transformers="5.0.0")
    assert status(row, "verl-transformers-5") == "passed"


def test_flash_attn_wheel_rule_names_the_missing_wheel_and_the_releases_that_have_it(make_row):
    result = failure(make_row(**CASES[2][1]), "flash-attn-prebuilt-wheel")
    assert "flash_attn-2.7.4.post1+cu12torch2.7cxx11abiTRUE-cp311-cp311-linux_x86_64.whl" in result.message
    assert "torch 2.2, 2.3, 2.4, 2.5, 2.6 only" in result.message
    assert "2.8.1" in result.message and "2.8.3" in result.message
    assert "compiling flash-attn from source" in result.message


def test_flash_attn_rule_says_when_the_build_compiles_and_why_it_cannot(make_row):
    row = make_row(**{**CASES[2][1], "flash_attn": "2.8.3", "torch": "2.11.0", "cuda": "13.0", "python": "3.12",
                      "base": "debootstrap:noble"})
    [result] = results_of(row, "flash-attn-prebuilt-wheel")
    assert result.passed and "the build compiles it from PyPI's sdist for sm_80, sm_90, sm_100, sm_120" in result.message
    assert "flash-attn-wheels:2.8.3-cu130-torch2.11.0-cp312-cxx11abiTRUE-sm80-sm90-sm100-sm120" in result.message
    result = failure(make_row(**{**CASES[2][1], "flash_attn": "2.8.1", "torch": "2.8.0", "cuda": "12.8"}),
                     "flash-attn-prebuilt-wheel")
    assert "and no compile: knowledge/flash-attn.yaml has no CUDA 12.8 compiler wheels (toolchains)" in result.message


@pytest.mark.parametrize(("fa", "torch", "cuda", "python", "expected"), [
    ("2.7.4.post1", "2.6.0", "12.4", "3.11", "passed"),   # the verl 0.4.1 row
    ("2.7.4.post1", "2.5.1", "12.4", "3.10", "passed"),
    ("2.8.1", "2.8.0", "12.8", "3.11", "failed"),         # 2.8.0.post2-2.8.2: torch 2.4-2.7 only
    ("2.8.3", "2.8.0", "12.8", "3.11", "passed"),         # 2.8.3 adds torch 2.8
    ("2.8.3", "2.9.0", "12.8", "3.11", "failed"),         # its one torch 2.9 wheel is cp312
    ("2.8.3", "2.9.0", "12.8", "3.12", "passed"),
    ("2.8.3", "2.11.0", "13.0", "3.11", "passed"),        # no cu13 wheels before 2.8.3.post2, but a CUDA 13.0 compile
    ("2.8.3.post2", "2.9.0", "13.0", "3.11", "warned"),   # listed, but the list is unverified
    ("2.6.3", "2.5.1", "12.4", "3.11", "warned"),         # not in the table at all
])
def test_flash_attn_wheel_table(fa, torch, cuda, python, expected, make_row):
    base = {"3.10": "jammy", "3.11": "bookworm", "3.12": "noble"}[python]
    head = f'defaults:\n  python: "{python}"\n  base: debootstrap:{base}\nrows:\n'
    row = make_row(head=head, flash_attn=fa, torch=torch, cuda=cuda)
    assert status(row, "flash-attn-prebuilt-wheel") == expected, results_of(row, "flash-attn-prebuilt-wheel")


def test_flash_attn_wheel_python_3_13_needs_torch_2_5(make_row):
    head = HEAD_313
    assert status(make_row(head=head, flash_attn="2.8.1", torch="2.4.1"), "flash-attn-prebuilt-wheel") == "failed"
    assert status(make_row(head=head, flash_attn="2.8.1", torch="2.5.1"), "flash-attn-prebuilt-wheel") == "passed"


def test_no_flash_attn_is_not_applicable(make_row):
    assert status(make_row(), "flash-attn-prebuilt-wheel") == "n/a"


ENV_CASES = [
    # (vllm, env, expected status, text in the message)
    ("0.12.0", {"VLLM_USE_V1": "1"}, "failed", "does not exist in vLLM 0.12.0"),
    ("0.11.0", {"VLLM_USE_V1": "0"}, "failed", "no V0 engine"),
    ("0.8.5", {"VLLM_USE_V1": "true"}, "failed", "invalid literal for int()"),
    ("0.8.5", {"VLLM_USE_V1": "0"}, "passed", "VLLM_USE_V1=0"),
    ("0.6.3", {"VLLM_USE_V1": "1"}, "failed", "does not exist in vLLM 0.6.3"),
    ("0.15.0", {"VLLM_ATTENTION_BACKEND": "FLASH_ATTN"}, "failed", "--attention-backend"),
    ("0.14.1", {"VLLM_ATTENTION_BACKEND": "FLASH_ATTN"}, "passed", "VLLM_ATTENTION_BACKEND=FLASH_ATTN"),
    ("0.10.0", {"VLLM_ATTENTION_BACKEND": "FLASH_ATTN_VLLM_V1"}, "passed", "FLASH_ATTN_VLLM_V1"),
    ("0.11.0", {"VLLM_ATTENTION_BACKEND": "FLASH_ATTN_VLLM_V1"}, "warned", "deprecated _VLLM_V1 suffix"),
    ("0.12.0", {"VLLM_ATTENTION_BACKEND": "XFORMERS"}, "failed", "Invalid attention backend: 'XFORMERS'"),
    ("0.7.2", {"VLLM_ATTENTION_BACKEND": "FLASH_ATTN_V1"}, "failed", "silently ignored"),
    ("0.6.3", {"VLLM_ATTENTION_BACKEND": "FLASH_ATTN_VLLM_V1"}, "failed", "Invalid attention backend 'FLASH_ATTN_VLLM_V1'"),
    ("0.10.0", {"VLLM_WORKER_MULTIPROC_METHOD": "spawn"}, "passed", "spawn"),
    ("0.12.0", {"VLLM_WORKER_MULTIPROC_METHOD": "forkserver"}, "failed", "fork, spawn"),
]


@pytest.mark.parametrize(("vllm", "env", "expected", "text"), ENV_CASES)
def test_vllm_env_knobs_per_version(vllm, env, expected, text, make_row):
    results = results_of(make_row(vllm=vllm, env=env), "vllm-env-knobs")
    assert status(make_row(vllm=vllm, env=env), "vllm-env-knobs") == expected, results
    assert any(text in r.message for r in results), results
    for r in results:
        if r.failed and "env" in r.field:
            assert r.field == f"env.{next(iter(env))}"


def test_env_defaults_are_checked_too(make_row, monkeypatch):
    """A default that leaks to a vLLM without the variable fails the rows it applies to, naming the data file."""
    leaky = [envdefaults.EnvDefault(name="VLLM_USE_V1", value="1", vllm=">=0.8.0",
                                    reason="deliberately wrong range for the test")]
    monkeypatch.setattr(envdefaults, "_env_defaults", lambda: tuple(leaky))
    result = failure(make_row(vllm="0.12.0"), "vllm-env-knobs")
    assert result.field == "vllm" and "default from" in result.message


@pytest.mark.parametrize("vllm", ["0.6.3", "0.6.4", "0.7.2", "0.7.3", "0.8.0", "0.8.5", "0.9.2", "0.10.0", "0.10.2",
                                  "0.11.0", "0.11.1", "0.12.0", "0.14.1", "0.15.0", "0.24.0", "0.33.0"])
def test_shipped_env_defaults_agree_with_the_knob_data(vllm, make_row):
    assert status(make_row(vllm=vllm), "vllm-env-knobs") in ("passed", "n/a")


def test_verl_ranges_name_the_declared_range_and_post_release_ordering(make_row):
    result = failure(make_row(**CASES[4][1]), "verl-declared-ranges")
    assert "verl 0.4.1 declares vllm<=0.8.5 (its vllm extra), the row has vllm 0.8.5.post1" in result.message
    assert "post-release sorts after" in result.message and result.field == "vllm"
    assert "overrides:" in result.fix


def test_verl_ranges_accept_an_override_with_a_reason(make_row):
    pins = dict(verl="0.5.0", vllm="0.10.0", torch="2.7.1", cuda="12.6", tensordict="0.8.3", transformers="4.55.4")
    assert status(make_row(**pins), "verl-declared-ranges") == "failed"
    row = make_row(**pins, overrides=OVERRIDE_05)
    (result,) = results_of(row, "verl-declared-ranges")
    assert result.passed and "on purpose (override: verl publishes 0.5.0 with vLLM 0.10.0)" in result.message


def test_transformers_forced_below_vllms_floor_fails_even_with_an_override(make_row):
    """verl's own published images ship transformers below vLLM's declared floor; an override forces uv past it, and
    the image would fail `uv pip check` in the smoke tests: validate refuses the row first."""
    pins = dict(verl="0.5.0", vllm="0.10.0", torch="2.7.1", cuda="12.6", tensordict="0.8.3", transformers="4.51.3")
    row = make_row(**pins, overrides={**OVERRIDE_05, "transformers": ("4.51.3", "as the published verl image has it")})
    result = failure(row, "vllm-declared-floors")
    assert result.field == "transformers" and result.severity == "fail"
    assert "vllm 0.10.0 requires transformers>=4.53.2, the row has transformers 4.51.3 (forced by the row's override)" \
        in result.message and "uv pip check" in result.message
    assert "pick transformers within >=4.53.2" in result.fix
    good = make_row(**{**pins, "transformers": "4.55.4"}, overrides=OVERRIDE_05)
    (passed,) = results_of(good, "vllm-declared-floors")
    assert passed.passed and "transformers 4.55.4 in vllm 0.10.0's transformers>=4.53.2" in passed.message


def test_vllm_0_20_on_python_below_3_12_warns_that_deepgemm_is_missing(make_row):
    pins = dict(vllm="0.20.0")  # the rule reads vllm and python only
    assert status(make_row(**pins, python="3.11"), "vllm-0.20-deepgemm-cp312") == "warned"
    assert status(make_row(**pins, python="3.12", base="debootstrap:noble"), "vllm-0.20-deepgemm-cp312") == "passed"
    assert status(make_row(**{**pins, "vllm": "0.21.0"}, python="3.11"), "vllm-0.20-deepgemm-cp312") == "passed"


def test_a_vllm_override_must_keep_what_the_vllm_extra_installs_besides_its_pins(make_row):
    """verl 0.9.1's [vllm] extra installs verl[verl-core] (TransferQueue, which its trainer imports) besides the vllm,
    torch and transformers pins. A row overriding vllm without `verl_extras: [verl-core]` fails, naming the fix."""
    pins = dict(verl="0.9.1", vllm="0.31.0", torch="2.13.0", cuda="13.0", tensordict="0.10.0", transformers="5.10.4",
                rollout_only=None, overrides={"vllm": ("0.31.0", "verl 0.9.1 without its vllm extra resolves")})
    bad = [r for r in results_of(make_row(**pins), "verl-declared-ranges") if not r.passed]
    assert [r.field for r in bad] == ["verl_extras"] and "verl-core" in bad[0].fix
    assert status(make_row(**pins, verl_extras=["verl-core"]), "verl-declared-ranges") == "passed"


def test_a_vllm_override_drops_the_vllm_extras_pins_but_not_verls_own(make_row):
    """Overriding vllm installs verl without its [vllm] extra, so that extra's torch and transformers pins no longer
    apply (verl 0.9.1's extra pins torch==2.11.0, transformers==5.9.0); verl's base requirements still do."""
    override = {"vllm": ("0.31.0", "verl 0.9.1 without its vllm extra resolves with it")}
    pins = dict(verl="0.9.1", vllm="0.31.0", torch="2.13.0", cuda="13.0", tensordict="0.10.0", transformers="5.10.4")
    assert status(make_row(**pins), "verl-declared-ranges") == "failed"
    assert status(make_row(**pins, overrides=override, verl_extras=["verl-core"]), "verl-declared-ranges") == "passed"
    result = failure(make_row(**{**pins, "tensordict": "0.9.0"}, overrides=override, verl_extras=["verl-core"]),
                     "verl-declared-ranges")
    assert "tensordict" in result.message and "(its vllm extra)" not in result.message


def test_verl_ranges_check_tensordict_and_follow_self_referencing_extras(make_row):
    pins = dict(verl="0.9.1", vllm="0.24.0", torch="2.11.0", cuda="13.0", tensordict="0.10.0", transformers="5.9.0")
    assert status(make_row(**pins), "verl-declared-ranges") == "passed"
    result = failure(make_row(**{**pins, "torch": "2.10.0"}), "verl-declared-ranges")
    assert "torch==2.11.0 (its vllm extra)" in result.message
    assert status(make_row(**{**pins, "tensordict": "0.9.0"}), "verl-declared-ranges") == "failed"


def test_verl_ranges_read_ray_from_the_resolution_or_the_extras(make_row):
    pins = dict(verl="0.4.1", vllm="0.8.5", torch="2.6.0", tensordict="0.6.2", transformers="4.51.3")
    row = make_row(**pins)
    (result,) = results_of(row, "verl-declared-ranges")
    assert "no version for ray without a resolution" in result.message
    old_ray = {"ray": LockEntry(name="ray", version="2.40.0")}
    bad = failure(row, "verl-declared-ranges", old_ray)
    assert "ray>=2.41.0" in bad.message and "ray 2.40.0 (resolved)" in bad.message and bad.field == "verl"
    assert status(row, "verl-declared-ranges", {"ray": LockEntry(name="ray", version="2.47.1")}) == "passed"
    pinned = make_row(**pins, extras={"ray": "2.40.0"})
    assert failure(pinned, "verl-declared-ranges").field == "extras.ray"


def test_python_rule_reuses_the_requires_python_check(make_row):
    row = make_row(**CASES[5][1])
    result = failure(row, "python-requires")
    assert "vllm 0.10.0 requires Python <3.13,>=3.9, the row has 3.13" in result.message
    assert result.field == "python" and "pick a Python within" in result.fix
    assert [e.message for e in requires_python.check(row)] == ["vllm 0.10.0 requires Python <3.13,>=3.9, the row has 3.13"]


# --- errors, warnings, explain ------------------------------------------------------------------------------


def test_failures_become_input_errors_at_file_line_row_and_field(write_matrix):
    text = HEAD + row_text(**CASES[0][1])
    path = write_matrix(text)
    row = matrix.load(path).rows[0]
    errors = rules.to_errors(row, rules.evaluate(row), path)
    assert len(errors) == 1
    (error,) = errors
    line = text.splitlines().index('    tensordict: "0.5.0"') + 1
    assert error.where == f"{path}:{line}, row {row.id}, field tensordict"
    assert error.exit_code == 2 and "(tensordict-forkingpickler)" in error.message and error.fix
    assert "fix: pin tensordict >= 0.6" in error.render()


def test_a_field_inherited_from_defaults_points_at_the_default(write_matrix):
    path = write_matrix(HEAD_313 + row_text(**{k: v for k, v in CASES[5][1].items() if k != "head"}))
    row = matrix.load(path).rows[0]
    (error,) = rules.to_errors(row, rules.evaluate(row), path)
    assert error.where == f"{path}:2, row {row.id}, field python"


def test_env_failures_point_at_the_env_key(write_matrix):
    text = HEAD + row_text(**{**CASES[3][2], "env": {"VLLM_USE_V1": "1"}})
    path = write_matrix(text)
    row = matrix.load(path).rows[0]
    (error,) = rules.to_errors(row, rules.evaluate(row), path)
    line = text.splitlines().index('      VLLM_USE_V1: "1"') + 1
    assert error.where == f"{path}:{line}, row {row.id}, field env.VLLM_USE_V1"


def test_warnings_do_not_become_errors(make_row):
    row = make_row(**CASES[1][2], env={"VLLM_ATTENTION_BACKEND": "FLASH_ATTN_VLLM_V1"})
    results = rules.evaluate(row)
    assert rules.to_errors(row, results) == []
    (line,) = rules.warnings(row, results)
    assert "field env.VLLM_ATTENTION_BACKEND" in line and "write VLLM_ATTENTION_BACKEND=FLASH_ATTN" in line


def test_explain_lists_every_rule_per_row_with_its_status(make_row):
    good, bad = make_row(), make_row(**CASES[0][1])
    text = rules.explain([(good, rules.evaluate(good)), (bad, rules.evaluate(bad))])
    assert f"{good.id}: 9 passed, 2 n/a" in text  # no pyarrow/numpy versions without a resolution
    assert f"{bad.id}: 1 failed, 8 passed, 2 n/a" in text
    assert "  n/a     flash-attn-prebuilt-wheel  no flash_attn pin" in text
    assert "  failed  tensordict-forkingpickler" in text and "fix: pin tensordict >= 0.6" in text
    for rule in rules.load().rules:
        assert text.count(f" {rule.id} ") >= 2


def test_skip_leaves_a_rule_out(make_row):
    row = make_row()
    assert "python-requires" not in {r.rule for r in rules.evaluate(row, skip=("python-requires",))}


def test_real_matrix_passes_every_fail_rule_offline():
    """The six rows, with the index stubbed (see the network test below for the real thing)."""
    m = matrix.load()
    for row in m.rows:
        results = rules.evaluate(row)
        assert rules.to_errors(row, results, m.path) == [], rules.explain([(row, results)])
        assert not [r for r in results if r.warned], rules.explain([(row, results)])
