"""Metrics 4-7 (minutes, run by hand): incremental row, image size vs payload, cold build vs its floor, and the
naive single-stage peer. One row is built cold once and reused by metrics 4, 6 and 7."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from . import peer
from .common import (
    ROOT,
    Build,
    Bytes,
    Context,
    OutcomeError,
    bake_cmd,
    build,
    build_py,
    du_inside,
    expect,
    image_size,
    log,
    sh,
    timed,
)
from .quick import plan_json
from .report import line, target

ROW1 = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
IMAGE1 = f"127.0.0.1:5000/imagematrix/verl:{ROW1}"
BASE = "imagematrix-base:bookworm"
ROW1_PINS = {"torch": "2.5.1", "vllm": "0.7.2", "verl": "0.3.0.post1", "tensordict": "0.6.2", "transformers": "4.49.0"}
# The new row: row 1's pins with another transformers, so it shares row 1's os and torch stages.
INC_ID = "bench-incremental-transformers4.48.3"
INC_PINS = {**ROW1_PINS, "transformers": "4.48.3"}
SITE = "/opt/venv/lib/python3.11/site-packages"


def size_payload(ctx: Context) -> dict[str, Any]:
    log(f"size: {IMAGE1}")
    image, base = image_size(ctx.cli, IMAGE1), image_size(ctx.cli, BASE)
    if not image or not base:
        raise RuntimeError(f"needs the images {IMAGE1} and {BASE} on this machine")
    du = du_inside(ctx.cli, IMAGE1, [SITE, "/opt/venv", "/opt/uv", "/usr", "/var", "/"])
    built_from = sh(ctx.cli, "image", "inspect", "-f", '{{index .Config.Labels "io.imagematrix.input-digest"}}', IMAGE1)
    payload = base + du[SITE]
    return {
        "title": "Image size vs payload",
        "method": (f"`docker image inspect` Size of {IMAGE1} (the real row, built by `build.py build`) divided by "
                   f"the size of its base ({BASE}, the debootstrap rootfs, same measure) plus `du -sb` of the "
                   f"installed site-packages inside a container of the image ({SITE})."),
        "notes": [f"inside the image (du -sbx, bytes): {du}",
                  f"the image carries input digest {built_from[:19]} (the build context it was built from)",
                  "the rest beyond base + site-packages: the distribution's Python 3.11 and its apt dependencies, "
                  "uv in /opt/uv, venv scripts, the patch record, row.json"],
        "lines": [line("image size / (base rootfs + site-packages)", image, "B", ref=payload,
                       ref_what=f"base {base / 1e9:.2f} GB + site-packages {du[SITE] / 1e9:.2f} GB",
                       ratio=image / payload, ratio_what="image / payload", target=target("ratio", "<=", 1.05))],
        "details": {"image": IMAGE1, "input_digest": built_from, "image_bytes": image, "base_bytes": base,
                    "du_bytes": du},
    }


def _project(ctx: Context) -> tuple[Path, Path, list[str]]:
    """A temporary matrix with the new row, locked and rendered by the tool (fresh processes: its current code).
    Returns the matrix, the row's rendered build context, and notes."""
    root = ctx.work / "project"
    (root / "locks").mkdir(parents=True, exist_ok=True)
    tools = (ROOT / "locks" / "tools.txt").read_bytes()
    (root / "locks" / "tools.txt").write_bytes(tools)
    pins = "".join(f'    {k}: "{v}"\n' for k, v in INC_PINS.items())
    matrix = root / "matrix.yaml"
    matrix.write_text('defaults:\n  python: "3.11"\n  base: debootstrap:bookworm\nrows:\n'
                      f'  - id: {INC_ID}\n{pins}    cuda: "12.4"\n    flash_attn: null\n')
    notes = []
    # the torch stage is shared only between locks of one cutoff: lock the new row as of row 1's (a new row would
    # otherwise resolve as of its own era)
    cutoff = (ROOT / "locks" / f"{ROW1}.txt").read_text().split("# exclude-newer: ", 1)[1].split()[0]
    for cmd in (["lock", "--as-of", cutoff], ["render"]):
        full = build_py(*cmd, "--row", INC_ID, "--matrix", str(matrix))
        result = timed(full)
        expect(result, result.rc == 0, full, "exit code 0")
        if cmd[0] == "lock" and (root / "locks" / "tools.txt").read_bytes() != tools:
            # `lock` re-resolves the build tools too; a newer uv would change every row's os stage.
            (root / "locks" / "tools.txt").write_bytes(tools)
            notes.append("`lock` re-resolved locks/tools.txt to something new; the committed one was kept")
    return matrix, root / "dockerfiles" / "generated" / INC_ID, notes


