"""Compile a flash-attn wheel from its PyPI sdist, with a progress line per compilation unit.

Standard library only: it runs inside the flash-attn compile stage of a build (dockerfiles/templates/
Dockerfile.flash-attn.j2) and on a GPU host in host mode (no docker), with the Python that holds the row's torch:

    python3 flash_attn_compile.py SDIST --archs 90 --out DIR [--jobs N] [--record FILE] [--log FILE]
    python3 flash_attn_compile.py --fetch flash_attn-2.8.3.tar.gz --sha256 HEX --archs 90 --out DIR ...

--fetch downloads the sdist from the build's package index (PIP_INDEX_URL, UV_DEFAULT_INDEX, else PyPI; its simple
page names the file) and refuses bytes whose sha256 differs from --sha256.

Before compiling, it checks what a compile needs and fails at once, with the fix, when something is missing: torch
importable, a CUDA compiler (CUDA_HOME, `nvcc` on PATH, or the compiler from PyPI's CUDA wheels inside the
environment, nvidia/cu13/bin/nvcc or nvidia/cuda_nvcc/bin/nvcc) whose major version is torch's, and the memory
for at least one compile job. MAX_JOBS comes from cores and memory (each job runs nvcc with one thread per
architecture, up to 4, and needs about 2 GB plus 2 GB per thread); the choice is printed.

The wheel is named like flash-attn's own release wheels (flash_attn-2.8.3+cu13torch2.11cxx11abiTRUE-cp312-cp312-
linux_x86_64.whl) through FLASH_ATTN_LOCAL_VERSION, so an index or mirror of compiled wheels looks like upstream's.
Exit status: 0 built; 3 a precondition failed (nothing compiled); 4 the compile failed (the log's tail is printed).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from html import unescape
from pathlib import Path

UNIT_RE = re.compile(r"^\[(\d+)/(\d+)\]")
GB = 1024**3
CUDA_WHEEL_COMPILERS = ("nvidia/cu13/bin/nvcc", "nvidia/cuda_nvcc/bin/nvcc")
ARCHS_RE = re.compile(r"^\d{2,3}(;\d{2,3})*\Z")


class Unfit(Exception):
    """A precondition of the compile is not met (exit 3)."""


def nvcc_threads(archs: list[str]) -> int:
    return max(1, min(4, len(archs)))


def job_memory_gb(threads: int) -> int:
    return 2 + 2 * threads


def choose_jobs(cores: int, available_bytes: int, threads: int) -> int:
    """How many nvcc jobs fit the cores and the memory; 0 when not even one fits in memory."""
    by_cores = max(1, cores // threads)
    by_memory = int(available_bytes // (job_memory_gb(threads) * GB))
    return min(by_cores, by_memory)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def available_memory(meminfo: str = "/proc/meminfo") -> int:
    try:
        text = Path(meminfo).read_text()
    except OSError:
        return 0
    match = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def find_nvcc(site_dirs: list[str], env: dict[str, str]) -> Path | None:
    """CUDA_HOME's nvcc, else one on PATH, else the compiler of PyPI's CUDA wheels in the environment."""
    if env.get("CUDA_HOME"):
        candidate = Path(env["CUDA_HOME"]) / "bin" / "nvcc"
        return candidate if candidate.is_file() else None
    found = shutil.which("nvcc", path=env.get("PATH"))
    if found:
        return Path(found)
    for site in site_dirs:
        for rel in CUDA_WHEEL_COMPILERS:
            candidate = Path(site) / rel
            if candidate.is_file():
                return candidate
    return None


def cuda_home(nvcc: Path, scratch: Path) -> Path:
    """A CUDA_HOME for torch's extension build. A toolkit install (lib64/libcudart.so) is used as it is. PyPI's
    CUDA wheels (nvidia/cu13/{bin,include,lib,nvvm}) lack lib64/ and the unversioned libcudart.so that torch's
    build links with: then a folder of links in scratch stands in for it."""
    root = nvcc.parent.parent
    if (root / "lib64" / "libcudart.so").exists():
        return root
    shim = scratch / "cuda-home"
    shim.mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        if entry.name != "lib64" and not (shim / entry.name).exists():
            (shim / entry.name).symlink_to(entry)
    lib64 = shim / "lib64"
    lib64.mkdir(exist_ok=True)
    for lib_dir in (root / "lib", root / "lib64"):
        for entry in lib_dir.glob("*") if lib_dir.is_dir() else ():
            if not (lib64 / entry.name).exists():
                (lib64 / entry.name).symlink_to(entry)
    versioned = sorted(lib64.glob("libcudart.so.*"))
    if versioned and not (lib64 / "libcudart.so").exists():
        (lib64 / "libcudart.so").symlink_to(versioned[0])
    return shim


def nvcc_release(nvcc: Path) -> str | None:
    try:
        out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+\.\d+)", out)
    return match.group(1) if match else None


def local_version(torch_version: str, torch_cuda: str, cxx11_abi: bool) -> str:
    """flash-attn's release naming: cu{CUDA major}torch{major.minor}cxx11abi{TRUE|FALSE}."""
    major_minor = ".".join(torch_version.split("+")[0].split(".")[:2])
    return f"cu{torch_cuda.split('.')[0]}torch{major_minor}cxx11abi{'TRUE' if cxx11_abi else 'FALSE'}"


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_line(done: int, total: int, elapsed: float) -> str:
    line = f"flash-attn compile: {done}/{total} units, {format_duration(elapsed)} elapsed"
    if 0 < done < total:
        line += f", about {format_duration(elapsed / done * (total - done))} left"
    return line


