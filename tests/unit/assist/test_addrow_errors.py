"""add-row's refusals name the bad value and never the probe file the proposed matrix is checked in."""

from __future__ import annotations

import pytest

from imagematrix.assist import addrow
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError
from tests.conftest import GOOD_MATRIX

PINS = {"verl": "0.4.1", "vllm": "0.8.3", "torch": "2.6.0", "cuda": "12.4", "tensordict": "0.6.2",
        "transformers": "4.51.3"}


def test_a_malformed_python_is_refused_by_name_with_exit_2(run, write_matrix, capsys):
    path = write_matrix(GOOD_MATRIX)
    with pytest.raises(SystemExit) as exited:
        run("add-row", "--vllm", "0.8.3", "--python", "3.10.0", "--matrix", path)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "'3.10.0' is not a valid Python version" in err and ".add-row-" not in err, err


def test_a_proposed_row_the_matrix_refuses_names_add_row_not_the_probe_file(write_matrix):
    """No suite of knowledge/bases.yaml packages Python 3.9: the proposed row is refused while the whole matrix is
    checked, and the error names add-row, not its probe file."""
    path = write_matrix(GOOD_MATRIX)
    proposal = addrow.Proposal(pins={**PINS, "python": "3.9"})
    with pytest.raises(InputError) as caught:
        addrow.prepare(matrix_mod.load(path), proposal, "0.8.3")
    text = caught.value.render()
    assert ".add-row-" not in text and str(path.parent) not in text, text
    assert "python 3.9 is not packaged by bookworm" in text and "3.9" in text.splitlines()[0], text
    assert "--python" in text, text  # the fix says what to pass to add-row, not how to edit a file
    assert not list(path.parent.glob(".*add-row*"))  # the probe is gone
