"""The tests of tests/unit/knowledge/test_patches.py that start a process, serve HTTP or kill:
the process tier. The pure ones stay there."""

from __future__ import annotations

import json

from tests.support import fake_site, run_applier
from tests.unit.knowledge.test_patches import ALL


def test_in_image_applier_refuses_another_version(tmp_path):
    site = fake_site(tmp_path, "0.7.3", {})
    patch_json = tmp_path / "patches.json"
    patch_json.write_text(json.dumps([p.for_image("0.7.2") for p in ALL]))
    proc = run_applier(site, patch_json, tmp_path / "r.json")
    assert proc.returncode == 1 and "vllm 0.7.3 installed, the patch was selected for 0.7.2" in proc.stderr
