"""Issue 26, item 6: a YAML alias bomb of under 1 KB (anchors used over and over) is bad input naming the file,
refused as it is loaded: it never reaches a reader that would expand it (repr, deepcopy, str of a label value)."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from imagematrix.model import yamlio
from imagematrix.model.errors import InputError
from tests.conftest import ROOT

ROW = """  - verl: "0.9.1"
    vllm: "0.24.0"
    torch: "2.11.0"
    cuda: "13.0"
    flash_attn: null
    tensordict: "0.10.0"
    transformers: "5.9.0"
"""


def _bomb(levels: int = 9) -> str:
    """[&a [x, ...], &b [*a, ...], ...]: 10**levels values from a few hundred bytes."""
    names = "abcdefghijklmnop"
    chain = ["&a [x,x,x,x,x,x,x,x,x,x]"]
    chain += [f"&{names[i]} [" + ",".join([f"*{names[i - 1]}"] * 10) + "]" for i in range(1, levels)]
    return "[" + ", ".join(chain) + "]"


@pytest.mark.parametrize("where", ["rollout_only", "extras", "defaults"])
def test_an_alias_bomb_is_bad_input_naming_the_file(tmp_path, where):
    text = {"rollout_only": f"rows:\n{ROW}    rollout_only: {_bomb()}\n",
            "extras": f"rows:\n{ROW}    extras: {{x: {_bomb()}}}\n",
            "defaults": f"defaults:\n  rollout_only: {_bomb()}\nrows:\n{ROW}"}[where]
    assert len(text.encode()) < 1024
    path = tmp_path / "matrix.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match="expands to more than") as caught:
        yamlio.load(path)
    assert str(path) in str(caught.value)


def _limit_memory():  # 1 GiB of address space: an expanded bomb would need far more
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize("command", [["validate"], ["render", "--check"], ["plan", "--all"]])
def test_the_commands_refuse_a_bomb_in_rollout_only_without_expanding_it(tmp_path, command):
    path = tmp_path / "matrix.yaml"
    path.write_text(f"rows:\n{ROW}    rollout_only: {_bomb()}\n")
    proc = subprocess.run([sys.executable, str(ROOT / "build.py"), *command, "--matrix", str(path)],
                          capture_output=True, text=True, timeout=120, preexec_fn=_limit_memory, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "expands to more than" in proc.stderr and str(path) in proc.stderr


def test_the_committed_data_files_are_far_below_the_limit():
    for path in [ROOT / "matrix.yaml", *sorted((ROOT / "knowledge").glob("*.yaml"))]:
        yamlio.load(path)  # raises if any came near MAX_VALUES
