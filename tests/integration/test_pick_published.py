"""`build.py pick` against the real embedded registry: a tiny image pushed under one row's final tag, in a throwaway
namespace, makes that row published and leaves the others not published; --only-published picks it."""

from __future__ import annotations

import pytest

from imagematrix.assist import pick
from imagematrix.model import labels, tags
from imagematrix.model import matrix as matrix_mod
from imagematrix.tools import docker, host
from tests import support
from tests.conftest import ROOT, push_tiny_image

M = matrix_mod.load(ROOT / "matrix.yaml")


@pytest.fixture
def pick_ns():
    """A fresh namespace of the embedded registry, so no real tag is touched."""
    if not docker.daemon_running() or not host.registry_up():
        pytest.skip("needs a running Docker daemon and the embedded registry: run `python build.py setup`")
    return support.namespace("test-pick")


def test_pick_says_which_tag_is_published_and_only_published_picks_it(run, pick_ns):
    ranked = pick.pick(M, "H100").candidates
    best, published = ranked[0].row.id, ranked[2].row.id
    push_tiny_image(docker.cli(), f"{tags.repository(pick_ns)}:{published}", {labels.ROW: published})

    plain = run("pick", "--gpu", "H100", "--registry", pick_ns)
    assert plain.code == 0, plain
    out = " ".join(plain.out.split())
    assert f"best: {best}" in out
    assert (f"docker pull {pick_ns}/verl:{best} not published in {pick_ns}: build it with "
            f"`python build.py build --row {best} --registry {pick_ns}`") in out

    wish = ("--vllm", ranked[2].row.vllm, "--verl", ranked[2].row.verl)
    assert pick.pick(M, "H100", vllm=wish[1], verl=wish[3]).best.row.id == published
    exact = run("pick", "--gpu", "H100", *wish, "--registry", pick_ns)
    assert exact.code == 0, exact
    assert f"docker pull {pick_ns}/verl:{published}\n  published in {pick_ns}\n" in exact.out

    strict = run("pick", "--gpu", "H100", "--only-published", "--registry", pick_ns)
    assert strict.code == 0, strict
    out = " ".join(strict.out.split())
    assert f"best published: {published}" in out
    assert f"docker pull {pick_ns}/verl:{published} published in {pick_ns}" in out
    assert f"fit better, not published in {pick_ns}: {best}, {ranked[1].row.id}" in out


def test_only_published_exits_1_when_no_fitting_row_is_published(run, pick_ns):
    result = run("pick", "--gpu", "H100", "--only-published", "--registry", pick_ns)
    assert result.code == 1, result
    assert "docker pull" not in result.out
    assert "nothing published fits" in result.err and "python build.py build --row" in " ".join(result.err.split())


def test_an_unreachable_registry_is_one_line_and_the_pick_is_still_printed(run):
    result = run("pick", "--gpu", "H100", "--registry", "127.0.0.1:9/nothing-listens-here")
    assert result.code == 0, result
    assert "publication unknown" in result.out and "docker pull 127.0.0.1:9/nothing-listens-here/verl:" in result.out
    assert "unreachable" in result.err and result.err.count("\n") == 1 and "Traceback" not in result.err
    assert run("pick", "--gpu", "H100", "--only-published", "--registry", "127.0.0.1:9/nothing-listens-here").code == 1


def test_pick_offers_verify_only_once_the_registry_holds_a_signature(run, pick_ns):
    """An unsigned published image (what the README's main job builds): no `verify --key` line, which could only fail.
    Then a tag `sha256-<digest>.sig` beside it, the name cosign gives a signature (pushed here as a stand-in: what pick
    reads is only whether that tag exists): the verify line appears."""
    from imagematrix.tools import registry as registry_api

    best = pick.pick(M, "H100").best.row.id
    repository = tags.repository(pick_ns)
    push_tiny_image(docker.cli(), f"{repository}:{best}", {labels.ROW: best})
    unsigned = run("pick", "--gpu", "H100", "--registry", pick_ns)
    assert unsigned.code == 0, unsigned
    assert "not signed" in unsigned.out and "--key cosign.pub" not in unsigned.out

    digest = registry_api.digest(repository, best)
    push_tiny_image(docker.cli(), f"{repository}:sha256-{digest.removeprefix('sha256:')}.sig", {})
    signed = run("pick", "--gpu", "H100", "--registry", pick_ns)
    assert signed.code == 0, signed
    assert f"python build.py verify {repository}:{best} --key cosign.pub" in " ".join(signed.out.split())