def torch_facts() -> dict:
    try:
        import torch  # noqa: PLC0415 (the compile's own precondition)
    except Exception as exc:  # any import failure means: no usable torch
        raise Unfit(f"torch does not import in {sys.executable} ({exc}); run this with the Python that holds the "
                    "row's torch") from exc
    if not torch.version.cuda:
        raise Unfit(f"torch {torch.__version__} is a CPU build; flash-attn needs a CUDA build of torch")
    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cxx11_abi": bool(torch._C._GLIBCXX_USE_CXX11_ABI)}


def site_dirs() -> list[str]:
    import site  # noqa: PLC0415

    dirs = list(site.getsitepackages()) + [site.getusersitepackages()]
    dirs += [p for p in sys.path if p.endswith("site-packages") or p.endswith("dist-packages")]
    return list(dict.fromkeys(dirs))


def plan(archs: list[str], jobs: int | None, env: dict[str, str]) -> dict:
    """Every precondition, checked before anything is compiled. Returns the compile's settings."""
    facts = torch_facts()
    nvcc = find_nvcc(site_dirs(), env)
    if nvcc is None:
        raise Unfit("no CUDA compiler: set CUDA_HOME, put nvcc on PATH, or install the nvcc wheel of torch's CUDA "
                    f"{facts['torch_cuda']} (e.g. nvidia-cuda-nvcc) into this environment")
    release = nvcc_release(nvcc)
    if release is None:
        raise Unfit(f"{nvcc} does not run (`nvcc --version` failed)")
    if release.split(".")[0] != facts["torch_cuda"].split(".")[0]:
        raise Unfit(f"nvcc {release} ({nvcc}) does not match torch's CUDA {facts['torch_cuda']}: torch refuses to "
                    "build extensions across CUDA major versions; use the matching toolkit")
    bin_dirs = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if shutil.which("ninja", path=bin_dirs) is None:
        raise Unfit("ninja is not installed: torch would compile serially, without progress (hours longer); "
                    "install it in this environment (pip install ninja)")
    threads = nvcc_threads(archs)
    if jobs is None:
        jobs = choose_jobs(cores(), available_memory(), threads)
        if jobs < 1:
            raise Unfit(f"not enough memory for one compile job (needs about "
                        f"{job_memory_gb(threads)} GB available); free memory or compile fewer architectures")
    return {**facts, "nvcc": str(nvcc), "nvcc_release": release,
            "archs": archs, "nvcc_threads": threads, "jobs": jobs, "cores": cores(),
            "available_gb": round(available_memory() / GB, 1),
            "local_version": local_version(facts["torch"], facts["torch_cuda"], facts["cxx11_abi"])}


