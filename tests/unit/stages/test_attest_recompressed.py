"""The provenance of a zstd copy (promote --compression zstd --sign-key): the build's record plus the recompression."""

from __future__ import annotations

from imagematrix.stages import attest

BUILT = "r.example/ns/verl@sha256:" + "a" * 64
PREDICATE = {
    "buildDefinition": {"externalParameters": {"row": "row1"}, "internalParameters": {"image": "r.example/x"},
                        "resolvedDependencies": [{"uri": "locks/row1.txt", "digest": {"sha256": "b" * 64}}]},
    "runDetails": {"metadata": {"invocationId": f"row1@sha256:{'a' * 64}"}},
}


def test_the_copy_keeps_the_builds_record_and_names_what_it_was_recompressed_from():
    out = attest.recompressed(PREDICATE, source=BUILT, compression="zstd", level=3, tool="skopeo 1.9.3",
                              finished="2025-01-01T00:00:00Z")
    definition = out["buildDefinition"]
    assert definition["resolvedDependencies"][0] == PREDICATE["buildDefinition"]["resolvedDependencies"][0]
    assert definition["resolvedDependencies"][1]["uri"] == BUILT
    assert definition["resolvedDependencies"][1]["digest"] == {"sha256": "a" * 64}
    assert definition["internalParameters"][attest.RECOMPRESSION] == {
        "from": BUILT, "layers": "zstd level 3", "tool": "skopeo 1.9.3", "finishedOn": "2025-01-01T00:00:00Z"}
    assert definition["externalParameters"] == {"row": "row1"} and out["runDetails"] == PREDICATE["runDetails"]
    assert len(PREDICATE["buildDefinition"]["resolvedDependencies"]) == 1  # the build's record is not changed


def test_built_digest_is_the_invocations():
    assert attest.built_digest(PREDICATE) == "sha256:" + "a" * 64
    assert attest.built_digest({}) is None
