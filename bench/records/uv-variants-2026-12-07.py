"""One-off (issue 30 item 6): cold builds of the verl 0.3 row's committed context, variants of its uv settings,
one after another, each --no-cache with a uv cache mount id of its own (empty); marker in every RUN for pruning."""
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.common import build, Janitor, Context, loadavg  # noqa
from imagematrix.tools import docker  # noqa: E402

ROW = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
nonce = uuid.uuid4().hex[:8]
work = Path(tempfile.mkdtemp(prefix=f"uv-variants-{nonce}-"))
cli = docker.cli()
jan = Janitor(cli, f"imagematrix-bench-{nonce}")
ctx = Context(cli=cli, nonce=nonce, work=work, janitor=jan, runs=1, docker_runs=1)
secrets = ctx.build_secrets()
src = ROOT / "dockerfiles" / "generated" / ROW

INSTALL = "uv pip install --python /opt/venv/bin/python --require-hashes --no-deps -r /run/imagematrix-in/requirements.txt"

def variant(name, edit):
    """Only the image stage changes (marker, a uv cache mount of its own, empty): os and torch come from BuildKit's
    cache when it has them, so the image stage's install (913 MB of wheels) and the export are what differ."""
    c = work / name / ROW
    shutil.copytree(src, c)
    t = (c / "Dockerfile").read_text()
    head, sep, tail = t.partition("FROM torch AS image")
    tail = tail.replace("set -eu;", f"set -eu; : {jan.marker};").replace("id=imagematrix-uv,", f"id={jan.marker}-{name}-uv,")
    (c / "Dockerfile").write_text(head + sep + edit(tail))
    return c

def compile_bc(t):
    return t.replace(INSTALL, "UV_COMPILE_BYTECODE=1 " + INSTALL)

def hardlink_local_cache(t):
    # uv's cache inside the build's own filesystem (same overlay as /opt/venv): hardlinks instead of copies; the
    # cache is removed at the end of the same RUN, so no layer holds it (the cache mount is given up)
    t = re.sub(r" *--mount=type=cache,id=[^ ]+,target=/root/.cache/uv,sharing=locked \\\n", "", t, count=1)
    return t.replace(INSTALL, "UV_LINK_MODE=hardlink UV_CACHE_DIR=/root/.cache/uv-local " + INSTALL + "; rm -rf /root/.cache/uv-local")

variants = {"committed": lambda t: t, "compile-bytecode": compile_bc, "hardlink-local-cache": hardlink_local_cache}
only = sys.argv[1:] or list(variants)
out = {}
try:
    for name in only:
        c = variant(name, variants[name])
        tag = jan.image(f"imagematrix-bench-{nonce}/verl:{name}")
        cmd = [cli, "buildx", "build", "--progress=plain", *[f"--secret=id={k},src={v}" for k, v in secrets.items()], "-t", tag, str(c)]
        la = loadavg()
        b = build(cmd, work / f"{name}.log")
        size = int(subprocess.run([cli, "image", "inspect", "-f", "{{.Size}}", tag], capture_output=True, text=True).stdout.strip() or 0)
        first = None
        if b.rc == 0:
            t0 = time.monotonic()
            r = subprocess.run([cli, "run", "--rm", "--entrypoint", "/opt/venv/bin/python", tag, "-c", "import vllm, verl, torch"], capture_output=True, text=True)
            first = round(time.monotonic() - t0, 1) if r.returncode == 0 else f"rc {r.returncode}: {r.stderr[-300:]}"
        steps = [(s.name, s.status, round(s.seconds, 1)) for s in b.steps if s.name != "internal"]
        export = re.findall(r"exporting layers ([0-9.]+)s done", Path(b.log).read_text())
        out[name] = {"rc": b.rc, "seconds": round(b.seconds, 1), "size": size, "first_import_s": first, "steps": steps,
                     "export_s": export, "bridge_bytes": b.bridge_bytes, "load_before": la, "load_after": loadavg()}
        print(name, json.dumps(out[name]), flush=True)
        jan.clean()
finally:
    print("cleanup", jan.clean())
    (work / "variants.json").write_text(json.dumps(out, indent=1))
    shutil.rmtree(work / "secrets", ignore_errors=True)
    print("record:", work / "variants.json")
