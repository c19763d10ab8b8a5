"""Cache hits across rows (issue 19, item 11): a row imports the shared caches of its os and torch stages, which
every row with the same stages exports, beside its own buildcache-<row>."""

from __future__ import annotations

import json
from pathlib import Path

from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import builder, render

ROOT = Path(__file__).resolve().parents[3]


def _rendered(*prefixes: str) -> list[render.Rendered]:
    m = matrix_mod.load(ROOT / "matrix.yaml")
    rows = [next(r for r in m.rows if r.id.startswith(p)) for p in prefixes]
    return render.render(m, rows)


def test_rows_with_the_same_torch_stage_share_its_key_and_rows_on_one_base_and_python_share_os():
    same_a, same_b, other, py312 = _rendered("verl0.7.1-vllm0.12.0", "verl0.8.0-vllm0.12.0", "verl0.3.0",
                                             "verl0.9.1-vllm0.31.0-torch2.13.0-cu130-py312")
    assert same_a.files["base.txt"] == same_b.files["base.txt"]
    assert same_a.stage_keys() == same_b.stage_keys()
    assert other.stage_keys()["os"] == same_a.stage_keys()["os"] != py312.stage_keys()["os"]
    assert other.stage_keys()["torch"] != same_a.stage_keys()["torch"]


def test_the_bake_file_imports_the_sibling_stage_caches_and_exports_them_from_cache_only_targets():
    item = _rendered("verl0.7.1-vllm0.12.0")[0]
    row = item.row.id
    cache = f"r/verl:buildcache-{row}"
    keys = item.stage_keys()
    bake = builder.bake_definition([(item, "r/verl:c")], Path("/ctx"), {"ca-cert": Path("/s/ca")}, {row: cache},
                                   {"BASE_REGISTRY": "r"}, shared_stages=True)
    name = row.replace(".", "_")
    assert sorted(bake["target"]) == [name, f"{name}__os", f"{name}__torch"] == bake["group"]["default"]["targets"]
    main = bake["target"][name]
    torch_ref, os_ref = f"r/verl:buildcache-torch-{keys['torch']}", f"r/verl:buildcache-os-{keys['os']}"
    assert main["cache-from"] == [f"type=registry,ref={ref}" for ref in (cache, torch_ref, os_ref)]
    assert main["cache-to"] == [f"type=registry,ref={cache},mode=max"]
    assert main["output"] == ["type=docker"] and main["tags"] == ["r/verl:c"]
    torch = bake["target"][f"{name}__torch"]
    assert torch["target"] == "torch" and torch["output"] == ["type=cacheonly"]
    assert torch["cache-to"] == [f"type=registry,ref={torch_ref},mode=max"]
    assert torch["cache-from"] == [f"type=registry,ref={torch_ref}", f"type=registry,ref={os_ref}"]
    os_stage = bake["target"][f"{name}__os"]
    assert os_stage["target"] == "os" and os_stage["cache-to"] == [f"type=registry,ref={os_ref},mode=max"]
    for target in bake["target"].values():  # the same inputs: the stage targets are the same solve as the row's
        assert target["context"] == main["context"] and target["args"] == {"BASE_REGISTRY": "r"}
        assert target["secret"] == main["secret"]
        assert "tags" not in target or target is main


def test_a_sibling_row_names_the_same_torch_cache():
    a, b = _rendered("verl0.7.1-vllm0.12.0", "verl0.8.0-vllm0.12.0")
    refs = [builder.stage_cache_refs(item, f"r/verl:buildcache-{item.row.id}") for item in (a, b)]
    assert refs[0] == refs[1]


def test_the_build_command_with_a_cache_names_the_stage_targets_and_does_not_load_them(tmp_path, monkeypatch):
    item = _rendered("verl0.3.0")[0]
    ran = []
    monkeypatch.setattr(builder.docker, "cli", lambda: "docker")
    monkeypatch.setattr(builder.docker, "has_buildx", lambda cli: True)
    monkeypatch.setattr(builder.docker, "run_logged", lambda cmd, log, **kw: ran.append(cmd) or 0)
    name = item.row.id.replace(".", "_")
    builder.build(item, "r/verl:c", tmp_path, {}, tmp_path / "logs" / "build.log", cache=f"r/verl:buildcache-{item.row.id}")
    assert "--load" not in ran[-1] and ran[-1][-3:] == [name, f"{name}__os", f"{name}__torch"]
    assert len(json.loads((tmp_path / "logs" / "bake.json").read_text())["target"]) == 3
    builder.build(item, "r/verl:c", tmp_path, {}, tmp_path / "logs" / "build.log")
    assert ran[-1][-2:] == ["--load", name], "without a cache: one target, loaded into the daemon"
    assert "cache-from" not in json.loads((tmp_path / "logs" / "bake.json").read_text())["target"][name]
