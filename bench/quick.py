"""Metrics 1-3 (quick enough for CI): fail-fast, whole-matrix validate, no-op `build --all`."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from imagematrix.model import labels, tags
from imagematrix.tools import registry as registry_api

from . import peer
from .common import ROOT, Context, OutcomeError, build, build_py, expect, log, median, repeat, timed
from .report import line, target

CONFLICT_PINS = {"verl": "0.5.0", "vllm": "0.10.0", "torch": "2.6.0", "tensordict": "0.8.3", "transformers": "4.55.4"}
CONFLICT_MATRIX = """\
defaults:
  python: "3.11"
  base: debootstrap:bookworm
rows:
  - verl: "0.5.0"
    vllm: "0.10.0"
    torch: "2.6.0"
    cuda: "12.4"
    flash_attn: null
    tensordict: "0.8.3"
    transformers: "4.55.4"
    overrides:
      vllm:
        version: "0.10.0"
        reason: verl publishes 0.5.0 with vLLM 0.10.0; the conflict under test is vLLM 0.10.0 with torch 2.6.0
"""
PIP_CONFLICT = re.compile(r"ResolutionImpossible|conflicting dependencies|Cannot install", re.I)


def fail_fast(ctx: Context) -> dict[str, Any]:
    matrix = ctx.work / "conflict" / "matrix.yaml"
    matrix.parent.mkdir(parents=True, exist_ok=True)
    matrix.write_text(CONFLICT_MATRIX)
    log(f"fail-fast: validate of a conflicting row, 1 + {ctx.runs} runs")
    runs, first = repeat(build_py("validate", "--matrix", str(matrix)), ctx.runs,
                         lambda r: r.rc == 2 and "cannot be resolved together" in r.out,
                         "exit code 2 and the conflict named (`cannot be resolved together`)")
    samples = [r.seconds for r in runs]
    ours = median(samples)
    context = peer.write_context(ctx.work / "conflict" / "peer",
                                 peer.dockerfile(CONFLICT_PINS, ctx.marker, layered=False))
    docker = []
    for index in range(ctx.docker_runs):
        log(f"fail-fast: plain docker build of the same pins until it fails, run {index + 1}/{ctx.docker_runs}")
        tag = ctx.janitor.image(f"imagematrix-bench-{ctx.nonce}/conflict:{index}")
        result = build(peer.build_cmd(ctx.cli, context, tag, ctx.build_secrets(), no_cache=True),
                       ctx.work / "logs" / f"conflict-docker-{index}.log")
        if result.rc == 0 or not PIP_CONFLICT.search(open(result.log).read()):
            raise OutcomeError(f"the peer's docker build (run {index + 1}) must fail with pip's resolution error: "
                               f"exit code {result.rc}, log {result.log}")
        docker.append(result)
    ref = median([b.seconds for b in docker]) if docker else None
    pip_steps = [s.seconds for b in docker for s in b.steps if "pip install" in s.text]
    pip_only = median(pip_steps) if pip_steps else None
    lines = [line("time to reject vLLM 0.10.0 + torch 2.6.0", ours, "s", ours_note=f"median of {ctx.runs}",
                  ref=ref, ref_what=f"plain `docker build --no-cache` until it fails (median of {len(docker)})",
                  ratio=ref / ours if ref else None, ratio_what="docker / validate", target=target("ratio", ">=", 30))]
    if pip_only:
        lines.append(line("… same, peer with its apt layer already cached (its pip step only)", ours, "s",
                          ref=pip_only, ref_what="the failing `pip install` step", ratio=pip_only / ours,
                          ratio_what="pip step / validate"))
    return {
        "title": "Fail-fast: a conflicting row rejected",
        "method": (f"`python3 build.py validate --matrix M` on a temporary matrix holding one row, vLLM 0.10.0 with "
                   f"torch 2.6.0 (vLLM 0.10.0 requires torch 2.7.1): wall time of the whole command (interpreter "
                   f"start-up included), median of {ctx.runs} runs after one warm-up run ({first.seconds:.2f} s); "
                   f"each must exit 2 naming the conflict. Peer: a hand-written single-stage Dockerfile (FROM "
                   f"imagematrix-base:bookworm, apt-get install python3.11, a venv, one `pip install --no-cache-dir` "
                   f"of the same five pins, the proxy CA as BuildKit secret `ca-cert`) built with "
                   f"`docker build --no-cache` (BuildKit) until pip reports ResolutionImpossible: "
                   f"{len(docker)} run(s), wall time."),
        "notes": [f"validate samples (s): {[round(s, 2) for s in samples]}",
                  f"docker build samples (s): {[round(b.seconds, 1) for b in docker]}; failing pip step (s): "
                  f"{[round(s, 1) for s in pip_steps]}; bytes into the build containers before pip gave up: "
                  f"{[b.bridge_bytes for b in docker]} (Debian's pip 23.0.1 in the venv)",
                  "With the layered style of metric 7 (torch in its own RUN), the conflict would not fail the build "
                  "at all: the second `pip install` replaces torch with the version vLLM requires (not measured)."],
        "lines": lines,
        "details": {"validate_seconds": samples, "validate_warmup_seconds": first.seconds,
                    "docker_builds": [b.summary() for b in docker]},
    }


def validate_all(ctx: Context) -> dict[str, Any]:
    rows = len(plan_json(ROOT / "matrix.yaml", "127.0.0.1:5000/imagematrix", "--github", "--all")["include"])
    log(f"validate: whole matrix ({rows} rows), 1 + {ctx.runs} runs")
    runs, first = repeat(build_py("validate"), ctx.runs, lambda r: r.rc == 0 and f"validated {rows} row(s)" in r.out,
                         f"exit code 0 and `validated {rows} row(s)`")
    samples = [r.seconds for r in runs]
    return {
        "title": "Whole-matrix validate, warm cache",
        "method": (f"`python3 build.py validate` on the committed matrix ({rows} rows): schema, uv resolution of "
                   f"every row (from uv's cache), Python ranges, torch CUDA, lock freshness, patches; wall time of "
                   f"the command, median of {ctx.runs} runs after one warm-up run ({first.seconds:.2f} s); each must "
                   f"exit 0 having validated every row."),
        "notes": [f"samples (s): {[round(s, 2) for s in samples]}"],
        "lines": [line(f"validate {rows} rows", median(samples), "s", ours_note=f"median of {ctx.runs}",
                       target=target("ours", "<", 10))],
        "details": {"rows": rows, "seconds": samples, "warmup_seconds": first.seconds},
    }


def _push_standin(cli: str, ref: str, labels: dict[str, str]) -> None:
    """An empty image carrying the row's labels: the skip check reads only labels (as tests/conftest.py does)."""
    changes = [a for key, value in labels.items() for a in ("--change", f"LABEL {key}={value}")]
    empty = subprocess.run(["tar", "-c", "-T", "/dev/null"], capture_output=True).stdout
    for cmd in ([cli, "import", *changes, "-", ref], [cli, "push", ref]):
        proc = subprocess.run(cmd, input=empty if "import" in cmd else None, capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])}: {proc.stderr.decode(errors='replace')[-300:]}")
    subprocess.run([cli, "rmi", ref], capture_output=True)


