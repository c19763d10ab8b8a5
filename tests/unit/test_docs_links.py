"""The documentation holds together: README.md is a short front page, every relative link in it and in docs/ leads to
a file (and heading) that exists, ARCHITECTURE.md names every module of every layer and no module that is gone,
every path into the repository that a page names exists, docs/cli.md shows every command with every option, and each
guide says in one line what it is for."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from imagematrix.cli import app
from imagematrix.stages import docs as docs_stage
from tests.conftest import ROOT

README = ROOT / "README.md"
ARCHITECTURE = ROOT / "ARCHITECTURE.md"
DOCS = sorted((ROOT / "docs").rglob("*.md"))
PAGES = [README, ARCHITECTURE, *DOCS]
LAYERS = sorted(p.name for p in (ROOT / "imagematrix").iterdir() if p.is_dir() and (p / "__init__.py").is_file())
README_MAX_LINES = 220

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose(text: str) -> str:
    """The page without fenced or indented code blocks and inline code (links there are examples, not links)."""
    out, fenced, previous_blank = [], False, True
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
            continue
        if fenced or (line.startswith("    ") and previous_blank and not line.lstrip().startswith(("-", "*", "|"))):
            out.append("")
            continue  # an indented code block goes on until a line that is not indented
        previous_blank = not line.strip() or (previous_blank and line.startswith("    "))
        out.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as '-', a repeat gets '-1', '-2', ..."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(path.read_text()).splitlines():
        match = HEADING.match(line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(2).replace("`", "").strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        anchors.add(slug if n == 0 else f"{slug}-{n}")
        seen[slug] = n + 1
    return anchors


def _links(path: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(path.read_text())) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    broken = []
    for target in _links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_the_link_check_finds_links_and_skips_code():
    sample = ROOT / "README.md"
    assert "docs/cli.md" in _links(sample)
    assert _prose("text\n\n    [a](b.md)\n\n`[c](d.md)` [e](f.md)\n").count("](") == 1
    assert _anchors(ROOT / "docs" / "maintaining" / "tasks.md") >= {"releases-promote", "what-a-repository-owner-sets-up"}


def test_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/ (see its links)"


def test_readme_keeps_the_generated_image_table_markers():
    text = README.read_text()
    assert docs_stage.START in text and docs_stage.END in text
    assert text.index(docs_stage.START) < text.index(docs_stage.END)


def test_readme_sections_named_by_messages_exist():
    """Error messages send users to README sections by name (e.g. the matrix's fix lines)."""
    headings = {HEADING.match(line).group(2) for line in README.read_text().splitlines() if HEADING.match(line)}
    named = {name for path in (ROOT / "imagematrix").rglob("*.py")
             for name in re.findall(r"README(?:\.md)?, section '([^']+)'", path.read_text())}
    assert named, "no message names a README section any more: drop this test"
    assert named <= headings, sorted(named - headings)


def _architecture_row(layer: str) -> str:
    rows = [line for line in ARCHITECTURE.read_text().splitlines() if line.startswith(f"| `imagematrix/{layer}/`")]
    assert len(rows) == 1, f"ARCHITECTURE.md needs one table row for imagematrix/{layer}/"
    return rows[0]


@pytest.mark.parametrize("layer", LAYERS)
def test_architecture_names_every_module_of_each_layer(layer):
    row = _architecture_row(layer)
    modules = sorted(p.stem for p in (ROOT / "imagematrix" / layer).glob("*.py") if p.name != "__init__.py")
    unnamed = [m for m in modules if not re.search(rf"`{re.escape(m)}(\.py)?`", row)]
    assert not unnamed, f"ARCHITECTURE.md's imagematrix/{layer}/ row does not name {unnamed}"


# `stages/export`, `imagematrix/in_image/imagefs.py`, `tools/process.run_logged`: a layer, then a module
MODULE_REF = re.compile(r"(?:(?<=imagematrix/)|(?<![\w/.-]))(" + "|".join(LAYERS) + r")/([A-Za-z_]\w*)(?![\w/-])")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_named_in_the_docs_exist(page):
    text = page.read_text()
    gone = sorted({f"{layer}/{name}" for layer, name in MODULE_REF.findall(text)
                   if layer != "knowledge" or f"imagematrix/knowledge/{name}" in text}
                  - {f"{layer}/{p.stem}" for layer in LAYERS for p in (ROOT / "imagematrix" / layer).glob("*.py")})
    assert not gone, f"{page.relative_to(ROOT)} names modules that do not exist: {gone}"


@pytest.mark.parametrize("page", [*PAGES, *sorted((ROOT / "knowledge").glob("*.yaml"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_source_files_named_by_path_exist(page):
    """`imagematrix/knowledge/gpus.py`, not the `imagematrix/gpus.py` it once was."""
    gone = sorted({path for path in re.findall(r"(?<![\w/.])imagematrix/[\w/]+\.py", page.read_text())
                   if not (ROOT / path).is_file()})
    assert not gone, f"{page.relative_to(ROOT)} names files that do not exist: {gone}"


# A path into this repository, in prose or in a code block: `imagematrix/suites/gpu/run_host.sh`, `tests/unit/`,
# `dockerfiles/generated/<row-id>/row.json` (checked up to a placeholder: <...>, *, ID, ROW.json). `knowledge/x.py` may
# be the knowledge layer's module (imagematrix/knowledge/x.py), and `stages/smoke_gpu.pytest_dir` a module's function.
REPO_PATH = re.compile(r"(?<![\w/.$~-])((?:imagematrix|tests|docs|knowledge|dockerfiles|bench|locks|sizes|coverage"
                       r"|\.ci|\.github)/[\w./-]*)")
# Paths of other projects that a page names as theirs.
UPSTREAM = {("docs/using/running.md", "docs/stargz.md"),  # nerdctl's
            ("knowledge/flash-attn.yaml", ".github/workflows/publish.yml")}  # flash-attention's release workflow
# docs/gpu-runs.md quotes each record's note, which names the files as they were named on the record's date.
PATH_PAGES = [p for p in PAGES if p.name != "gpu-runs.md"] + sorted((ROOT / "knowledge").glob("*.yaml")) + \
             sorted(p for p in (ROOT / "imagematrix" / "suites").rglob("*") if p.suffix in (".py", ".sh"))


def _repo_path_exists(path: str) -> bool:
    kept = []
    for part in path.split("/"):
        if not part or re.fullmatch(r"[A-Z][A-Z0-9_]*(\.\w+)?", part):  # a placeholder: ID, OUT, ROW_JSON, ID.txt
            break
        kept.append(part)
    path = "/".join(kept)
    for candidate in (path, f"imagematrix/{path}" if kept[0] in LAYERS else path):
        stem, dot, _ = candidate.rpartition(".")
        if (ROOT / candidate).exists() or (dot and (ROOT / f"{stem}.py").is_file()):  # a module's function
            return True
    return False


@pytest.mark.parametrize("page", PATH_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_paths_named_in_the_docs_exist(page):
    """`imagematrix/suites/gpu/run_host.sh`, not the `tests/smoke/gpu/run_host.sh` it once was: every path into the
    repository that a guide, a knowledge file or a suite's usage line names exists, files and folders alike."""
    rel = str(page.relative_to(ROOT))
    gone = sorted({path for path in (m.rstrip(".,:;-") for m in REPO_PATH.findall(page.read_text()))
                   if (rel, path) not in UPSTREAM and not _repo_path_exists(path)})
    assert not gone, f"{rel} names paths that do not exist: {gone}"


def test_the_path_check_knows_placeholders_modules_and_stale_paths():
    assert _repo_path_exists("dockerfiles/generated/ID/row.json") and _repo_path_exists("locks/ROW.txt")
    assert _repo_path_exists("knowledge/extras.py") and _repo_path_exists("stages/smoke_gpu.pytest_dir")
    assert _repo_path_exists("imagematrix/suites/gpu/") and _repo_path_exists("docs/gpu-runs/")
    assert not _repo_path_exists("tests/smoke/gpu/run_host.sh") and not _repo_path_exists("tests/smoke/test_image.py")
    assert REPO_PATH.findall("see `tests/unit/` and https://x.org/docs/a.md, ./tests/b") == ["tests/unit/"]




def _synopses() -> dict[str, str]:
    """docs/cli.md's synopsis block: command -> its lines (continuation lines included)."""
    text = (ROOT / "docs" / "cli.md").read_text()
    out: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"^    python build\.py (\S+)(.*)$", line)
        if match:
            current = match.group(1)
            assert current not in out, f"docs/cli.md shows {current} twice"
            out[current] = match.group(2)
        elif current and line.startswith("     "):
            out[current] += " " + line.strip()
        else:
            current = None
    return out


def test_cli_reference_shows_every_command_and_no_other():
    assert set(_synopses()) == set(app.COMMANDS)


@pytest.mark.parametrize("name", list(app.COMMANDS))
def test_cli_reference_shows_every_option(name):
    """Each option of the command (and each of its choices) is in its synopsis; `[build inputs]` stands for the
    build-input group, which docs/cli.md lists once."""
    synopsis = _synopses()[name]
    parser = next(a for a in app.parser(fill=True)._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    grouped = {a.dest for g in parser._action_groups if g.title and g.title.startswith("build inputs")
               for a in g._group_actions}
    missing = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        if action.dest in grouped and "[build inputs]" in synopsis:
            continue
        shown = [o for o in action.option_strings if re.search(rf"{re.escape(o)}(?![\w-])", synopsis)]
        if action.option_strings and not shown:
            missing.append(action.option_strings[-1])
        for choice in action.choices or []:
            if not re.search(rf"(?<![\w-]){re.escape(str(choice))}(?![\w-])", synopsis):
                missing.append(f"{action.dest}={choice}")
    assert not missing, f"docs/cli.md's `python build.py {name}` line lacks {missing}"


def test_cli_reference_shows_no_option_a_command_lacks():
    """The reverse of the test above: every option in a command's synopsis is one of its own (or of the
    build-input group, for a synopsis that shows `[build inputs]`)."""
    commands = _subparsers()
    wrong = []
    for name, synopsis in _synopses().items():
        known = {o for action in commands[name]._actions for o in action.option_strings}
        wrong += [f"{name} {o}" for o in re.findall(r"(?<![\w-])--[a-z][\w-]*", synopsis) if o not in known]
    assert not wrong, f"docs/cli.md shows options that do not exist: {wrong}"


def test_cli_reference_lists_the_build_inputs():
    text = (ROOT / "docs" / "cli.md").read_text()
    paragraph = next(p for p in text.split("\n\n") if p.startswith("`[build inputs]`"))
    parser = next(a for a in app.parser(fill=True)._actions if isinstance(a, argparse._SubParsersAction)).choices["build"]
    group = next(g for g in parser._action_groups if g.title and g.title.startswith("build inputs"))
    assert {o for a in group._group_actions for o in a.option_strings} <= set(re.findall(r"--[\w-]+", paragraph))


# the guides this layout introduced (image-mode.md and multi-node/README.md are older, fuller pages)
GUIDES = [p for p in DOCS if p.parent.name in ("using", "contributing", "maintaining")] + \
         [ROOT / "docs" / "cli.md", ROOT / "docs" / "measurements.md"]


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_guide_says_in_one_line_what_it_is_for(guide):
    lines = guide.read_text().splitlines()
    assert lines[0].startswith("# "), "a guide starts with its title"
    assert lines[1] == "" and lines[2].strip() and (len(lines) == 3 or not lines[3].strip()), \
        "then one line saying what it is for, then a blank line"


# `python build.py lock --check --row ID`, `python -m imagematrix test --gpu`: a command and the options after it on
# that line (up to `&&`, `;`, `|`, `#`, a parenthesis or a backtick), in every page and in bench/README.md
COMMAND_USE = re.compile(r"(?:build\.py|-m imagematrix)(?:\s+--debug)?\s+([a-z][\w-]*)([^`|#\n]*)")
COMMAND_PAGES = [*PAGES, ROOT / "bench" / "README.md"]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    return next(a for a in app.parser(fill=True)._actions if isinstance(a, argparse._SubParsersAction)).choices


def _command_uses(text: str) -> list[tuple[str, list[str]]]:
    uses = []
    for segment in re.split(r"&&|;|\||\)", text):
        uses += [(match.group(1), re.findall(r"(?<![\w-])--[a-z][\w-]*", match.group(2)))
                 for match in COMMAND_USE.finditer(segment)]
    return uses


@pytest.mark.parametrize("page", COMMAND_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_and_options_named_in_the_docs_exist(page):
    """`python build.py X --opt`: X is a command of cli/app.COMMANDS and --opt one of its options."""
    commands = _subparsers()
    wrong = []
    for name, options in _command_uses(page.read_text()):
        if name not in commands:
            wrong.append(f"build.py {name} (no such command)")
            continue
        known = {o for action in commands[name]._actions for o in action.option_strings}
        wrong += [f"build.py {name} {o} (no such option)" for o in options if o not in known]
    assert not wrong, f"{page.relative_to(ROOT)}: {sorted(set(wrong))}"


def test_the_command_check_finds_commands_and_their_options():
    assert _command_uses("    python build.py lock --check --row ID && python build.py render  # --no") == \
        [("lock", ["--check", "--row"]), ("render", [])]
    assert _command_uses("`python -m imagematrix test --row ID [--gpu]`") == [("test", ["--row", "--gpu"])]
    assert sum(len(_command_uses(p.read_text())) for p in COMMAND_PAGES) > 100


# `imagematrix.tools.pypi`, `python -m imagematrix.cli`: a module of the package (its last part may be an attribute);
# label names (`io.imagematrix.pin.torch`) are not modules
DOTTED = re.compile(r"(?<![\w.])imagematrix(?:\.[A-Za-z_]\w*)+")


def _dotted_exists(name: str) -> bool:
    """A module of the package, or a name that a module (not the top package) defines at its top level."""
    parts = name.split(".")
    for n in range(len(parts), 1, -1):
        path = ROOT.joinpath(*parts[:n])
        source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if source.is_file():
            if n == len(parts):
                return True
            defined = rf"^(?:(?:async )?def|class)\s+{parts[n]}\b|^{parts[n]}\s*[:=]"
            return n == len(parts) - 1 and re.search(defined, source.read_text(), re.M) is not None
    return name == "imagematrix"


@pytest.mark.parametrize("page", COMMAND_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dotted_module_names_in_the_docs_exist(page):
    gone = sorted({m for m in DOTTED.findall(page.read_text()) if not _dotted_exists(m)})
    assert not gone, f"{page.relative_to(ROOT)} names modules that do not exist: {gone}"


def test_the_dotted_check_knows_modules_attributes_and_labels():
    assert _dotted_exists("imagematrix.tools.pypi") and _dotted_exists("imagematrix.tools.pypi.wheel_file")
    assert _dotted_exists("imagematrix.cli") and not _dotted_exists("imagematrix.tools.pypi.a.b")
    assert not _dotted_exists("imagematrix.tools.nosuch") and not _dotted_exists("imagematrix.tools.pypi.nosuch")
    assert not _dotted_exists("imagematrix.gpus") and DOTTED.findall("io.imagematrix.pin.torch") == []


def test_cli_reference_explains_every_command():
    """docs/cli.md's table "Where each command is explained" names each command once."""
    text = (ROOT / "docs" / "cli.md").read_text()
    table = text[text.index("## Where each command is explained"):]
    named = [n for line in table.splitlines() if line.startswith("| `")
             for n in re.findall(r"`([a-z][\w-]*)`", line.split("|")[1])]
    assert sorted(named) == sorted(app.COMMANDS), f"missing {set(app.COMMANDS) - set(named)}, extra {set(named) - set(app.COMMANDS)}"
