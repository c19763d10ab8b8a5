"""stages/coverage: the verdict per GPU (NVIDIA's compatibility rules) and the per-content cache of `read`."""

from __future__ import annotations

import itertools
import shutil

import pytest

from imagematrix.in_image import preflight
from imagematrix.model.errors import RuntimeFailure
from imagematrix.stages import coverage
from imagematrix.tools import cuobjdump
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "cuda"
# what cuobjdump lists in each fixture (tests/process/tools/test_cuobjdump.py checks it on the real files)
FOUND = {
    "libsass.so": (frozenset({"sm_75", "sm_80", "sm_90"}), frozenset()),
    "libptx.so": (frozenset(), frozenset({"compute_80"})),
    "libboth.so": (frozenset({"sm_80"}), frozenset({"compute_90"})),
    "libnone.so": (frozenset(), frozenset()),
}
GPUS = {"V100": (7, 0), "T4": (7, 5), "A100": (8, 0), "H100": (9, 0), "B200": (10, 0), "RTX 5090": (12, 0)}
N, J, X = coverage.NATIVE, coverage.PTX_JIT, coverage.NONE
TABLE = {  # fixture -> verdict on V100, T4, A100, H100, B200, RTX 5090
    "libsass.so": (X, N, N, N, X, X),
    "libptx.so": (X, X, J, J, J, J),
    "libboth.so": (X, X, N, J, J, J),
    "libnone.so": (X, X, X, X, X, X),
}


@pytest.mark.parametrize("name", TABLE)
def test_verdict_table(name):
    assert {gpu: coverage.verdict(FOUND[name], cap) for gpu, cap in GPUS.items()} == dict(zip(GPUS, TABLE[name], strict=True))


@pytest.mark.parametrize("sass, ptx, cap, expected", [
    ({"sm_80"}, (), (8, 6), N),  # same major, newer minor
    ({"sm_86"}, (), (8, 0), X),  # never an older minor
    ({"sm_90a"}, (), (9, 0), N),  # arch-specific: exactly that architecture
    ({"sm_90a"}, (), (10, 0), X),
    ({"sm_100a"}, (), (10, 3), X),  # not even a newer minor of the same major
    ({"sm_100f"}, (), (10, 3), N),  # family-specific: 10.0 and 10.3
    ({"sm_100f"}, (), (10, 0), N),
    ({"sm_103f"}, (), (10, 0), X),
    ({"sm_100f"}, (), (12, 0), X),
    ({"sm_120f"}, (), (12, 1), N),
    ((), {"compute_90a"}, (9, 0), J),
    ((), {"compute_90a"}, (10, 0), X),  # arch-specific PTX is not forward compatible
    ((), {"compute_100f"}, (10, 3), J),
    ((), {"compute_100f"}, (12, 0), X),  # family PTX stays in its family
    ((), {"compute_75"}, (12, 1), J),  # plain PTX: any newer GPU
    ((), {"compute_121"}, (12, 0), X),
    ({"sm_90a"}, {"compute_80"}, (9, 0), N),  # machine code wins over PTX
    ({"sm_90a"}, {"compute_80"}, (10, 0), J),
])
def test_arch_and_family_specific_rules(sass, ptx, cap, expected):
    assert coverage.verdict((frozenset(sass), frozenset(ptx)), cap) == expected


def test_agrees_with_the_preflight_every_image_carries():
    """Where code runs at all; and native or JIT for plain entries."""
    entries = [f"{kind}_{arch}{suffix}" for kind in ("sm", "compute") for arch in (70, 75, 80, 86, 90, 100, 103, 120)
               for suffix in ("", "a", "f")]
    caps = [(7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (10, 3), (11, 0), (12, 0), (12, 1)]
    for entry, cap in itertools.product(entries, caps):
        found = (frozenset({entry}), frozenset()) if entry.startswith("sm") else (frozenset(), frozenset({entry}))
        said = preflight.coverage([entry], cap)
        assert (coverage.verdict(found, cap) == X) == (said is None), (entry, cap, said)
        if said and entry[-1].isdigit():  # (the preflight calls a matching compute_XYa or f entry "exact", not PTX)
            assert coverage.verdict(found, cap) == (J if "(PTX" in said else N), (entry, cap, said)


def test_an_unknown_architecture_is_a_value_error():
    with pytest.raises(ValueError, match="sm_9"):
        coverage.verdict((frozenset({"sm_9"}), frozenset()), (9, 0))


@pytest.fixture
def counted(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "cache"))
    calls = []

    def list_archs(path):
        calls.append(path)
        return FOUND[path.name]

    monkeypatch.setattr(cuobjdump, "list_archs", list_archs)
    return calls


def test_read_caches_per_file_content(tmp_path, counted):
    files = [FIXTURES / name for name in FOUND]
    assert coverage.read(files) == {FIXTURES / name: found for name, found in FOUND.items()}
    assert len(counted) == 4
    assert coverage.read(map(str, files)) == {FIXTURES / name: found for name, found in FOUND.items()}
    assert len(counted) == 4  # all from the cache
    copy = tmp_path / "elsewhere" / "libptx.so"
    copy.parent.mkdir()
    shutil.copyfile(FIXTURES / "libptx.so", copy)
    assert coverage.read([copy]) == {copy: FOUND["libptx.so"]}
    assert len(counted) == 4  # same content, another path: the same entry
    assert len(list((tmp_path / "cache" / "coverage").rglob("*.json"))) == 4


def test_a_damaged_cache_entry_is_read_again(tmp_path, counted):
    coverage.read([FIXTURES / "libboth.so"])
    (entry,) = (tmp_path / "cache" / "coverage").rglob("*.json")
    entry.write_text('{"sass": ["rm -rf"], "ptx": []}')
    assert coverage.read([FIXTURES / "libboth.so"]) == {FIXTURES / "libboth.so": FOUND["libboth.so"]}
    assert len(counted) == 2
    entry.write_text("{not json")
    assert coverage.read([FIXTURES / "libboth.so"]) == {FIXTURES / "libboth.so": FOUND["libboth.so"]}
    assert len(counted) == 3


def test_read_of_a_missing_file_names_it(tmp_path, counted):
    with pytest.raises(RuntimeFailure, match="cannot read .*absent.so"):
        coverage.read([tmp_path / "absent.so"])