OUTCOME = re.compile(r"^(\S+): (pushed|skipped|failed|tested)(?: at (\S+))? in \d", re.M)  # a row that went through every step has no " at"


def plan_json(matrix: Path, registry: str, *flags: str) -> dict[str, Any]:
    """`build.py plan` output as JSON, from a fresh process: the tool's current code, never this one's imports."""
    cmd = build_py("plan", "--matrix", str(matrix), "--registry", registry, *flags)
    result = timed(cmd)
    expect(result, result.rc == 0 and "{" in result.out, cmd, "exit code 0 and a JSON document")
    return json.loads(result.out[result.out.index("{"):result.out.rindex("}") + 1])


def _noop_project(ctx: Context, rows: int) -> Path:
    """A snapshot of the project whose matrix holds `rows` rows: the committed rows (cut, or repeated under other ids
    `<id>-x<n>` with copies of their locks), rendered by the tool. A snapshot, so that a matrix edited meanwhile
    cannot turn the no-op into real builds."""
    from ruamel.yaml import YAML

    from imagematrix.model import matrix as matrix_mod

    project = ctx.work / f"noop-{rows}"
    project.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "locks", project / "locks", dirs_exist_ok=True)
    committed = matrix_mod.load(ROOT / "matrix.yaml").rows
    yaml = YAML()
    doc = yaml.load((ROOT / "matrix.yaml").read_text())
    entries = list(doc["rows"])
    out = []
    for index in range(rows):
        entry, row_id = copy.deepcopy(entries[index % len(entries)]), committed[index % len(entries)].id
        if index >= len(entries):
            entry["id"] = f"{row_id}-x{index // len(entries) + 1}"
            shutil.copy(ROOT / "locks" / f"{row_id}.txt", project / "locks" / f"{entry['id']}.txt")
            for other in (ROOT / "locks").glob(f"*/{row_id}.txt"):  # its other platforms' locks (locks/linux-arm64/)
                shutil.copy(other, project / "locks" / other.parent.name / f"{entry['id']}.txt")
        out.append(entry)
    doc["rows"] = out
    with open(project / "matrix.yaml", "w") as f:
        yaml.dump(doc, f)
    cmd = build_py("render", "--matrix", str(project / "matrix.yaml"))
    result = timed(cmd)
    expect(result, result.rc == 0, cmd, "exit code 0 (the snapshot's build contexts written)")
    return project / "matrix.yaml"


