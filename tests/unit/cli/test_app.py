"""The command line's last line of defence: an unexpected exception is one line and exit 1; --debug shows it."""

from __future__ import annotations

import pytest

from imagematrix.cli import app


def test_an_internal_error_is_one_line_and_exit_1(monkeypatch, capsys):
    def boom(args):
        raise KeyError("no such thing")

    monkeypatch.setattr(app.command("render"), "run", boom)
    assert app.main(["render", "--check"]) == 1
    err = capsys.readouterr().err
    assert "internal error: KeyError: 'no such thing' (rerun with --debug for the traceback)" in err
    assert "Traceback" not in err
    with pytest.raises(KeyError):
        app.main(["--debug", "render", "--check"])


@pytest.mark.parametrize("argv", [
    ["add-row", "--vllm", "x; rm -rf /", "--dry-run"],
    ["add-row", "--vllm", "0.24.0", "--python", "abc", "--dry-run"],
    ["add-row", "--vllm", "0.24.0", "--verl", ">=0.9", "--dry-run"],
    ["plan", "--registry", "not a registry"],
    ["pick", "--gpu", "H100", "--registry", "not a registry"],
])
def test_bad_command_line_values_are_bad_input_not_tracebacks(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        app.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err and "internal error" not in err
