"""wheelhouse.py pack's parts: wheels first-fit into parts of at most --part-mib, a larger one cut into chunks."""

from __future__ import annotations

from pathlib import Path

from imagematrix.suites.gpu import wheelhouse


def test_wheels_go_first_fit_into_parts_and_a_large_one_is_cut_into_chunks():
    big, mid, small = Path("big.whl"), Path("mid.whl"), Path("small.whl")
    parts = wheelhouse.first_fit([(big, 25), (mid, 6), (small, 4)], limit=10)
    assert parts == [[(big, 0, 10)], [(big, 10, 10)], [(big, 20, 5), (small, 0, 4)], [(mid, 0, 6)]]
    assert all(sum(length for _, _, length in part) <= 10 for part in parts)


def test_nothing_to_carry_is_one_empty_part():
    assert wheelhouse.first_fit([], limit=10) == [[]]