def _other_platforms(project: Path, row_id: str) -> list[tuple[str, str]]:
    """[(platform, input digest)] of a row's images for platforms other than linux/amd64, from the snapshot's
    rendered records `<row-id>@linux-arm64.inputs` (plan --bake lists the amd64 contexts only)."""
    out = []
    for record in sorted((project / "dockerfiles" / "generated").glob(f"{row_id}@*.inputs")):
        platform = record.name[len(row_id) + 1:-len(".inputs")].replace("-", "/", 1)
        out.append((platform, json.loads(record.read_text())["context"]))
    return out


def _noop_at(ctx: Context, rows: int) -> dict[str, Any]:
    """`build --all` of a `rows`-row snapshot against a namespace of stand-ins: timed runs, each checked to skip all."""
    matrix = _noop_project(ctx, rows)
    namespace = f"imagematrix-bench-{ctx.nonce}-n{rows}"
    registry = f"127.0.0.1:5000/{namespace}"
    ctx.janitor.namespaces.append(namespace)
    planned = [(r["row"], r["vllm"]) for r in plan_json(matrix, registry, "--github", "--all")["include"]]
    digests = {Path(t["context"]).name: t["labels"][labels.INPUT_DIGEST]
               for t in plan_json(matrix, registry, "--bake")["target"].values()}
    final = tags.published_tags(planned)
    log(f"no-op: pushing stand-ins for {len(planned)} rows to {registry}")
    for row_id, _ in planned:
        others = _other_platforms(matrix.parent, row_id)
        standin_labels = {labels.INPUT_DIGEST: digests[row_id], "io.imagematrix.row": row_id}
        if not others:
            for tag in final[row_id]:
                _push_standin(ctx.cli, f"{registry}/verl:{tag}", standin_labels)
            continue
        # a multi-platform row is published as one index of its platforms' images (stages/multiarch.check_index)
        images = []
        for platform, digest in [("linux/amd64", digests[row_id]), *others]:
            tag = f"standin-{row_id}-{platform.replace('/', '-')}"
            _push_standin(ctx.cli, f"{registry}/verl:{tag}", {**standin_labels, labels.INPUT_DIGEST: digest})
            images.append((platform, registry_api.digest(f"{registry}/verl", tag)))
        registry_api.put_index(f"{registry}/verl", final[row_id], images)
    common = ["--matrix", str(matrix), "--registry", registry]
    plan_cmd = build_py("plan", *common)
    plan = timed(plan_cmd)
    expect(plan, plan.rc == 0 and ": build (" not in plan.out, plan_cmd,
           "exit code 0 and every row up to date (refusing to time real builds)")
    cmd = build_py("build", "--all", *common, "--log-dir", str(ctx.work / "logs" / f"noop-{rows}"))
    built: list[int] = []

    def check(result) -> bool:
        outcomes = OUTCOME.findall(result.out)
        built.append(sum(status != "skipped" for _, status, _ in outcomes))
        return result.rc == 0 and len(outcomes) == len(planned) and built[-1] == 0

    log(f"no-op: `build --all` of {rows} rows, 1 + {ctx.runs} runs")
    runs, first = repeat(cmd, ctx.runs, check, f"exit code 0 and each of the {len(planned)} rows `skipped`")
    return {"rows": len(planned), "tags": sum(len(t) for t in final.values()), "registry": registry,
            "seconds": [r.seconds for r in runs], "warmup_seconds": first.seconds, "built": built}


