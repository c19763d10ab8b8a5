"""Issue 13, defect 12: one redaction (model/secrets.py) on every output path, seen in what is printed or written:
the command line's last handler (error, failed and internal-error lines), a row's error.txt and outcome, and the
manifest build writes into build-logs/<row>/manifest.json. Each gets a planted secret in the forms a tool meets it:
URL userinfo, and a value under a name holding PASS, PASSWD, PASSWORD, TOKEN, KEY, SECRET, AUTH, CREDENTIAL or
COOKIE."""

from __future__ import annotations

import json
import subprocess

import pytest

from imagematrix.cli import app
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.stages import pipeline, publish, render
from tests.conftest import ROOT

PLANTED = "S3cr3tPlanted"
URL = f"https://someone:{PLANTED}@mirror.example:8443/simple"
SECRET_NAMES = ("HF_PASS", "MY_PASSWD", "DB_PASSWORD", "HF_TOKEN", "VLLM_API_KEY", "AWS_SECRET_ACCESS_KEY",
                "PROXY_AUTH", "GOOGLE_APPLICATION_CREDENTIALS", "HF_COOKIE")


@pytest.mark.parametrize("exc", [
    InputError(f"cannot use the index {URL}", where=f"--pip-index-url {URL}", fix=f"check {URL}"),
    RuntimeFailure(f"uv failed: error: Failed to fetch: `{URL}/verl/`"),
    ValueError(f"unexpected answer from {URL}"),  # an internal error quotes its exception
], ids=["input-error", "runtime-failure", "internal-error"])
def test_the_last_handler_never_prints_url_credentials(exc, monkeypatch, capsys):
    def boom(args):
        raise exc

    monkeypatch.setattr(app.command("render"), "run", boom)
    code = app.main(["render", "--check"])
    out, err = capsys.readouterr()
    assert code == (2 if isinstance(exc, InputError) else 1)
    assert PLANTED not in out + err, err
    assert "https://***@mirror.example:8443/simple" in err, err


class Silent:
    """A pipeline.Progress that shows nothing."""

    def __getattr__(self, name):
        return lambda *a, **k: None


def test_a_failed_rows_error_file_and_outcome_never_hold_url_credentials(tmp_path, monkeypatch):
    m = matrix_mod.load(ROOT / "matrix.yaml")
    item = render.Rendered(m.rows[0], {"Dockerfile": b"FROM scratch\n"})

    def unreachable(registry, tag):
        raise RuntimeFailure(f"registry answered a redirect to {URL}/v2/ (log in again)")

    monkeypatch.setattr(publish, "remote_labels", unreachable)
    request = pipeline.BuildRequest(matrix=m, registry="127.0.0.1:9/ns", log_dir=tmp_path)
    outcome = pipeline.run_row(request, item, [item.row.id], Silent())
    error = (tmp_path / item.row.id / "error.txt").read_text()
    assert outcome.status == "failed"
    assert PLANTED not in error and PLANTED not in outcome.detail, (error, outcome.detail)
    assert "https://***@mirror.example:8443/simple/v2/" in error


def test_the_manifest_never_holds_secrets(tmp_path, monkeypatch):
    """The image's environment (a row's env: values), its labels and what it reports (a `pkg @ URL` freeze line)
    go into manifest.json: secret-named variables show only that they are set, URLs lose their userinfo."""
    env = [f"{name}={PLANTED}-{name}" for name in SECRET_NAMES] + [f"HF_ENDPOINT={URL}", "NCCL_DEBUG=WARN",
                                                                   "PATH=/opt/venv/bin:/usr/bin"]
    inspect = [{"Id": "sha256:" + "1" * 64, "Size": 123,
                "Config": {"Env": env, "Labels": {"io.imagematrix.index": URL, "org.opencontainers.image.authors": "x"}}}]

    def fake_docker(*args, **kwargs):
        if args[:2] == ("image", "inspect"):
            return subprocess.CompletedProcess(args, 0, json.dumps(inspect), "")
        if "uv pip freeze" in " ".join(args):
            return subprocess.CompletedProcess(args, 0, f"numpy==1.26.4\nprivate-pkg @ {URL}/p/private_pkg-1.0.whl\n", "")
        return subprocess.CompletedProcess(args, 0, "bash 5.2\n", "")

    monkeypatch.setattr(publish.docker, "run", fake_docker)
    path = tmp_path / "manifest.json"
    publish.write_manifest("127.0.0.1:5000/imagematrix/verl:x", {"x": "sha256:" + "2" * 64}, path)
    text = path.read_text()
    assert PLANTED not in text, text
    manifest = json.loads(text)
    assert [e for e in manifest["env"] if e.split("=", 1)[0] in SECRET_NAMES] == [f"{n}=<set>" for n in SECRET_NAMES]
    assert "HF_ENDPOINT=https://***@mirror.example:8443/simple" in manifest["env"]
    assert "NCCL_DEBUG=WARN" in manifest["env"] and "PATH=/opt/venv/bin:/usr/bin" in manifest["env"]
    assert manifest["labels"] == {"io.imagematrix.index": "https://***@mirror.example:8443/simple",
                                  "org.opencontainers.image.authors": "x"}
    assert manifest["pip_freeze"] == ["numpy==1.26.4", "private-pkg @ https://***@mirror.example:8443/simple/p/private_pkg-1.0.whl"]
    assert manifest["dpkg"] == ["bash 5.2"] and manifest["size_bytes"] == 123


def test_the_consoles_never_print_url_credentials(capsys):
    """Every command prints through cli.common's consoles: a message quoting a URL with userinfo (a rule's warning
    naming the index it could not read), wrapped by rich or inside a table, loses the userinfo."""
    from rich.console import Console
    from rich.table import Table

    from imagematrix.cli import common

    narrow = common.RedactingConsole(width=30, highlight=False)
    narrow.print(f"warning: cannot fetch {URL}/verl/: refused")
    table = Table("index")
    table.add_row(URL)
    common.out.print(table)
    common.err.print(f"[red]failed:[/] {URL}")
    out, err = capsys.readouterr()
    assert PLANTED not in out + err and "***@mirror.example" in out and "***@mirror.example" in err, out + err
    assert isinstance(common.out, Console) and isinstance(common.err, common.RedactingConsole)