def compile_env(settings: dict, env: dict[str, str]) -> dict[str, str]:
    out = dict(env)
    out.update({
        "FLASH_ATTENTION_FORCE_BUILD": "TRUE",  # never the setup.py's own download from GitHub
        "FLASH_ATTN_CUDA_ARCHS": ";".join(settings["archs"]),
        "MAX_JOBS": str(settings["jobs"]),
        "NVCC_THREADS": str(settings["nvcc_threads"]),
        "FLASH_ATTN_LOCAL_VERSION": settings["local_version"],
        # nvcc's folder, and this Python's (ninja lives there in a venv that is not activated)
        "PATH": os.pathsep.join([str(Path(settings["nvcc"]).parent), str(Path(sys.executable).parent), env.get("PATH", "")]),
    })
    return out


def run_compile(sdist: Path, out_dir: Path, settings: dict, log_path: Path, every: float = 30.0) -> tuple[Path, dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-cache-dir", "-v",
           "-w", str(out_dir), str(sdist)]
    start = time.monotonic()
    done = total = 0
    last_print = 0.0
    with open(log_path, "w", encoding="utf-8") as log, tempfile.TemporaryDirectory(prefix="fa-build-") as tmp:
        env = compile_env(settings, dict(os.environ))
        home = cuda_home(Path(settings["nvcc"]), Path(tmp))
        env["CUDA_HOME"] = str(home)
        env["PATH"] = f"{home / 'bin'}{os.pathsep}{env['PATH']}"
        env["TMPDIR"] = tmp
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            match = UNIT_RE.match(line.strip())
            if match:
                done, total = int(match.group(1)), int(match.group(2))
                now = time.monotonic() - start
                if now - last_print >= every or done == total or done == 1:
                    print(progress_line(done, total, now), flush=True)
                    last_print = now
        status = proc.wait()
    seconds = time.monotonic() - start
    wheels = sorted(out_dir.glob("flash_attn-*.whl"))
    if status != 0 or not wheels:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
        print("\n".join(tail), file=sys.stderr)
        raise RuntimeError(f"the compile failed (exit {status}) after {format_duration(seconds)}; log: {log_path}")
    wheel = wheels[-1]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return wheel, {"seconds": round(seconds, 1), "units": total, "wheel": wheel.name, "sha256": digest,
                   "size": wheel.stat().st_size}


def index_url(env: dict[str, str]) -> str:
    for name in ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL"):
        if env.get(name):
            return env[name].rstrip("/")
    return "https://pypi.org/simple"


def link_to(html: str, filename: str, page_url: str) -> str | None:
    """The absolute URL of `filename` on a PEP 503 simple page (fragment dropped), or None."""
    for href in re.findall(r'<a\s[^>]*href="([^"]+)"', html):
        url = unescape(href).split("#")[0]
        if url.rsplit("/", 1)[-1] == filename:
            return urllib.parse.urljoin(page_url, url)
    return None


# What fetch reads from the index, at most (this copy's own: it imports nothing of imagematrix, whose reads go
# through tools/http.fetch): a page and the sdist (flash-attn's: about 8 MB), each within its deadline (seconds).
PAGE_LIMIT, PAGE_DEADLINE = 32 << 20, 120.0
SDIST_LIMIT, SDIST_DEADLINE = 512 << 20, 1800.0


def _capped(response, limit: int, deadline: float, what: str):
    """The chunks of an answer; OSError past `limit` bytes or `deadline` seconds (checked as each chunk comes)."""
    started, got = time.monotonic(), 0
    while chunk := response.read(1 << 20):
        got += len(chunk)
        if got > limit:
            raise OSError(f"{what} is over the {limit >> 20} MiB limit")
        if time.monotonic() - started > deadline:
            raise OSError(f"{what} did not arrive within {deadline:g} s")
        yield chunk


