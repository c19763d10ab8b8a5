"""knowledge/rules.yaml is checked at load: an unknown key, a typo of a row field, a bad specifier or a repeated id is
an InputError naming the file and the line (a typo in `when` used to make its rule silently never apply)."""

from __future__ import annotations

import pytest

from imagematrix import rules
from imagematrix.model import paths
from imagematrix.model.errors import InputError

WHEN = 'when: {tensordict: "<0.6", torch: ">=2.6"}'


@pytest.fixture(autouse=True)
def _fresh_cache():
    rules.load.cache_clear()
    yield
    rules.load.cache_clear()


def _load_mutated(tmp_path, old: str, new: str) -> tuple[InputError, list[str]]:
    text = paths.RULES.read_text()
    assert old in text
    text = text.replace(old, new, 1)
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        rules.load(path)
    return caught.value, text.splitlines()


@pytest.mark.parametrize(("old", "new", "marker", "said"), [
    ("    " + WHEN, '    whne: {tensordict: "<0.6", torch: ">=2.6"}', "    whne:", "rules.0.whne: Extra inputs"),
    (WHEN, 'when: {tensordict: "<0.6", torhc: ">=2.6"}', "torhc", "'torhc' looks like a typo of 'torch'"),
    (WHEN, 'when: {tensordic: "<0.6", torch: ">=2.6"}', "tensordic:", "'tensordic' looks like a typo of 'tensordict'"),
    (WHEN, 'when: {tensordict: "<0.6", "torch>=": ">=2.6"}', "torch>=", "is neither a row field nor a package name"),
    (WHEN, 'when: {tensordict: "<0.6", torch: "2.6"}', WHEN[:-10], "'2.6' is not a PEP 440 version specifier"),
    ("    field: tensordict", "    field: tensordic", "    field: tensordic", "'tensordic' is not a row key"),
    ("packages: [vllm, tensordict, ray,", "packages: [vllm, tensordict, rya, pyhton,", "packages:",
     "'pyhton' looks like a typo of 'python'"),
    ("  - id: vllm-transformers-5", "  - id: tensordict-forkingpickler", "  - id: tensordict-forkingpickler",
     "duplicate rule id 'tensordict-forkingpickler'"),
])
def test_a_mistake_in_the_rules_names_its_line(tmp_path, old, new, marker, said):
    error, lines = _load_mutated(tmp_path, old, new)
    line = [i for i, text in enumerate(lines, 1) if marker in text][-1]
    assert error.where == f"{tmp_path / 'rules.yaml'}:{line}", error.render()
    assert said in error.message, error.render()


def test_real_package_names_near_a_row_field_still_load(tmp_path):
    """flash-attn-3, vllm-flash-attn and xformers are packages, not typos (more than one edit from a row field)."""
    text = paths.RULES.read_text().replace(WHEN, 'when: {flash-attn-3: "<3", vllm-flash-attn: ">=2", xformers: ">0"}')
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    assert rules.load(path).rules[0].when == {"flash-attn-3": "<3", "vllm-flash-attn": ">=2", "xformers": ">0"}