def _variant(ctx: Context, generated: Path, name: str, *, cold: bool) -> Path:
    """A copy of the row's context whose RUN commands carry the bench's marker (`: marker;`, a no-op), so its
    cache records can be found and pruned. cold: every stage, and a uv cache mount of its own (empty); else the
    `image` stage only, so os and torch still come from the shared cache."""
    context = ctx.work / name / generated.name
    shutil.rmtree(context.parent, ignore_errors=True)
    shutil.copytree(generated, context)
    text = (context / "Dockerfile").read_text()
    head, sep, tail = text.partition("FROM torch AS image")
    mark = f"set -eu; : {ctx.marker};"
    if "set -eu;" not in tail or (cold and "id=imagematrix-uv," not in text):
        raise RuntimeError(f"{generated}/Dockerfile: no `set -eu;` in its image stage or no uv cache mount "
                           "`id=imagematrix-uv`: the template changed, adapt bench/heavy.py")
    if cold:
        text = text.replace("set -eu;", mark).replace("id=imagematrix-uv,", f"id={ctx.marker}-uv,")
    else:
        text = head + sep + tail.replace("set -eu;", mark)
    (context / "Dockerfile").write_text(text)
    return context


def _bake(ctx: Context, matrix: Path, context: Path, tag: str, extra: dict[str, Any], name: str) -> Build:
    """The tool's own bake definition for the row (`build.py plan --bake`), pointed at the variant context, with
    the bench's tag and secrets, plus `extra` (no-cache, no-cache-filter)."""
    definition = plan_json(matrix, "127.0.0.1:5000/imagematrix", "--bake")
    (target_name, spec), = definition["target"].items()
    secrets = ctx.build_secrets()
    spec.update(context=str(context), tags=[tag], secret=[f"id={k},src={v}" for k, v in sorted(secrets.items())],
                **extra)
    bake = ctx.work / f"{name}.bake.json"
    bake.write_text(json.dumps(definition, indent=2))
    return build(bake_cmd(ctx.cli, bake, target_name), ctx.work / "logs" / f"{name}.log")