def fetch(filename: str, sha256: str, dest: Path, env: dict[str, str]) -> Path:
    """Download the sdist named `filename` from the index into dest, checking its sha256."""
    page = f"{index_url(env)}/flash-attn/"
    safe_page = re.sub(r"//[^/@]*@", "//***@", page)
    try:
        with urllib.request.urlopen(page, timeout=60) as response:
            html = b"".join(_capped(response, PAGE_LIMIT, PAGE_DEADLINE, f"the page {safe_page}")).decode(
                "utf-8", errors="replace")
        url = link_to(html, filename, page)
        if url is None:
            raise Unfit(f"{filename} is not on {safe_page}")
        path = dest / filename
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=300) as response, open(path, "wb") as out:
            for chunk in _capped(response, SDIST_LIMIT, SDIST_DEADLINE, filename):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, http.client.HTTPException) as exc:  # IncompleteRead, a garbled status line: not OSErrors
        raise Unfit(f"cannot download {filename} from {safe_page}: {exc or type(exc).__name__}") from None
    if digest.hexdigest() != sha256:
        path.unlink()
        raise Unfit(f"{filename} from {safe_page} has sha256 {digest.hexdigest()}, expected {sha256}: refusing it")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sdist", type=Path, nargs="?", help="the flash-attn sdist (.tar.gz) from PyPI")
    parser.add_argument("--fetch", metavar="FILE", help="download this sdist file from the package index instead")
    parser.add_argument("--sha256", help="with --fetch: the sdist's expected sha256")
    parser.add_argument("--log", type=Path, help="the compile's full log (default: OUT/flash-attn-compile.log)")
    parser.add_argument("--archs", required=True, help="GPU architectures, e.g. 90 or 80;90")
    parser.add_argument("--out", type=Path, required=True, help="folder for the wheel")
    parser.add_argument("--jobs", type=int, help="MAX_JOBS (default: from cores and memory)")
    parser.add_argument("--record", type=Path, help="write the compile's record (JSON) here")
    parser.add_argument("--check", action="store_true", help="check the preconditions, print the plan, compile nothing")
    args = parser.parse_args(argv)
    if not ARCHS_RE.fullmatch(args.archs):
        parser.error(f"--archs {args.archs!r}: expected numbers joined by ';', e.g. 90 or 80;90")
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if (args.sdist is None) == (args.fetch is None):
        parser.error("give the sdist's path or --fetch FILE, not both")
    if args.fetch and not (args.sha256 and re.fullmatch(r"[0-9a-f]{64}", args.sha256)):
        parser.error("--fetch needs --sha256 with 64 lowercase hex digits")
    if args.sdist is not None and not args.sdist.is_file():
        parser.error(f"{args.sdist}: no such file")
    archs = args.archs.split(";")
    try:
        settings = plan(archs, args.jobs, dict(os.environ))
        if args.fetch:
            args.out.mkdir(parents=True, exist_ok=True)
            args.sdist = fetch(args.fetch, args.sha256, Path(tempfile.mkdtemp(prefix="fa-sdist-")), dict(os.environ))
    except Unfit as exc:
        print(f"flash-attn compile: cannot start: {exc}", file=sys.stderr)
        return 3
    print(f"flash-attn compile: {args.sdist.name} for sm_{', sm_'.join(archs)} with torch {settings['torch']} "
          f"(CUDA {settings['torch_cuda']}, C++11 ABI {settings['cxx11_abi']}), nvcc {settings['nvcc_release']}; "
          f"MAX_JOBS={settings['jobs']} ({settings['cores']} cores, {settings['available_gb']} GB available, "
          f"about {job_memory_gb(settings['nvcc_threads'])} GB and {settings['nvcc_threads']} nvcc thread(s) per job)",
          flush=True)
    if args.check:
        return 0
    log_path = args.log or args.out / "flash-attn-compile.log"
    try:
        wheel, result = run_compile(args.sdist, args.out, settings, log_path)
    except RuntimeError as exc:
        print(f"flash-attn compile: {exc}", file=sys.stderr)
        return 4
    record = {**settings, **result, "sdist": args.sdist.name,
              "sdist_sha256": hashlib.sha256(args.sdist.read_bytes()).hexdigest()}
    if args.record:
        args.record.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"flash-attn compile: built {wheel.name} ({result['size'] / 1e6:.1f} MB, sha256 {result['sha256'][:16]}…) "
          f"from {result['units']} units in {format_duration(result['seconds'])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
