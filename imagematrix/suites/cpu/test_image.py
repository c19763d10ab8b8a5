"""CPU smoke tests inside one image: pins, pip check, imports, patches, labels, environment."""

from __future__ import annotations

import json
import shlex

import pytest

from imagematrix.in_image import patch_apply
from imagematrix.knowledge import extras, wheel_tags
from imagematrix.model import labels

PY = "/opt/venv/bin/python"
# Every installed distribution's Requires-Dist against what is installed: catches, e.g., transformers below vLLM's
# declared floor (tests/integration/test_pip_check_floor.py runs this same command on such an environment).
PIP_CHECK = "uv pip check --python {python}"


def test_every_pin_is_the_installed_version(host, row):
    script = ("import json, importlib.metadata as m; "
              f"print(json.dumps({{p: m.version(p) for p in {sorted(row.pins())!r}}}))")
    installed = json.loads(host.check_output(f"{PY} -c {json.dumps(script)}"))
    if "flash-attn" in installed:  # its wheels carry a local version naming CUDA, torch and ABI: +cu13torch2.11...
        installed["flash-attn"] = installed["flash-attn"].split("+")[0]
    assert installed == row.pins()


def test_flash_attn_extension_loads_and_its_wheel_is_labelled(host, row, inspect):
    """`import flash_attn_2_cuda` links the compiled kernels against this torch (imported first: it loads libc10 and
    the other libraries the extension needs): an ABI mismatch between the wheel and the row's torch shows here as
    "undefined symbol", not on the user's GPU."""
    if not row.flash_attn:
        pytest.skip("the row ships no flash-attn")
    result = host.run(f"{PY} -c 'import torch, flash_attn_2_cuda, flash_attn; print(flash_attn.__version__)'")
    assert result.rc == 0, f"import flash_attn_2_cuda failed:\n{result.stderr[-3000:]}"
    assert result.stdout.strip().split("+")[0] == row.flash_attn
    found = inspect["Config"]["Labels"]
    assert len(found[labels.FLASH_ATTN_SHA256]) == 64 and found[labels.FLASH_ATTN_ORIGIN]


# What a distribution declares and installed: its WHEEL `Tag:` lines and the ELF machine (e_machine) of each ELF file
# it installed (read from the header: the image may lack `file`)
WHEEL_FACTS = """
import importlib.metadata as m, json, sys
d = m.distribution(sys.argv[1])
tags = [l.split(":", 1)[1].strip() for l in (d.read_text("WHEEL") or "").splitlines() if l.startswith("Tag:")]
machines = []
for f in d.files or []:
    path = f.locate()
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        continue
    if head[:4] == b"\\x7fELF" and len(head) == 20:
        machines.append(int.from_bytes(head[18:20], "little" if head[5] == 1 else "big"))
print(json.dumps({"tags": tags, "machines": machines}))
"""


def test_pip_check_is_clean(host, platform):
    """uv pip check finds no incompatibility, but for a package whose WHEEL names its platform in a way
    knowledge/wheel-tags.yaml explains (NVIDIA's `manylinux2014_sbsa` on arm64), checked in the image: its tags and
    the machine of every ELF file it installed."""
    result = host.run(PIP_CHECK.format(python=PY))
    if result.rc == 0:
        return
    output = result.stdout + result.stderr
    names = wheel_tags.platform_reports(output)
    assert names, output
    for name in names:
        facts = json.loads(host.check_output(f"{PY} -c {shlex.quote(WHEEL_FACTS)} {shlex.quote(name)}"))
        why = wheel_tags.accepted(platform, facts["tags"], facts["machines"])
        assert why is None, f"{name}: built for a different platform, says uv pip check; {why}\n{output}"


@pytest.mark.parametrize("module", ["torch", "vllm", "verl", "transformers", "tensordict", "flash_attn"])
def test_imports(host, row, module):
    if module == "flash_attn" and not row.flash_attn:
        pytest.skip("the row ships no flash-attn")
    result = host.run(f"{PY} -c 'import {module}'")
    assert result.rc == 0, f"import {module} failed:\n{result.stderr[-3000:]}"


