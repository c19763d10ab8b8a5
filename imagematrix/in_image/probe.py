"""What an environment has, as JSON on stdout: run by `build.py doctor` with this Python or inside an image.

Standard library only (torch is used when it imports). Secrets in the environment are never printed: variables
whose name says PASS, TOKEN, KEY, SECRET, AUTH, CREDENTIAL or COOKIE show only that they are set, and URL
userinfo in the others is replaced by ***.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys

PACKAGES = ("verl", "vllm", "torch", "flash-attn", "tensordict", "transformers", "ray")
ENV_PREFIXES = ("VLLM_", "NCCL_", "GLOO_", "CUDA_", "TORCH_", "HF_", "NVIDIA_", "IMAGEMATRIX_", "PYTORCH_")
# The same rules as imagematrix/model/secrets.py (this file runs alone inside images; a test keeps them in step).
SECRET_WORDS = ("PASS", "TOKEN", "KEY", "SECRET", "AUTH", "CREDENTIAL", "COOKIE")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")


def packages() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def torch_facts() -> dict:
    try:
        import torch
    except Exception as exc:  # not installed, or broken: both are facts
        return {"error": f"{type(exc).__name__}: {exc}"}
    facts = {"version": torch.__version__, "cuda": torch.version.cuda, "archs": [], "gpus": []}
    try:
        facts["archs"] = torch._C._cuda_getArchFlags().split()
    except Exception:
        pass
    try:
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            facts["gpus"].append({"name": torch.cuda.get_device_name(index), "capability": [major, minor]})
    except Exception as exc:
        facts["cuda_error"] = f"{type(exc).__name__}: {exc}"
    return facts


def driver() -> str | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    proc = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                          text=True, timeout=10)
    lines = proc.stdout.split()
    return lines[0] if proc.returncode == 0 and lines else None


def environment() -> dict[str, str]:
    return {k: ("<set>" if any(w in k.upper() for w in SECRET_WORDS)
                else _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", v))
            for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)}


def main() -> int:
    facts = {"python": platform.python_version(), "executable": sys.executable, "packages": packages(),
             "torch": torch_facts(), "driver": driver(), "env": environment()}
    print(json.dumps(facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
