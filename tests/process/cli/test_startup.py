"""Start-up (issue 30): `build.py --help` imports no command and none of the heavy libraries the commands use; a
command imports its own module, no other command's; no command imports the SBOM validator's libraries (jsonschema's
format checkers cost ~1 s) before it builds an SBOM. Checked on sys.modules of a fresh process, never by timing
(timings belong in bench/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from imagematrix.cli import app

ROOT = Path(__file__).resolve().parents[3]
# build.py run as `python build.py ARGS...` would run it; then the names in sys.modules, written to a file
WRAPPER = """\
import json, runpy, sys
out, sys.argv = sys.argv[1], ["build.py", *sys.argv[2:]]
code = 0
try:
    runpy.run_path("build.py", run_name="__main__")
except SystemExit as exc:
    code = exc.code
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""
# what a command may need, but --help never does
HEAVY = ("cyclonedx", "jsonschema", "rfc3987_syntax", "referencing", "packageurl", "pydantic", "pydantic_core",
         "rich", "jinja2", "ruamel", "packaging", "lark", "attr", "attrs", "hypothesis", "yaml", "ssl", "http.client")
SBOM_ONLY = ("cyclonedx", "jsonschema", "rfc3987_syntax", "packageurl")  # imported when an SBOM is built
LAYERS = ("imagematrix.stages", "imagematrix.rules", "imagematrix.assist", "imagematrix.knowledge",
          "imagematrix.tools", "imagematrix.cli.common")
COMMAND_MODULES = {f"imagematrix.cli.{name.replace('-', '_')}" for name in app.COMMANDS}


def _modules(tmp_path: Path, *argv: str, code: str = WRAPPER) -> tuple[object, set[str]]:
    out = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", code, str(out), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and out.is_file(), proc.stderr
    result = json.loads(out.read_text())
    return result["code"], set(result["modules"])


def _under(modules: set[str], prefixes: tuple[str, ...] | set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_help_imports_no_command_and_no_heavy_library(tmp_path):
    code, modules = _modules(tmp_path, "--help")
    assert code == 0
    assert "imagematrix.cli.app" in modules  # the wrapper ran this checkout's build.py
    assert not _under(modules, HEAVY), "build.py --help imports libraries it does not need"
    assert not _under(modules, LAYERS), "build.py --help imports layers below the command line"
    assert not _under(modules, COMMAND_MODULES), "build.py --help imports command modules"


def test_a_command_imports_its_own_module_and_no_other(tmp_path):
    code, modules = _modules(tmp_path, "build", "--help")
    assert code == 0
    assert _under(modules, COMMAND_MODULES) == ["imagematrix.cli.build"]
    assert not _under(modules, SBOM_ONLY), "`build` imports the SBOM libraries before it builds an SBOM"


def test_no_command_module_imports_the_sbom_libraries(tmp_path):
    """Every command's module (and the stages they import) loaded at once: the SBOM libraries stay out."""
    code = ("import json, sys\nfrom imagematrix.cli import app\napp.parser(fill=True)\n"
            "json.dump({'code': 0, 'modules': sorted(sys.modules)}, open(sys.argv[1], 'w'))\n")
    _, modules = _modules(tmp_path, code=code)
    assert COMMAND_MODULES <= modules
    assert not _under(modules, SBOM_ONLY), "a module imports the SBOM libraries at module level"


def test_every_command_module_is_listed_and_has_arguments_and_run():
    files = {p.stem for p in (ROOT / "imagematrix" / "cli").glob("*.py")} - {"__init__", "app", "common"}
    assert {name.replace("-", "_") for name in app.COMMANDS} == files
    for name in app.COMMANDS:
        module = app.command(name)
        assert callable(module.add_arguments) and callable(module.run), name
    with pytest.raises(KeyError):
        app.command("no-such-command")


def test_a_command_parser_is_filled_when_parsed_or_asked():
    parser = app.parser()
    render = parser._subparsers._group_actions[0].choices["render"]
    assert "--check" not in render._option_string_actions
    assert parser.parse_args(["render", "--check"]).check
    assert "--check" in render._option_string_actions
    assert "--rebuild" in app.parser(fill=True)._subparsers._group_actions[0].choices["build"]._option_string_actions