def test_extras_import(host, row):
    """Each package the row pins in `extras` (e.g. unsloth next to verl) imports, as knowledge/extras.yaml says how:
    one that refuses to import without a GPU (this test has none) must be found by importlib and its import must stop
    at exactly its GPU check, nowhere earlier; the GPU suite (test_gpu_extras.py) imports it on a GPU."""
    plan = extras.smoke_plan(row)
    if not plan:
        pytest.skip(f"row {row.id} pins no extras")
    failed = []
    for check in plan:
        if check.how == "find_spec":
            script = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({json.dumps(check.module)}) is None)"
            found = host.run(f"{PY} -c {shlex.quote(script)}")
            if found.rc != 0:
                failed.append(f"{check.dist}=={check.version}: module {check.module} is not installed{found.stderr[-1500:]}")
                continue
        result = host.run(f"{PY} -c {shlex.quote('import ' + check.module)}")
        if result.rc == 0 or (check.no_gpu_error and check.no_gpu_error in result.stderr):
            continue
        failed.append(f"{check.dist}=={check.version}: import {check.module} failed"
                      + (f" (expected only its no-GPU error {check.no_gpu_error!r})" if check.no_gpu_error else "")
                      + f":\n{result.stderr[-3000:]}")
    assert not failed, "\n".join(failed)


# Inside the image: every requirement of the extras that verl's [vllm] extra installs through verl itself (verl 0.9:
# verl[verl-core]) is installed, whether the row took [vllm] or, overriding vllm, named those extras in verl_extras.
VERL_CORE_SCRIPT = """
import importlib.metadata as m
from packaging.requirements import Requirement
reqs = [Requirement(r) for r in m.requires("verl") or []]
core = set()
for r in reqs:
    if r.name == "verl" and r.marker and r.marker.evaluate({"extra": "vllm"}):
        core |= set(r.extras) - {"vllm"}
missing = []
for extra in sorted(core):
    for r in reqs:
        if r.name != "verl" and r.marker and r.marker.evaluate({"extra": extra}):
            try:
                m.version(r.name)
            except m.PackageNotFoundError:
                missing.append(f"{r.name} (verl[{extra}])")
print(sorted(core), "missing:", ", ".join(missing) or "none")
"""


def test_verl_core_dependencies_are_installed(host, row):
    """verl 0.9.1's [vllm] extra = verl[verl-core] + pins. A row that overrides vllm installs verl without [vllm];
    without verl_extras [verl-core] its image lacked TransferQueue and the trainer stopped at start ("No module
    named 'transfer_queue'", seen on an H200 with the vLLM 0.31.0 row's wheels): this fails such an image on CPU."""
    result = host.run(f"{PY} -c {shlex.quote(VERL_CORE_SCRIPT)}")
    assert result.rc == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("missing: none"), result.stdout


def test_declared_patches_are_in_the_installed_files(host, expected):
    site = host.check_output(f"{PY} -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'")
    for patch in expected["patch_specs"]:
        text = host.file(f"{site}/{patch['file']}").content_string
        assert patch_apply.verify_text(text, patch) is None, patch["id"]


def test_patches_are_recorded_in_the_image(host, expected, inspect):
    record = json.loads(host.file("/opt/imagematrix/patches-applied.json").content_string)
    assert [r["id"] for r in record] == expected["patches"]
    assert inspect["Config"]["Labels"]["io.imagematrix.patches"] == ",".join(expected["patches"])


def test_labels_carry_the_pins_and_the_input_digest(inspect, expected, row):
    found = inspect["Config"]["Labels"]
    for key, value in expected["labels"].items():
        assert found.get(key) == value, key
    for name, version in row.pins().items():
        assert found[f"io.imagematrix.pin.{name}"] == version
    # the image was built from exactly the committed build context of its row
    assert found.get(labels.INPUT_DIGEST) == expected["input_digest"]


