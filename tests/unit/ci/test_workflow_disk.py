"""The build job's disk (issue 19, item 10): space is freed on the hosted runner, then the row's disk budget is
checked (build.py disk) before anything is built."""

from __future__ import annotations

import shlex

from ruamel.yaml import YAML

from imagematrix.cli import app as cli
from tests.conftest import ROOT


def _steps(job: str) -> list[dict]:
    doc = YAML(typ="safe").load((ROOT / ".github" / "workflows" / "images.yml").read_text())
    return doc["jobs"][job]["steps"]


def test_the_build_job_frees_space_then_checks_the_budget_before_building():
    steps = _steps("build")
    names = [step.get("name", "") for step in steps]
    free = next(i for i, n in enumerate(names) if n.startswith("free disk space"))
    budget = next(i for i, n in enumerate(names) if n.startswith("disk budget"))
    build = next(i for i, n in enumerate(names) if n.startswith("build, CPU smoke tests"))
    assert free < budget < build
    script = steps[free]["run"]
    for path in ("/usr/share/dotnet", "/usr/local/lib/android", "/opt/ghc", "/opt/hostedtoolcache/CodeQL"):
        assert path in script
    assert "/opt/hostedtoolcache/Python" not in script and "rm -rf /opt/hostedtoolcache " not in script
    words = shlex.split(steps[budget]["run"].replace('"$(docker info --format \'{{.DockerRootDir}}\')"', "/var/lib/docker"))
    assert words[:3] == ["python", "build.py", "disk"]
    args = cli.parser().parse_args([w.replace('"$ROW"', "r").replace("$ROW", "r") for w in words[2:]])
    assert args.rows == ["r"] and str(args.path) == "/var/lib/docker"
