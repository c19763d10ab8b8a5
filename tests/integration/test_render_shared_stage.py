"""render: deterministic output, committed output in sync (drift check), content of the generated context."""

from __future__ import annotations

import pytest

from imagematrix.stages import locks

ROW1 = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"


@pytest.mark.network
def test_rows_sharing_torch_share_the_torch_stage(run, project_copy):
    """Two rows that differ above torch, locked at one cutoff, render identical os/torch stages, so BuildKit builds
    them once. (A new row locks as of its own era by default: rows of different eras resolve torch's unpinned
    dependencies differently, so `lock --as-of` a sibling's cutoff is how a row joins its torch stage.)"""
    text = project_copy.read_text()
    extra = ('  - id: verl0.3-vllm0.7.2-transformers4.48.3\n    verl: "0.3.0.post1"\n    vllm: "0.7.2"\n'
             '    torch: "2.5.1"\n    cuda: "12.4"\n    tensordict: "0.6.2"\n    transformers: "4.48.3"\n')
    project_copy.write_text(text + extra)
    cutoff = locks.recorded_time(project_copy.parent / "locks" / f"{ROW1}.txt")
    assert run("lock", "--matrix", project_copy, "--row", "verl0.3-vllm0.7.2-transformers4.48.3",
               "--as-of", cutoff).code == 0
    assert run("render", "--matrix", project_copy).code == 0
    generated = project_copy.parent / "dockerfiles" / "generated"
    a, b = generated / ROW1, generated / "verl0.3-vllm0.7.2-transformers4.48.3"
    assert (a / "base.txt").read_bytes() == (b / "base.txt").read_bytes()
    for name in ("tools.txt", "buildenv.sh"):
        assert (a / name).read_bytes() == (b / name).read_bytes()

    def shared(path):
        text = (path / "Dockerfile").read_text()
        return text[text.index("FROM "):text.index("FROM torch AS image")]

    assert shared(a) == shared(b)
    assert (a / "requirements.txt").read_text() != (b / "requirements.txt").read_text()
