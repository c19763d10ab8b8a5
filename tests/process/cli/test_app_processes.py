"""The tests of tests/unit/cli/test_app.py that start a process, serve HTTP or kill:
the process tier. The pure ones stay there."""

from __future__ import annotations


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
