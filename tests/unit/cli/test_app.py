"""The command line's last line of defence: an unexpected exception is one line and exit 1; --debug shows it."""

from __future__ import annotations

import pytest

from imagematrix.cli import app


def test_an_internal_error_is_one_line_and_exit_1(monkeypatch, capsys):
    def boom(args):
        raise KeyError("no such thing")

    monkeypatch.setattr(app.render, "run", boom)
    assert app.main(["render", "--check"]) == 1
    err = capsys.readouterr().err
    assert "internal error: KeyError: 'no such thing' (rerun with --debug for the traceback)" in err
    assert "Traceback" not in err
    with pytest.raises(KeyError):
        app.main(["--debug", "render", "--check"])
