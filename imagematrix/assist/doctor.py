"""doctor: diagnose this Python environment or an image against the matrix, the rules and the GPU.

Facts come from imagematrix/in_image/probe.py, run with this Python or inside the image; the findings (nearest row,
mismatches, rule violations, GPU problems) each carry their fix. Known vLLM failures of the installed vLLM on the
visible GPUs (knowledge/vllm-advice.yaml) come as advice: they are no finding, since they hit only some settings.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass, field

from imagematrix import rules
from imagematrix.knowledge import gpus, training, vllm_advice
from imagematrix.model import paths
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.fields import PIN_FIELDS, PIN_PACKAGES
from imagematrix.model.matrix import Matrix, Row
from imagematrix.stages import coverage_row
from imagematrix.tools import docker

PROBE = paths.IN_IMAGE / "probe.py"


@dataclass
class Finding:
    kind: str  # mismatch | rule | gpu | driver
    message: str
    fix: str


@dataclass
class Advice:
    """A known failure of the installed vLLM (knowledge/vllm-advice.yaml), on `gpus` when it depends on the GPU."""

    id: str
    gpus: list[str]  # "NVIDIA A10 (sm_86)"; empty: whatever the GPU
    when: str
    symptom: str
    fix: str
    source: str


@dataclass
class Report:
    facts: dict
    nearest: str | None
    findings: list[Finding] = field(default_factory=list)
    training: str = ""  # how verl trains with what is installed (knowledge/training.yaml)
    vllm_advice: list[Advice] = field(default_factory=list)

    def as_json(self) -> str:
        return json.dumps({"facts": self.facts, "nearest_row": self.nearest, "training": self.training,
                           "findings": [dataclasses.asdict(f) for f in self.findings],
                           "vllm_advice": [dataclasses.asdict(a) for a in self.vllm_advice]}, indent=2, sort_keys=True)


def probe_here() -> dict:
    proc = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeFailure(f"probing {sys.executable} failed:\n{proc.stderr[-1500:]}")
    return json.loads(proc.stdout)


def probe_image(image: str, gpu: bool) -> dict:
    docker.require_daemon()
    args = ["run", "--rm", *(["--gpus", "all"] if gpu else []), "-v", f"{PROBE}:/imagematrix-probe.py:ro",
           "--entrypoint", "/opt/venv/bin/python", image, "/imagematrix-probe.py"]
    proc = docker.run(*args, timeout=600)
    if proc.returncode != 0:
        raise RuntimeFailure(f"cannot probe image {image}: {proc.stderr.strip()[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def nearest(matrix: Matrix, installed: dict[str, str | None]) -> Row | None:
    """The row with the most pins equal to what is installed (later rows win ties); None when nothing matches."""
    best, score = None, 0
    for row in matrix.rows:
        hits = sum(installed.get(PIN_PACKAGES[f]) == getattr(row, f) for f in PIN_FIELDS if getattr(row, f))
        if hits >= score and hits:
            best, score = row, hits
    return best


def analyse(matrix: Matrix, facts: dict) -> Report:
    installed = facts["packages"]
    row = nearest(matrix, installed)
    report = Report(facts, row.id if row else None)
    add = report.findings.append
    if row is None:
        add(Finding("mismatch", "no matrix row shares a pinned version with this environment",
                    "use an image of the matrix (`python build.py pick --gpu ...`)"))
    else:
        for f in PIN_FIELDS:
            want, have = getattr(row, f), installed.get(PIN_PACKAGES[f])
            if want and have != want:
                add(Finding("mismatch", f"{PIN_PACKAGES[f]} is {have or 'not installed'}, row {row.id} pins {want}",
                            f"pip install {PIN_PACKAGES[f]}=={want} (or use the image {row.id})"))
        # the rules, on what is actually installed (the row's pins where a package is missing)
        actual = dataclasses.replace(
            row, **{f: installed.get(PIN_PACKAGES[f]) or getattr(row, f) for f in PIN_FIELDS if getattr(row, f)},
            python=".".join(facts["python"].split(".")[:2]),
            env={k: v for k, v in facts["env"].items() if k.startswith("VLLM_")})
        report.training = training.attention(dataclasses.replace(actual, flash_attn=installed.get("flash-attn"))).note
        for result in rules.evaluate(actual):
            if result.failed or result.warned:
                add(Finding("rule", f"{result.rule}: {result.message}", result.fix))
    torch = facts.get("torch") or {}
    # the row's verdict read from its image's binaries, where this environment is that row's (no pin differs)
    scanned = (coverage_row.load(coverage_row.baseline_path(matrix.root, row.id))
               if row is not None and not any(f.kind == "mismatch" for f in report.findings) else None)
    for device in torch.get("gpus", []):
        cap = tuple(device["capability"])
        sm = gpus.format_capability(cap)
        judged = scanned.verdicts.get(f"{cap[0]}.{cap[1]}") if scanned else None
        if judged is not None and judged["verdict"] == coverage_row.NONE:
            add(Finding("gpu", f"{device['name']} is {sm}; {', '.join(judged['lacking'])} of row {row.id} have no "
                               f"kernel for it (read from its binaries, coverage/{row.id}.json): \"no kernel image is "
                               "available for execution on the device\"",
                        f"use a row that runs on {sm}: `python build.py pick --gpu {sm}`"))
        elif judged is not None and judged["verdict"] == coverage_row.PTX_JIT:
            add(Finding("gpu", f"{device['name']} is {sm}; {', '.join(judged['jit'])} of row {row.id} have only PTX "
                               "for it: the driver JIT-compiles it at first use (a slow first start)",
                        f"expect minutes at the first start (the driver caches the result), or `python build.py pick "
                        f"--gpu {sm}` for a row with machine code for it"))
        elif judged is None and torch.get("archs") and not gpus.covers(torch["archs"], cap):
            add(Finding("gpu", f"{device['name']} is {sm}; torch {torch['version']} has kernels for "
                               f"{' '.join(torch['archs'])}: \"no kernel image is available for execution on the device\"",
                        f"use a row whose torch covers {sm}: `python build.py pick --gpu {sm}`"))
        if not gpus.bf16_supported(cap):
            add(Finding("gpu", f"{device['name']} is {sm}: no bfloat16, no FlashAttention-2",
                        "dtype=float16; an attention backend other than FLASH_ATTN; flash-attn off in verl"))
    if facts.get("driver") and torch.get("cuda"):
        status = gpus.driver_status(facts["driver"], torch["cuda"])
        if status != "ok":
            add(Finding("driver", f"driver {facts['driver']} is {'too old for' if status == 'too-old' else 'below the toolkit driver of'} "
                                  f"CUDA {torch['cuda']} (needs {gpus.min_driver(torch['cuda'])}"
                                  f"{'' if status == 'too-old' else '; runs under minor-version compatibility'})",
                        "update the driver, or use a row with an older CUDA (`python build.py pick --driver ...`)"))
    if "error" in torch:
        add(Finding("mismatch", f"torch does not import: {torch['error']}", "install the row's torch"))
    report.vllm_advice = advice(installed.get("vllm"), torch.get("gpus", []))
    return report


def advice(vllm: str | None, devices: list[dict]) -> list[Advice]:
    """The known failures of this vLLM: those that hit any GPU, and those that hit one of the visible `devices`."""
    caps = [tuple(d["capability"]) for d in devices]
    out = []
    for match in vllm_advice.matching(vllm, caps):
        names = [f"{d['name']} ({gpus.format_capability(tuple(d['capability']))})" for d in devices
                 if tuple(d["capability"]) in match.gpus]
        entry = match.advice
        out.append(Advice(entry.id, names, entry.when, entry.symptom, entry.advice, entry.source))
    return out


def lines(report: Report) -> list[str]:
    facts = report.facts
    torch = facts.get("torch") or {}
    out = [f"python       {facts['python']} ({facts['executable']})"]
    out += [f"{name:<13}{version or '-'}" for name, version in facts["packages"].items()]
    out.append(f"torch CUDA   {torch.get('cuda') or '-'}; archs {' '.join(torch.get('archs') or []) or '-'}")
    gpus_seen = ", ".join(f"{g['name']} (sm_{g['capability'][0]}{g['capability'][1]})" for g in torch.get("gpus", []))
    out.append(f"GPUs         {gpus_seen or 'none visible'}; driver {facts.get('driver') or '-'}")
    out += [f"env          {k}={v}" for k, v in facts["env"].items()]
    out.append(f"nearest row  {report.nearest or '-'}")
    if report.training:
        out.append(f"verl training {report.training}")
    if report.vllm_advice:
        out.append(f"known vLLM {facts['packages'].get('vllm')} failures and their fixes "
                   f"(knowledge/{vllm_advice.FILE_NAME}):")
    for item in report.vllm_advice:
        out += [f"  [{item.id}]" + (f" on {', '.join(item.gpus)}" if item.gpus else "") + f": {item.when}",
                f"      symptom: \"{item.symptom}\"", f"      fix: {item.fix}"]
    if not report.findings:
        out.append("no problems found")
    for finding in report.findings:
        out += [f"[{finding.kind}] {finding.message}", f"    fix: {finding.fix}"]
    return out


def check_image_ref(image: str) -> None:
    if not image or any(c.isspace() for c in image):
        raise InputError(f"--image {image!r} is not an image reference", fix="pass e.g. --image REGISTRY/verl:TAG")
