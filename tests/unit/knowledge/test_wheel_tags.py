"""knowledge/wheel-tags.yaml and the verdict the CPU smoke test takes from `uv pip check`'s output with it (the arm64
image of the vLLM 0.24 row: nvidia-cusparselt-cu13's aarch64 wheel says `Tag: py3-none-manylinux2014_sbsa`)."""

from __future__ import annotations

import pytest

from imagematrix.knowledge import wheel_tags
from imagematrix.model.errors import InputError

SEEN = ("Using Python 3.11.2 environment at: /opt/venv\nChecked 256 packages in 536ms\nFound 1 incompatibility\n"
        "The package `nvidia-cusparselt-cu13` was built for a different platform\n")  # the arm64 image, 2026-12-07
AARCH64, X86_64 = 0xB7, 0x3E


def test_the_committed_file_accepts_sbsa_on_arm64_only():
    assert wheel_tags.tags_for("linux/arm64") == {"manylinux2014_sbsa"}
    assert wheel_tags.tags_for("linux/amd64") == frozenset()


def test_the_report_seen_names_the_package():
    assert wheel_tags.platform_reports(SEEN) == ["nvidia-cusparselt-cu13"]


@pytest.mark.parametrize("output", [
    "",  # nothing uv said: not accounted for
    "Found 1 incompatibility\nThe package `torch` requires `sympy>=1.13`, but `1.12` is installed\n",
    SEEN.replace("Found 1 incompatibility", "Found 2 incompatibilities")
    + "The package `vllm` requires `torch==2.11.0`, but `2.10.0` is installed\n",
    SEEN.replace("Found 1 incompatibility", "Found 2 incompatibilities"),  # one line it did not print
    SEEN.replace("different platform", "different platform; and more"),
])
def test_any_other_report_is_not_explained(output):
    assert wheel_tags.platform_reports(output) is None


def test_accepted_only_with_the_alias_tag_and_the_platforms_machine():
    assert wheel_tags.accepted("linux/arm64", ["py3-none-manylinux2014_sbsa"], [AARCH64, AARCH64]) is None
    assert wheel_tags.accepted("linux/arm64", ["py3-none-manylinux2014_sbsa"], []) is None  # no ELF file to check
    assert "not among the aliases for linux/amd64" in wheel_tags.accepted("linux/amd64", ["py3-none-manylinux2014_sbsa"],
                                                                          [X86_64])
    assert "not among the aliases" in wheel_tags.accepted("linux/arm64", ["py3-none-manylinux2014_x86_64"], [AARCH64])
    assert "not among the aliases" in wheel_tags.accepted("linux/arm64", [], [AARCH64])
    mixed = ["py3-none-manylinux2014_sbsa", "py3-none-win_amd64"]
    assert "not among the aliases" in wheel_tags.accepted("linux/arm64", mixed, [AARCH64])
    assert "machine 0x3e, not linux/arm64's 0xb7" in wheel_tags.accepted("linux/arm64", ["py3-none-manylinux2014_sbsa"],
                                                                         [AARCH64, X86_64])


@pytest.mark.parametrize("text, says", [
    ("aliases: {}\n", "an `aliases:` list"),
    ("aliases:\n  - linux/arm64\n", "expected a mapping with platform, tag and reason"),
    ("aliases:\n  - {platform: linux/arm64, tag: manylinux2014_sbsa}\n", "reason"),
    ("aliases:\n  - {platform: linux/s390x, tag: x, reason: a reason long enough}\n", "platform"),
    ("aliases:\n  - {platform: linux/arm64, tag: 'Any.Thing', reason: a reason long enough}\n", "platform tag"),
    ("aliases:\n  - {platform: linux/arm64, tag: x, reason: a reason long enough, extra: 1}\n", "extra"),
])
def test_a_malformed_file_is_bad_input_naming_it(tmp_path, text, says):
    path = tmp_path / "wheel-tags.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        wheel_tags.load(path)
    assert str(path) in str(caught.value) and says in str(caught.value)
