"""Tags and row ids: pure functions of the pins (imagematrix/model/tags.py)."""

from __future__ import annotations

from imagematrix.model import tags


def test_row_id_from_pins():
    assert tags.row_id(verl="0.5.0", vllm="0.10.0", torch="2.7.1", cuda="12.6", python="3.11",
                       flash_attn="2.8.1") == "verl0.5.0-vllm0.10.0-torch2.7.1-cu126-py311-fa2.8.1"
    assert tags.row_id(verl="0.3.0.post1", vllm="0.7.2", torch="2.5.1", cuda="12.4",
                       python="3.10") == "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py310"


def test_row_id_is_a_valid_tag_and_changes_with_every_pin():
    base = dict(verl="0.4.1", vllm="0.8.5", torch="2.6.0", cuda="12.4", python="3.11", flash_attn="2.7.4.post1")
    ids = {tags.row_id(**base)}
    for key, other in [("verl", "0.4.0"), ("vllm", "0.8.4"), ("torch", "2.6.1"), ("cuda", "12.6"),
                       ("python", "3.10"), ("flash_attn", None)]:
        ids.add(tags.row_id(**{**base, key: other}))
    assert len(ids) == 7
    assert all(tags.TAG_RE.match(i) for i in ids)


def test_candidate_tag_is_valid_and_distinct_from_final():
    tag = tags.candidate_tag("verl0.5.0-vllm0.10.0-torch2.7.1-cu126-py311", "sha256:" + "ab" * 32)
    assert tags.TAG_RE.match(tag) and tag.startswith("candidate-") and tag.endswith("abababababab")
    assert tags.final_tags("r", "0.10.0") == ["r", "vllm0.10.0"]


def test_the_vllm_alias_belongs_to_the_last_row_of_its_version():
    published = tags.published_tags([("a", "0.7.2"), ("b", "0.8.5"), ("c", "0.7.2")])
    assert published == {"a": ["a"], "b": ["b", "vllm0.8.5"], "c": ["c", "vllm0.7.2"]}
