"""Fixtures of the integration tests: they use a real Docker daemon, the embedded registry or PyPI, and skip,
saying so, where those are missing."""

from __future__ import annotations

import pytest

from imagematrix.tools import docker, host
from tests import support


@pytest.fixture
def registry_ns():
    """A fresh namespace in the embedded registry, removed when the session ends (tests/conftest.py)."""
    if not docker.daemon_running() or not host.registry_up():
        pytest.skip("needs a running Docker daemon and the embedded registry: run `python build.py setup`")
    return support.namespace("ci")
