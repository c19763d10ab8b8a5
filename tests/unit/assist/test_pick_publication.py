"""`build.py pick` asks the registry whether the chosen row's final tag is published (a fake lookup here, no network):
the pull line says so, --only-published chooses the best published row, an unreachable registry is one line."""

from __future__ import annotations

import pytest

from imagematrix.assist import pick
from imagematrix.model import matrix as matrix_mod
from imagematrix.model import tags
from imagematrix.model.errors import RuntimeFailure
from imagematrix.stages import publish
from tests.conftest import ROOT

M = matrix_mod.load(ROOT / "matrix.yaml")
OTHER = "registry.example.com:5000/team"


def lookup_of(published: set[str], calls: list | None = None):
    """A stand-in for publish.remote_labels: labels for the tags in `published`, None for the others."""

    def lookup(registry: str, tag: str) -> dict | None:
        if calls is not None:
            calls.append((registry, tag))
        return {"io.imagematrix.row": tag} if tag in published else None

    return lookup


def unsigned(registry: str, tag: str) -> bool | None:
    """A stand-in for publish.remote_signed: no signature (no network in these tests)."""
    return False


def unreachable(registry: str, tag: str) -> dict | None:
    raise RuntimeFailure("registry 127.0.0.1:9 is unreachable (http://127.0.0.1:9): refused;\n"
                         "check the address, or start the embedded registry with `python build.py setup`")


@pytest.fixture
def h100():
    result = pick.pick(M, "H100")
    assert len(result.candidates) >= 3
    return result


def test_a_published_best_row_is_said_so(h100):
    calls = []
    pub = pick.publication(h100, tags.DEFAULT_REGISTRY, lookup=lookup_of({h100.best.row.id}, calls), signature=unsigned)
    assert (pub.choice, pub.published, pub.checked) == (h100.best, True, {h100.best.row.id: True})
    assert calls == [(tags.DEFAULT_REGISTRY, h100.best.row.id)]  # the final tag: the row id, in the given registry
    assert pick.publication_line(pub) == f"published in {tags.DEFAULT_REGISTRY}"


def test_an_unpublished_best_row_is_still_the_pick_with_the_build_command(h100):
    pub = pick.publication(h100, tags.DEFAULT_REGISTRY, lookup=lookup_of({h100.candidates[1].row.id}), signature=unsigned)
    assert (pub.choice, pub.published) == (h100.best, False)  # without only_published the ranking is untouched
    assert pick.publication_line(pub) == (f"not published in {tags.DEFAULT_REGISTRY}: build it with "
                                          f"`python build.py build --row {h100.best.row.id}`")
    elsewhere = pick.publication(h100, OTHER, lookup=lookup_of(set()), signature=unsigned)
    assert pick.publication_line(elsewhere).endswith(
        f"`python build.py build --row {h100.best.row.id} --registry {OTHER}`")


def test_only_published_takes_the_best_published_row_in_rank_order(h100):
    third, last = h100.candidates[2], h100.candidates[-1]
    calls = []
    pub = pick.publication(h100, OTHER, only_published=True, lookup=lookup_of({third.row.id, last.row.id}, calls), signature=unsigned)
    assert (pub.choice, pub.published) == (third, True)
    assert list(pub.checked) == [c.row.id for c in h100.candidates[:3]]  # stops at the first published one
    assert list(pub.checked.values()) == [False, False, True]
    assert [tag for _, tag in calls] == list(pub.checked)


def test_only_published_with_nothing_published_chooses_nothing_and_names_the_fix(h100):
    pub = pick.publication(h100, OTHER, only_published=True, lookup=lookup_of(set()), signature=unsigned)
    assert (pub.choice, pub.published) == (None, False)
    assert len(pub.checked) == len(h100.candidates)
    line = pick.none_published_line(h100, pub)
    assert f"none of the {len(h100.candidates)} rows that fit is published in {OTHER}" in line
    assert f"`python build.py build --row {h100.best.row.id} --registry {OTHER}`" in line
    assert "--only-published" in line
    alone = pick.pick(M, "H100", vllm="0.7.2")
    assert len(alone.candidates) == 1
    assert pick.none_published_line(alone, pick.publication(alone, OTHER, only_published=True, lookup=lookup_of(set()))) \
        .startswith(f"the one row that fits is not published in {OTHER}; fix: build the best with")


def test_an_unreachable_registry_leaves_the_pick_with_publication_unknown(h100):
    for only in (False, True):
        pub = pick.publication(h100, OTHER, only_published=only, lookup=unreachable, signature=unsigned)
        assert (pub.choice, pub.published) == (h100.best, None)
        assert "\n" not in pub.problem and "unreachable" in pub.problem and "build.py setup" in pub.problem
        assert pick.publication_line(pub).startswith("publication unknown")


