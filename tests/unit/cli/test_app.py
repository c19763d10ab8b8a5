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


def _build_py_with_a_bug(*argv: str, error: str = "KeyError('no such thing')"):
    """build.py as a process, its `render` command replaced by one that raises an unexpected exception."""
    import subprocess
    import sys

    code = ("import sys\nfrom imagematrix.cli import app\n"
            f"def boom(args):\n    raise {error}\n"
            "app.command('render').run = boom\nsys.exit(app.main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)


def test_an_internal_error_is_one_line_even_when_its_message_has_several():
    proc = _build_py_with_a_bug("render", "--check", error="ValueError('first line\\nsecond line\\n  third')")
    assert proc.returncode == 1, proc
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("internal error: ValueError: first line") and proc.stderr.rstrip().endswith(
        "(rerun with --debug for the traceback)"), proc.stderr
    assert "first line" in proc.stderr and "third" in proc.stderr and "Traceback" not in proc.stderr


def test_debug_shows_the_traceback_of_an_internal_error():
    proc = _build_py_with_a_bug("--debug", "render", "--check")
    assert proc.returncode == 1, proc
    assert "Traceback (most recent call last)" in proc.stderr and "KeyError: 'no such thing'" in proc.stderr
    assert "in boom" in proc.stderr and "internal error" not in proc.stderr, proc.stderr