def test_environment_defaults_are_as_rendered(inspect, expected):
    env = dict(item.split("=", 1) for item in inspect["Config"]["Env"])
    for name, value in expected["env"].items():
        assert env.get(name) == value, name
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_the_nvidia_runtime_is_asked_for_the_compute_libraries(inspect):
    """Without these the NVIDIA container toolkit mounts only nvidia-smi's libraries (utility): CUDA finds no
    driver under the plain nvidia runtime and Kubernetes' device plugin."""
    env = dict(item.split("=", 1) for item in inspect["Config"]["Env"])
    assert env.get("NVIDIA_VISIBLE_DEVICES") == "all"
    assert {"compute", "utility"} <= set(env.get("NVIDIA_DRIVER_CAPABILITIES", "").split(","))


def test_triton_can_build_its_kernel_launchers(host, row):
    """Triton compiles a small C launcher for each kernel the first time it runs (vLLM's sampler, verl's fused ops),
    with the system C compiler and the Python headers: without them a GPU run fails with "Failed to find C compiler".
    The same compile, without a GPU: a C file that includes Python.h."""
    source = "#include <Python.h>\\nint main(void) { return Py_IsInitialized(); }\\n"
    ran = host.run(f"printf '{source}' | cc -x c -fsyntax-only -I/usr/include/python{row.python} -")
    assert ran.rc == 0, ran.stderr


def test_vllm_sampler_needs_no_compiler_the_image_lacks(host):
    """vLLM 0.21+ samples with FlashInfer by default, and FlashInfer compiles that kernel with nvcc at the first
    request: inside the vLLM 0.24.0 image on an H100 that failed ("Could not find nvcc"), since the image has no CUDA
    toolkit where FlashInfer looks. On CPU: when vLLM would use the FlashInfer sampler, FlashInfer must find nvcc."""
    script = ("import importlib.util, sys\n"
              "if importlib.util.find_spec('flashinfer') is None: sys.exit(print('no flashinfer'))\n"
              "import vllm.envs as envs\n"
              "if not envs.VLLM_USE_FLASHINFER_SAMPLER: sys.exit(print('FlashInfer sampler off'))\n"
              "from flashinfer.jit import cpp_ext\n"
              "print('nvcc at', cpp_ext.get_cuda_path())\n")
    ran = host.run(f"/opt/venv/bin/python -c {shlex.quote(script)}")
    assert ran.rc == 0, f"vLLM would sample with FlashInfer, which cannot compile here: {ran.stderr[-1500:]}"


@pytest.mark.parametrize("module", ["torchvision", "torchaudio"])
def test_torch_companions_load_their_native_code_against_this_torch(host, module):
    """vLLM 0.27-0.33 pin torchaudio==2.11.0 next to torch 2.13/2.14: an extension built for another torch fails
    when its native library loads (undefined symbol), which a bare import does not reach. Measured on the vLLM
    0.31.0 + torch 2.13.0 image: torchaudio 2.11.0's libtorchaudio is built on torch's stable ABI (abi3) and loads."""
    check = {
        "torchvision": "import torch, torchvision; torchvision.ops.nms(torch.rand(4, 4), torch.rand(4), 0.5)",
        "torchaudio": ("import os, torch, torchaudio; lib = os.path.join(os.path.dirname(torchaudio.__file__), 'lib'); "
                       "[torch.ops.load_library(os.path.join(lib, n)) for n in os.listdir(lib) "
                       "if n.split('.')[0] == 'libtorchaudio' and n.endswith('.so')]"),  # the core, not libsox's backend
    }[module]
    installed = host.run(f"{PY} -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec(\"{module}\") is None)'")
    if installed.rc != 0:
        pytest.skip(f"{module} is not installed in this image")
    result = host.run(f"{PY} -c {json.dumps(check)}")
    assert result.rc == 0, f"{module} does not load against this torch:\n{result.stderr[-3000:]}"


def test_the_image_is_for_its_platform(host, inspect, platform):
    """A multi-arch row's images (issue 29): each one's config names its platform, and its binaries run as that
    machine (under qemu-user on an amd64 host for linux/arm64)."""
    arch = platform.rsplit("/", 1)[-1]
    assert inspect["Architecture"] == arch, f"the image is for {inspect['Architecture']}, not {platform}"
    machine = host.check_output("uname -m")
    assert machine == {"amd64": "x86_64", "arm64": "aarch64"}[arch], f"the container runs as {machine}"