def noop_build(ctx: Context) -> dict[str, Any]:
    committed = len(plan_json(ROOT / "matrix.yaml", "127.0.0.1:5000/imagematrix", "--github", "--all")["include"])
    sizes = [max(1, committed // 2), committed, 2 * committed]
    at = {rows: _noop_at(ctx, rows) for rows in sizes}
    seconds = {rows: median(m["seconds"]) for rows, m in at.items()}
    built = [b for m in at.values() for b in m["built"]]
    growth = seconds[2 * committed] / seconds[committed]
    return {
        "title": "No-op `build --all` (every final tag has the same input digest)",
        "method": (f"`python3 build.py build --all` of a snapshot of the project (matrix, locks, generated contexts) "
                   f"at {', '.join(map(str, sizes))} rows ({sizes[0]}: the first committed rows; {2 * committed}: the "
                   f"committed rows and the same again under other ids, `<id>-x2`, with copies of their locks), each "
                   f"against a registry namespace of the bench's own (removed afterwards) where every final tag of "
                   f"its rows (and each `vllm<version>` alias) exists with the row's input digest. Only one row's real "
                   f"image exists on this machine, so each tag is a stand-in: an empty image carrying the row's labels "
                   f"(the skip check reads only labels, through the registry's HTTP API). Wall time of the command, "
                   f"median of {ctx.runs} runs after one warm-up, per size, measured one size after the other in the "
                   f"same run; every run must exit 0 reporting each row skipped. Growth: the median at "
                   f"{2 * committed} rows over the median at {committed} (2.0 would be linear in rows)."),
        "notes": [f"{rows} rows ({m['tags']} tags): samples (s) {[round(s, 2) for s in m['seconds']]}, warm-up "
                  f"{m['warmup_seconds']:.2f} s" for rows, m in at.items()] + [f"rows built per run: {built}"],
        "lines": [line(f"no-op `build --all`, {committed} rows", seconds[committed], "s",
                       ours_note=f"median of {ctx.runs}", target=target("ours", "<", 1)),
                  line(f"… at {2 * committed} rows against {committed} rows", seconds[2 * committed], "s",
                       ours_note=f"median of {ctx.runs}", ref=seconds[committed],
                       ref_what=f"{committed} rows, same run", ratio=growth,
                       ratio_what=f"{2 * committed} rows / {committed} rows", target=target("ratio", "<=", 1.5)),
                  line(f"… at {sizes[0]} rows", seconds[sizes[0]], "s", ours_note=f"median of {ctx.runs}"),
                  line("rows built by the no-op runs", float(max(built)), "rows", target=target("ours", "==", 0))],
        "details": {"by_rows": {str(rows): m for rows, m in at.items()}, "rows": committed, "built": built},
    }
