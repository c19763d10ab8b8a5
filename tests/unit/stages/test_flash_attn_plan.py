"""What `plan` (and CI's matrix) says about each flash-attn row's wheel, without asking a registry."""

from __future__ import annotations

from imagematrix.knowledge.flash_attn import wheel_spec
from imagematrix.model import matrix
from imagematrix.stages import flash_attn, plan


def test_each_flash_attn_row_names_its_source():
    m = matrix.load()
    by_fa = {r.flash_attn: r for r in m.rows if r.flash_attn}
    source, sentence = flash_attn.describe(wheel_spec(by_fa["2.7.4.post1"]), None)
    assert source == "prebuilt" and "flash_attn-2.7.4.post1+cu12torch2.6cxx11abiFALSE-cp311-cp311" in sentence
    source, sentence = flash_attn.describe(wheel_spec(by_fa["2.8.3"]), None)
    assert source == "compile" and "2.8.3-cu130-torch2.11.0-cp312-cxx11abiTRUE-sm90" in sentence
    odd = by_fa["2.8.1"].__class__(**{**by_fa["2.8.1"].__dict__, "torch": "2.8.0", "cuda": "12.8"})
    source, sentence = flash_attn.describe(wheel_spec(odd), None)
    assert source == "none" and "--flash-attn-mirror" in sentence
    planned = plan.plan(m, list(m.rows), "127.0.0.1:5000/imagematrix", ask_registry=False)
    include = plan.github_matrix(planned)["include"]
    assert {e["row"]: e["flash_attn_source"] for e in include}[by_fa["2.8.3"].id] == "compile"
    assert {e["flash_attn_source"] for e in include if not e["flash_attn"]} == {""}


def test_flash_attn_import_refuses_a_wheel_of_another_key_before_any_work(run, tmp_path):
    row = next(r for r in matrix.load().rows if r.flash_attn == "2.8.3")
    wrong = tmp_path / "flash_attn-2.8.3+cu12torch2.11cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"
    wrong.write_bytes(b"x")
    result = run("flash-attn", "import", str(wrong), "--row", row.id)
    assert result.code == 2 and "is not a flash-attn 2.8.3 wheel for cu13torch2.11cxx11abiTRUE cp312" in result.err
    good = tmp_path / "flash_attn-2.8.3+cu13torch2.11cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"
    good.write_bytes(b"x")
    record = tmp_path / "record.json"
    record.write_text('{"archs": ["80", "90"], "sha256": "00"}')
    result = run("flash-attn", "import", str(good), "--row", row.id, "--record", str(record))
    assert result.code == 2 and "says archs ['80', '90'], the row's key needs 90" in result.err
    record.write_text('{"archs": ["90"], "sha256": "00"}')
    result = run("flash-attn", "import", str(good), "--row", row.id, "--record", str(record))
    assert result.code == 2 and "its record says 00" in result.err
    assert run("flash-attn", "show", "--row", "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311").code == 2