def _status(b: Build, stage: str) -> list[str]:
    return [s.status for s in b.steps if s.name.split()[0] == stage and s.text.startswith("RUN")]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def builds(ctx: Context) -> dict[str, dict[str, Any]]:
    """Metrics 4, 6 and 7 from one set of builds; images and cache records are removed as soon as measured."""
    matrix, generated, notes = _project(ctx)
    row1 = ROOT / "dockerfiles" / "generated" / ROW1
    shared = all((generated / f).read_bytes() == (row1 / f).read_bytes() for f in ("base.txt", "tools.txt"))
    if not shared:
        raise OutcomeError(f"{INC_ID} does not render row 1's base.txt/tools.txt: its torch stage is not shared")
    repo = f"imagematrix-bench-{ctx.nonce}/verl"

    log(f"incremental: {INC_ID} on the shared os/torch stages (image stage rebuilt)")
    incr = _bake(ctx, matrix, _variant(ctx, generated, "ctx-incremental", cold=False),
                 ctx.janitor.image(f"{repo}:incremental"), {"no-cache-filter": ["image"]}, "incremental")
    if incr.rc != 0 or "DONE" in _status(incr, "torch") + _status(incr, "os"):
        raise OutcomeError(f"the incremental build must succeed with its os and torch stages cached: exit code "
                           f"{incr.rc}, os {_status(incr, 'os')}, torch {_status(incr, 'torch')}, log {incr.log}")

    log(f"cold: {INC_ID} with --no-cache and an empty uv cache mount of its own (downloads everything)")
    cold_tag = ctx.janitor.image(f"{repo}:cold")
    cold = _bake(ctx, matrix, _variant(ctx, generated, "ctx-cold", cold=True), cold_tag, {"no-cache": True}, "cold")
    if cold.rc != 0:
        raise OutcomeError(f"cold build failed (exit code {cold.rc}), log {cold.log}")
    ours_size, ours_du = image_size(ctx.cli, cold_tag), du_inside(ctx.cli, cold_tag, [SITE])
    cleaned = [ctx.janitor.clean()]

    log("peer: naive single-stage Dockerfile, cold (--no-cache), same pins")
    peer_cold_tag = ctx.janitor.image(f"{repo}:peer-cold")
    peer_cold = build(peer.build_cmd(ctx.cli, peer.write_context(ctx.work / "peer-cold", peer.dockerfile(
        INC_PINS, ctx.marker, layered=True)), peer_cold_tag, ctx.build_secrets(), no_cache=True),
        ctx.work / "logs" / "peer-cold.log")
    peer_size, peer_du = image_size(ctx.cli, peer_cold_tag), du_inside(ctx.cli, peer_cold_tag, [SITE])
    log("peer: the second row (row 1's pins) on the peer's cached torch layer")
    peer_warm = build(peer.build_cmd(ctx.cli, peer.write_context(ctx.work / "peer-warm", peer.dockerfile(
        ROW1_PINS, ctx.marker, layered=True)), ctx.janitor.image(f"{repo}:peer-warm"), ctx.build_secrets(),
        no_cache=False), ctx.work / "logs" / "peer-warm.log")
    for name, b in (("peer cold", peer_cold), ("peer warm", peer_warm)):
        if b.rc != 0:
            raise OutcomeError(f"{name} build failed (exit code {b.rc}), log {b.log}")
    cleaned.append(ctx.janitor.clean())

    lock = matrix.parent / "locks" / f"{INC_ID}.txt"
    floor, floor_copy = _floor(ctx, lock, "default"), _floor(ctx, lock, "copy")
    for f in (floor, floor_copy):
        if f["rc"] != 0:
            raise OutcomeError(f"floor install ({f['link_mode']}) failed (exit code {f['rc']}): {f['tail']}")

    base = image_size(ctx.cli, BASE)
    ours_ratio = _ratio(ours_size, base + ours_du.get(SITE, 0))
    peer_ratio = _ratio(peer_size, base + peer_du.get(SITE, 0))
    details = {"row": INC_ID, "pins": INC_PINS, "torch_stage_shared": shared, "incremental": incr.summary(),
               "cold": cold.summary(), "peer_cold": peer_cold.summary(), "peer_warm": peer_warm.summary(),
               "floor": floor, "floor_copy": floor_copy,
               "sizes": {"ours_cold_image": ours_size, "ours_site_packages": ours_du.get(SITE),
                         "peer_image": peer_size, "peer_site_packages": peer_du.get(SITE), "base": base},
               "cleanup": cleaned}
    bytes_how = ("bytes downloaded = bytes the docker bridge (docker0) transmitted into the build containers during "
                 "the build (/proc/net/dev before and after; per step in details); the host's own interface is "
                 "recorded beside it (it also counts whatever else the shared host received meanwhile)")
    common_notes = [bytes_how, *notes]
    image_stage = cold.stage_bytes("image")
    if image_stage and incr.stage_bytes("image") >= image_stage / 2:
        incr_note = ("uv's shared cache mount did not hold this stage's wheels when the incremental build ran (it "
                     "downloaded about as much as the cold build's image stage): this is the empty-uv-cache case")
    else:
        incr_note = "uv's shared cache mount served most of the image stage's wheels"
    return {
        "incremental": {
            "title": "Incremental row (shares its torch stage with an existing row)",
            "method": (f"A new row {INC_ID} (row {ROW1}'s pins with transformers 4.48.3, in a temporary matrix: locked "
                       f"with uv, rendered by the tool) built with buildx bake from the tool's bake definition. "
                       f"Incremental: its `image` stage forced to run (`no-cache-filter: image`, and a no-op marker "
                       f"in that stage's commands so the bench can prune what it built) on the os and torch stages "
                       f"BuildKit already has from row 1, with the shared uv cache mount as a real build machine has "
                       f"it. Cold: the same context with `no-cache` and a uv cache mount id of its own (empty), so "
                       f"every stage runs and every wheel is downloaded. One run each (minutes); BuildKit build only "
                       f"(no smoke tests, no push)."),
            "notes": [f"incremental steps: {_steps(incr)}", f"cold steps: {_steps(cold)}", incr_note, *common_notes,
                      "with an empty uv cache (a fresh CI runner that gets only the layer cache), the incremental "
                      "row would download what the cold build's `image` stage downloaded (third line)"],
            "lines": [
                line("build time of the new row", incr.seconds, "s", ref=cold.seconds, ref_what="cold build",
                     ratio=_ratio(incr.seconds, cold.seconds), ratio_what="incremental / cold",
                     target=target("ratio", "<=", 0.35)),
                line("bytes downloaded by the build", incr.bridge_bytes, "B", ref=cold.bridge_bytes,
                     ref_what="cold build", ratio=_ratio(incr.bridge_bytes, cold.bridge_bytes),
                     ratio_what="incremental / cold", target=target("ratio", "<=", 0.35)),
                line("… bytes if the uv cache were empty (image stage of the cold build)", image_stage, "B",
                     ref=cold.bridge_bytes, ref_what="cold build", ratio=_ratio(image_stage, cold.bridge_bytes),
                     ratio_what="image stage / cold"),
            ],
            "details": details,
        },
        "cold_vs_floor": {
            "title": "Cold build vs its floor",
            "method": (f"The cold build of metric 4 (row {INC_ID}: BuildKit, no cache, empty uv cache mount; the os "
                       f"stage's apt-get and uv included) against `uv pip install --require-hashes --no-deps -r "
                       f"<the row's lock>` into a fresh venv on the host ({floor['python']}) with an empty "
                       f"UV_CACHE_DIR (uv's default link mode: hardlinks from its cache), wall time, one run each; "
                       f"then the same with UV_LINK_MODE=copy (what the image's installs do) and again an empty "
                       f"cache. Bytes: the host interface's received bytes during the install."),
            "notes": [f"cold build steps: {_steps(cold)}; the rest of the wall time is BuildKit's own work "
                      f"(context, exporting the layers to the image store)", *common_notes],
            "lines": [
                line("cold build wall time", cold.seconds, "s", ref=floor["seconds"],
                     ref_what="`uv pip install` of the lock, cold cache",
                     ratio=_ratio(cold.seconds, floor["seconds"]), ratio_what="build / floor",
                     target=target("ratio", "<=", 1.5)),
                line("… against a floor that copies files as the image does (UV_LINK_MODE=copy)", cold.seconds, "s",
                     ref=floor_copy["seconds"], ref_what="same install, copy mode",
                     ratio=_ratio(cold.seconds, floor_copy["seconds"]), ratio_what="build / floor"),
                line("… bytes downloaded", cold.bridge_bytes, "B", ref=floor["host_bytes"],
                     ref_what="host, uv install", ratio=_ratio(cold.bridge_bytes, floor["host_bytes"]),
                     ratio_what="build / floor"),
            ],
            "details": {"cold": cold.summary(), "floor": floor, "floor_copy": floor_copy},
        },
        "peer": {
            "title": "The same pins in a naive single-stage Dockerfile (peer)",
            "method": (f"Peer: FROM {BASE}; apt-get install python3.11; a venv; `RUN pip install --no-cache-dir "
                       f"torch==2.5.1`; `RUN pip install --no-cache-dir vllm==0.7.2 verl==0.3.0.post1 "
                       f"tensordict==0.6.2 transformers==4.48.3` (verl's published Dockerfiles' shape; no lock, no "
                       f"hashes, no source patches), proxy CA as a BuildKit secret. Cold: `docker build --no-cache`. "
                       f"Warm: the second row (row 1's pins, transformers 4.49.0) built after it, reusing its apt and "
                       f"torch layers; ours warm is the incremental build of metric 4. Sizes: `docker image "
                       f"inspect`; payload: base + `du -sb` of site-packages. One run each."),
            "notes": [f"peer cold steps: {_steps(peer_cold)}", f"peer warm steps: {_steps(peer_warm)}",
                      "the peer lets pip resolve the transitive versions at build time, so its package set can "
                      "differ from our lock; it applies none of the row's source patches", *common_notes],
            "lines": [
                line("image size", ours_size, "B", ref=peer_size, ref_what="peer image",
                     ratio=_ratio(ours_size, peer_size), ratio_what="ours / peer"),
                line("image size / (base + site-packages)", ours_ratio, "x", ref=peer_ratio, ref_what="peer",
                     ratio=_ratio(ours_ratio, peer_ratio), ratio_what="ours / peer"),
                line("cold build time", cold.seconds, "s", ref=peer_cold.seconds, ref_what="peer, --no-cache",
                     ratio=_ratio(cold.seconds, peer_cold.seconds), ratio_what="ours / peer"),
                line("warm build time (second row sharing torch)", incr.seconds, "s", ref=peer_warm.seconds,
                     ref_what="peer, torch layer cached", ratio=_ratio(incr.seconds, peer_warm.seconds),
                     ratio_what="ours / peer"),
                line("bytes downloaded, cold", cold.bridge_bytes, "B", ref=peer_cold.bridge_bytes, ref_what="peer",
                     ratio=_ratio(cold.bridge_bytes, peer_cold.bridge_bytes), ratio_what="ours / peer"),
                line("bytes downloaded, warm", incr.bridge_bytes, "B", ref=peer_warm.bridge_bytes, ref_what="peer",
                     ratio=_ratio(incr.bridge_bytes, peer_warm.bridge_bytes), ratio_what="ours / peer"),
            ],
            "details": {"sizes": details["sizes"], "peer_cold": peer_cold.summary(),
                        "peer_warm": peer_warm.summary()},
        },
    }


