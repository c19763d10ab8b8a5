"""One bad value under `defaults:` is reported once, not again as a "missing required key" in every row."""

from __future__ import annotations

import pytest

from imagematrix.model import matrix
from imagematrix.model.errors import InputErrors
from tests.conftest import GOOD_MATRIX, GOOD_ROW


@pytest.mark.parametrize(("bad", "said"), [("python: 3.1", "quote it"), ('python: "abc"', "not a valid Python version"),
                                           ("base: nvidia/cuda", "not a valid image reference")])
def test_a_bad_default_is_one_error(write_matrix, bad, said):
    key = bad.split(":")[0]
    good = next(line for line in GOOD_MATRIX.splitlines() if line.startswith(f"  {key}:"))
    text = GOOD_MATRIX.replace(good, f"  {bad}") + GOOD_ROW + GOOD_ROW.replace('"0.7.2"', '"0.7.3"')
    with pytest.raises(InputErrors) as caught:
        matrix.load(write_matrix(text))
    errors = caught.value.errors
    assert len(errors) == 1, caught.value.render()
    assert said in errors[0].message and errors[0].where.endswith(f"defaults, field {key}"), caught.value.render()


def test_a_row_still_reports_a_key_that_no_default_covers(write_matrix):
    """The other defaults still apply (base stays), and a key missing for another reason is still reported."""
    text = GOOD_MATRIX.replace('  python: "3.11"', '  python: "abc"') + GOOD_ROW.replace('    cuda: "12.4"\n', "")
    with pytest.raises(InputErrors) as caught:
        matrix.load(write_matrix(text))
    messages = [e.message for e in caught.value.errors]
    assert messages[0].startswith("'abc' is not a valid Python version"), messages
    assert messages[1:] == ["missing required key `cuda`"], messages
