"""Source patches against the real files of the wheels on PyPI, at every release each patch's range admits.

Nothing here names a version: each patch in dockerfiles/patches/ declares its package and its range (`versions`),
and the index says which releases of that package exist. A patch is applied to its file in every release of its
range, and checked to find no anchor in the first release after its range (a range ends where upstream changed the
code; see docs/contributing/patches.md). A new patch, or a wider range, is tested without editing this file.

Only the patched files are read, by HTTP range requests into the wheels (a few hundred KB instead of 260 MB per
wheel), and cached under ~/.cache/imagematrix. Nothing of the patched packages is committed.
"""

from __future__ import annotations

import contextlib
import functools
import json
from itertools import groupby

import pytest
from packaging.version import Version

from imagematrix.in_image import patch_apply
from imagematrix.knowledge import patches
from imagematrix.tools import pypi
from tests.support import fake_site, run_applier

ALL = patches.load()
# patches that share a package and a range go into the same images: the in-image applier gets them together
GROUPS = [list(group) for _, group in groupby(sorted(ALL, key=lambda p: (p.package, p.versions)),
                                              key=lambda p: (p.package, p.versions))]


def _group_id(group: list[patches.Patch]) -> str:
    return f"{group[0].package}{group[0].versions}"


@functools.cache
def _released(package: str) -> tuple[Version, ...]:
    """Releases of the package with a wheel on the index, oldest first (pre-releases left out)."""
    return tuple(reversed(pypi.versions(package)))


def covered(patch: patches.Patch) -> list[str]:
    """Every release of the patch's package that its range admits, oldest first."""
    found = [str(v) for v in _released(patch.package) if patch.applies_to(str(v))]
    assert found, f"{patch.id}: no release of {patch.package} on the index is in its range {patch.versions}"
    return found


def first_after(patch: patches.Patch) -> str | None:
    """The first release after the newest one the range admits (None: there is none yet)."""
    newest = Version(covered(patch)[-1])
    return next((str(v) for v in _released(patch.package) if v > newest), None)


def package_file(package: str, version: str, path: str) -> str:
    return pypi.wheel_file(package, version, path).decode()


@contextlib.contextmanager
def at(what: str):
    """A failure inside names the release it happened at."""
    try:
        yield
    except (AssertionError, patch_apply.PatchError) as exc:
        raise AssertionError(f"at {what}: {exc}") from exc


@pytest.mark.network
@pytest.mark.parametrize("patch", ALL, ids=lambda p: p.id)
def test_patch_applies_once_to_every_release_of_its_range(patch):
    for version in covered(patch):
        with at(f"{patch.package} {version}"):
            original = package_file(patch.package, version, patch.file)
            patched = patch_apply.apply_text(original, patch.model_dump())
            assert patched != original
            assert patch_apply.verify_text(patched, patch.model_dump()) is None
            assert patch_apply.verify_text(original, patch.model_dump()) is not None
            compile(patched, patch.file, "exec")
            # applying twice fails loudly: the anchor is gone
            with pytest.raises(patch_apply.PatchError, match="anchor found 0 times"):
                patch_apply.apply_text(patched, patch.model_dump())


def _verl_patch(patch_id: str) -> patches.Patch:
    found = [p for p in ALL if p.id == patch_id]
    assert found, f"the patch {patch_id} verl needs is gone: remove its check here with it"
    return found[0]


@pytest.mark.network
def test_patches_do_what_verl_needs():
    """What the three vLLM 0.7 patches are for (dockerfiles/patches/vllm-0.7-verl.yaml), at every release of each
    one's range."""
    state_patch = _verl_patch("vllm-parallel-state-world-size")
    for version in covered(state_patch):
        with at(f"vllm {version}"):
            state = patch_apply.apply_text(package_file("vllm", version, "vllm/distributed/parallel_state.py"),
                                           state_patch.model_dump())
            assert "is not equal to" not in state and "world_size !=" not in state.replace("\n", " ").replace("  ", "")
    launcher_patch = _verl_patch("vllm-external-launcher-local-rank")
    for version in covered(launcher_patch):
        with at(f"vllm {version}"):
            launcher = patch_apply.apply_text(package_file("vllm", version, "vllm/executor/uniproc_executor.py"),
                                              launcher_patch.model_dump())
            body = launcher[launcher.index("class ExecutorWithExternalLauncher"):]
            assert 'local_rank = int(os.environ["LOCAL_RANK"])' in body and "local_rank = rank\n" not in body
    weights_patch = _verl_patch("vllm-pt-weights-no-empty-cache")
    for version in covered(weights_patch):
        with at(f"vllm {version}"):
            weights = patch_apply.apply_text(
                package_file("vllm", version, "vllm/model_executor/model_loader/weight_utils.py"),
                weights_patch.model_dump())
            start, end = patch_apply.scope_span(weights, "pt_weights_iterator")
            assert "torch.cuda.empty_cache()" not in weights[start:end]
            assert "del state" in weights[start:end]


@pytest.mark.network
@pytest.mark.parametrize("patch", ALL, ids=lambda p: p.id)
def test_anchor_is_gone_in_the_first_release_after_the_range(patch):
    """Upstream changed the code in the release after the range (for the vLLM 0.7 patches, 0.7.3): the anchor
    finds nothing there, and no row picks the patch up."""
    after = first_after(patch)
    if after is None:
        pytest.skip(f"{patch.id}: no release of {patch.package} after its range {patch.versions} yet")
    assert not patch.applies_to(after)
    with pytest.raises(patch_apply.PatchError, match="0 times"):
        patch_apply.apply_text(package_file(patch.package, after, patch.file), patch.model_dump())


@pytest.mark.network
@pytest.mark.parametrize("group", GROUPS, ids=_group_id)
def test_in_image_applier_patches_installed_files_and_records_them(tmp_path, group):
    """The applier as the Dockerfile runs it, at the newest release of the range: a package found through
    importlib.metadata, a record written."""
    package, version = group[0].package, covered(group[0])[-1]
    files = {p.file: package_file(package, version, p.file) for p in group}
    site = fake_site(tmp_path, version, files, package)
    patch_json = tmp_path / "patches.json"
    patch_json.write_text(json.dumps([p.for_image(version) for p in group]))
    record = tmp_path / "out" / "patches-applied.json"
    proc = run_applier(site, patch_json, record)
    assert proc.returncode == 0, proc.stderr
    applied = json.loads(record.read_text())
    assert [r["id"] for r in applied] == [p.id for p in group]
    assert all(r["sha256_before"] != r["sha256_after"] for r in applied)
    verify = run_applier(site, patch_json, tmp_path / "unused.json", "--verify")
    assert verify.returncode == 0, verify.stderr


@pytest.mark.network
@pytest.mark.parametrize("group", GROUPS, ids=_group_id)
def test_in_image_applier_fails_loudly_when_the_anchor_is_missing(tmp_path, group):
    package, version, after = group[0].package, covered(group[0])[-1], first_after(group[0])
    if after is None:
        pytest.skip(f"no release of {package} after the range {group[0].versions} yet")
    files = {p.file: package_file(package, after, p.file) for p in group}
    site = fake_site(tmp_path, version, files, package)  # claims the newest release of the range, carries the next one's code
    patch_json = tmp_path / "patches.json"
    patch_json.write_text(json.dumps([p.for_image(version) for p in group]))
    record = tmp_path / "patches-applied.json"
    proc = run_applier(site, patch_json, record)
    assert proc.returncode == 1
    assert proc.stderr.count("PATCH FAILED") == len(group) and "anchor found 0 times" in proc.stderr
    assert not record.exists()