def test_nothing_fits_asks_no_registry():
    result = pick.pick(M, "A100", driver="450.80.02")
    assert result.best is None
    pub = pick.publication(result, OTHER, only_published=True, lookup=unreachable, signature=unsigned)
    assert (pub.choice, pub.published, pub.checked) == (None, None, {})


# the command, with publish.remote_labels (the default lookup) replaced


@pytest.fixture
def registry_says(monkeypatch):
    def install(lookup):
        monkeypatch.setattr(publish, "remote_labels", lookup)

    return install


def test_cli_marks_an_unpublished_pull_line_and_exits_0(run, registry_says, h100):
    registry_says(lookup_of(set()))
    result = run("pick", "--gpu", "H100")
    assert result.code == 0, result
    out = " ".join(result.out.split())
    pull = f"docker pull {tags.repository(tags.DEFAULT_REGISTRY)}:{h100.best.row.id}"
    assert f"{pull} not published in {tags.DEFAULT_REGISTRY}: build it with " \
           f"`python build.py build --row {h100.best.row.id}`" in out


def test_cli_says_published_next_to_the_pull_line(run, registry_says, h100):
    registry_says(lookup_of({h100.best.row.id}))
    result = run("pick", "--gpu", "H100", "--registry", OTHER)
    assert result.code == 0, result
    assert f"docker pull {OTHER}/verl:{h100.best.row.id}\n  published in {OTHER}\n" in result.out


def test_cli_only_published_picks_the_best_published_row(run, registry_says, h100):
    chosen = h100.candidates[2].row.id
    registry_says(lookup_of({chosen}))
    result = run("pick", "--gpu", "H100", "--only-published")
    assert result.code == 0, result
    out = " ".join(result.out.split())
    assert f"best published: {chosen}" in out and f"docker pull {tags.repository(tags.DEFAULT_REGISTRY)}:{chosen}" in out
    assert f"fit better, not published in {tags.DEFAULT_REGISTRY}: {h100.best.row.id}, {h100.candidates[1].row.id}" \
        in out
    assert "not published in" not in out.split("docker pull")[1]


def test_cli_only_published_with_nothing_published_exits_1_with_the_fix(run, registry_says, h100):
    registry_says(lookup_of(set()))
    result = run("pick", "--gpu", "H100", "--only-published")
    assert result.code == 1, result
    assert "docker pull" not in result.out
    err = " ".join(result.err.split())
    assert "nothing published fits" in err and f"python build.py build --row {h100.best.row.id}" in err


def test_cli_unreachable_registry_is_one_line_and_the_pick_is_still_printed(run, registry_says, h100):
    registry_says(unreachable)
    result = run("pick", "--gpu", "H100")
    assert result.code == 0, result
    assert f"docker pull {tags.repository(tags.DEFAULT_REGISTRY)}:{h100.best.row.id}\n  publication unknown" \
        in result.out
    assert result.err.count("\n") == 1 and "unreachable" in result.err and "Traceback" not in result.err
    strict = run("pick", "--gpu", "H100", "--only-published")
    assert strict.code == 1 and "publication unknown" in strict.out
    assert "--only-published needs an answer from the registry" in strict.err and "Traceback" not in strict.err


@pytest.mark.parametrize(("signed", "expected"), [
    (True, "python build.py verify"), (False, "not signed"), (None, ""),
])
def test_verify_is_offered_only_for_a_signed_published_image(signed, expected):
    """The main job builds unsigned images, for which `verify --key` can only fail: pick offers it only when the
    registry holds a cosign signature of the image (a stand-in for publish.remote_signed here)."""
    result = pick.pick(M, "H100")
    pub = pick.publication(result, OTHER, lookup=lookup_of({result.best.row.id}),
                           signature=lambda registry, tag: signed)
    assert pub.published is True and pub.signed is signed
    line = pick.verify_line(tags.repository(OTHER), pub.choice.row, pub.signed)
    assert line.startswith(expected) if expected else line == ""
    if signed is False:
        assert "build.py verify " not in line.replace("`build.py verify`", "")


def test_a_signature_lookup_that_fails_leaves_signed_unknown():
    result = pick.pick(M, "H100")

    def broken(registry: str, tag: str) -> bool | None:
        raise RuntimeFailure("registry.example.com: connection refused")

    pub = pick.publication(result, OTHER, lookup=lookup_of({result.best.row.id}), signature=broken)
    assert pub.published is True and pub.signed is None
