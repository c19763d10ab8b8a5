"""Issue 26, item 13: `outdated` cut its notes mid-word ("... vllm==0.33.0 depends on tra…"). A note's line is now
shortened at a word boundary (pairing.shorten), the table wraps the rest at spaces (a word wider than the column
folds, never ends in "…"), and --json keeps every text whole (uv's cause included)."""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rich.text import Text

from imagematrix.assist import outdated, pairing
from imagematrix.cli import outdated as cli_outdated
from imagematrix.knowledge import requires
from imagematrix.model import matrix as matrix_mod
from imagematrix.tools import pypi
from tests.support import fuzz_settings
from tests.unit.assist.test_outdated import CONFLICT, MATRIX, NOW, FakeResolver, snapshot


@pytest.fixture(autouse=True)
def no_index(monkeypatch):
    def asked(*args, **kwargs):
        pytest.fail(f"the index was read: {args}")

    monkeypatch.setattr(requires, "read_requires_dist", asked, raising=False)
    monkeypatch.setattr(pypi, "requires_python", asked)


def plain(note: Text) -> str:
    return note.plain


def table_text(r: outdated.Report, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, record=True)
    console.print(cli_outdated.rows_table(r))
    return console.export_text()


WORD = st.text(alphabet=st.characters(codec="ascii", categories=("L", "N", "P", "S")), min_size=1, max_size=30)


def whole_words_prefix(short: str, text: str) -> bool:
    """short is text's words, all of them or its first ones followed by "…", each whole."""
    words, kept = text.split(), short.split()
    if kept == words:
        return True
    return kept[-1] == "…" and kept[:-1] == words[:len(kept) - 1] and len(kept) - 1 < len(words)


@fuzz_settings(200)
@given(words=st.lists(WORD, min_size=1, max_size=40), width=st.integers(min_value=1, max_value=160))
def test_shorten_cuts_only_between_words(words, width):
    text = " ".join(words)
    short = pairing.shorten(text, width)
    assert whole_words_prefix(short, text), (short, text)
    assert len(short) <= width or short.split()[:1] == words[:1]  # only a first word wider than width overflows


@fuzz_settings(60)
@given(cause=st.lists(WORD, min_size=1, max_size=60).map(" ".join), reason=st.lists(WORD, min_size=1,
                                                                                      max_size=50).map(" ".join))
def test_a_notes_words_are_whole(cause, reason):
    """Every word in a no-row note is a whole word of the texts it is made of (or the "…" that marks a cut)."""
    o = outdated.Outcome(package="vllm", version="0.33.0", reason=reason,
                         tried=[("verl 0.9.1 with vLLM 0.33.0", cause), ("verl 0.9.0 with vLLM 0.33.0", cause)])
    note = plain(cli_outdated._note(o))
    allowed = set(f"no row: {reason} verl 0.9.1 with vLLM 0.33.0: {cause} (+1 more tried)".split()) | {"…", "row:"}
    assert set(note.split()) <= allowed, set(note.split()) - allowed


def test_the_refusal_of_issue_26_is_cut_between_words():
    """The note that read "... with vLLM 0.33.0: vllm==0.33.0 depends on tra…"; --json keeps the cause whole."""
    cause = pairing.cause(CONFLICT.format(verl="0.9.1", vllm="0.33.0"))
    o = outdated.Outcome(package="vllm", version="0.33.0", reason="no verl tried resolves with vLLM 0.33.0",
                         tried=[("verl 0.9.1 without its vllm extra (which declares vllm==0.24.0) with vLLM 0.33.0",
                                 cause)] * 2)
    line = plain(cli_outdated._note(o)).splitlines()[1]
    assert line.endswith(" … (+1 more tried)") and "tra…" not in line
    assert whole_words_prefix(line.removesuffix(" (+1 more tried)"), f"{o.tried[0][0]}: {cause}")
    assert o.to_json()["tried"][0]["cause"] == cause and cause.endswith("transformers>5.6.0,<5.11")


def test_no_word_of_the_table_is_cut(write_matrix):
    r = outdated.build_report(matrix_mod.load(write_matrix(MATRIX)).rows, snapshot(), FakeResolver(), python="3.11",
                              now=NOW, jobs=1)
    for width in (250, 160, 120):
        text = table_text(r, width)
        assert not re.search(r"\w…", text), text  # a "…" only ever follows a space
