"""Tests remove what they create (issue 27): a namespace from tests.support.namespace, pushed to, is gone from the
embedded registry and from the daemon's tags after remove_namespaces (what the session's end runs, tests/conftest.py),
and a real namespace beside it is untouched. The real daemon and the real embedded registry."""

from __future__ import annotations

import subprocess

import pytest

from imagematrix.stages import publish
from imagematrix.tools import docker, host
from tests import support
from tests.conftest import push_tiny_image

TAG = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"


def test_a_namespace_pushed_to_is_removed_from_registry_and_daemon():
    if not docker.daemon_running() or not host.registry_up():
        pytest.skip("needs a running Docker daemon and the embedded registry: run `python build.py setup`")
    assert support.registry_storage() is not None, "the embedded registry's process and storage were not found"
    name = support.namespace("cleanup")
    keep = support.namespace("cleanup-keep")
    support.CREATED_NAMESPACES.remove(keep)  # stands for a namespace this session did not create
    try:
        for ns in (name, keep):
            push_tiny_image(docker.cli(), f"{ns}/verl:{TAG}", {"io.imagematrix.test": "cleanup"})
            assert publish.remote_labels(ns, TAG) == {"io.imagematrix.test": "cleanup"}
            subprocess.run([docker.cli(), "pull", "-q", f"{ns}/verl:{TAG}"], check=True, capture_output=True)
        removed = support.remove_namespaces([name])
        assert name in removed and f"{name}/verl:{TAG}" in removed
        assert not (support.registry_storage() / name.split("/", 1)[1]).exists()
        assert publish.remote_labels(name, TAG) is None
        images = subprocess.run([docker.cli(), "images", "--format", "{{.Repository}}"], capture_output=True,
                                text=True).stdout.split()
        assert f"{name}/verl" not in images and f"{keep}/verl" in images
        assert publish.remote_labels(keep, TAG) == {"io.imagematrix.test": "cleanup"}
    finally:
        support.remove_namespaces([keep])
    assert publish.remote_labels(keep, TAG) is None
