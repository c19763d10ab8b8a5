"""knowledge.requires.answered_by: within it, Requires-Dist and Requires-Python come from the given answers (as
`outdated` gives its snapshot's facts to the rules), never from the index; outside it, from the index again."""

from __future__ import annotations

import contextvars
import threading

import pytest

from imagematrix.knowledge import requires, verl
from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import pypi


class Answers:
    def requires_dist(self, package: str, version: str) -> tuple[str, ...]:
        if (package, version) == ("verl", "0.4.1"):
            return ('vllm<=0.8.5; extra == "vllm"', "transformers")
        raise RuntimeFailure(f"{package} {version}: not known")

    def requires_python(self, package: str, version: str) -> str | None:
        return ">=3.8" if package == "verl" else None


@pytest.fixture
def no_index(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"the index was asked: {args}")

    monkeypatch.setattr(pypi, "wheel_file", refuse)
    monkeypatch.setattr(pypi, "requires_python", refuse)


def test_answers_replace_the_index_within_and_only_within(no_index, monkeypatch):
    with requires.answered_by(Answers()):
        assert str(verl.vllm_range("0.4.1")) == "<=0.8.5"
        assert requires.requires_python("verl", "0.4.1") == ">=3.8"
        with pytest.raises(RuntimeFailure, match="not known"):
            requires.requires_dist("vllm", "0.33.0")
    monkeypatch.setattr(pypi, "requires_python", lambda package, version: "<3.13")
    assert requires.requires_python("verl", "0.4.1") == "<3.13"  # outside: the index (here a stub) again


def test_a_thread_sees_the_answers_only_through_a_copied_context(no_index):
    seen = {}
    with requires.answered_by(Answers()):
        carried = contextvars.copy_context()
    thread = threading.Thread(target=lambda: seen.update(python=carried.run(requires.requires_python, "verl", "0.4.1")))
    thread.start()
    thread.join()
    assert seen == {"python": ">=3.8"}