def _floor(ctx: Context, lock: Path, link_mode: str) -> dict[str, Any]:
    """`uv pip install --require-hashes` of the lock into a fresh venv on the host with an empty uv cache."""
    log(f"floor: uv pip install --require-hashes of the lock into a fresh venv, empty uv cache, link mode {link_mode}")
    work = ctx.work / "floor"
    shutil.rmtree(work, ignore_errors=True)
    python = sys.executable if sys.version_info[:2] == (3, 11) else "python3.11"
    env = {**os.environ, "UV_CACHE_DIR": str(work / "cache"), **({"UV_LINK_MODE": link_mode} if link_mode != "default"
                                                                  else {})}
    venv = timed(["uv", "venv", "--python", python, str(work / "venv")], env=env)
    before = Bytes.read()
    result = timed(["uv", "pip", "install", "--python", str(work / "venv" / "bin" / "python"), "--require-hashes",
                    "--no-deps", "-r", str(lock)], env=env)
    received = Bytes.read().minus(before).host
    shutil.rmtree(work, ignore_errors=True)
    return {"link_mode": link_mode, "python": python, "seconds": round(result.seconds, 1),
            "rc": result.rc if venv.rc == 0 else venv.rc, "host_bytes": received, "tail": (venv.out + result.out)[-400:]}


def _steps(b: Build) -> str:
    return "; ".join(f"{s.name} {s.status} {s.seconds:.0f} s" + (f" {s.bridge_bytes / 1e6:.0f} MB" if s.bridge_bytes
                                                                 else "")
                     for s in b.steps if s.name != "internal")
