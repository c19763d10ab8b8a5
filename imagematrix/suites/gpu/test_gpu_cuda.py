"""CUDA: the GPU is visible, the image's kernels cover its architecture, a matmul is right, bf16 advice."""

from __future__ import annotations

import gpusmoke
import pytest

pytestmark = pytest.mark.gpu


def test_torch_sees_a_gpu(torch, report):
    count = torch.cuda.device_count()
    assert count >= 1
    for i in range(count):
        props = torch.cuda.get_device_properties(i)
        major, minor = torch.cuda.get_device_capability(i)
        report(f"cuda:{i} {props.name}: sm_{major}{minor}, {props.total_memory / 2**30:.0f} GiB")


def test_compiled_kernels_cover_every_visible_gpu(torch, report):
    arch_list = list(torch.cuda.get_arch_list())
    report(f"torch kernels for: {' '.join(arch_list)}")
    for i in range(torch.cuda.device_count()):
        capability = tuple(torch.cuda.get_device_capability(i))
        sass, ptx = gpusmoke.coverage(capability, arch_list)
        name = torch.cuda.get_device_name(i)
        if not sass and not ptx:
            pytest.fail(gpusmoke.kernel_image_message(name, capability, arch_list, torch.__version__, torch.version.cuda))
        how = f"machine code {', '.join(sass)}" if sass else f"PTX JIT only, from {', '.join(ptx)} (slow first start)"
        report(f"cuda:{i} sm_{capability[0]}{capability[1]} covered by {how}")


def test_matmul_on_the_gpu_is_exact(torch):
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-8, 9, (256, 256), generator=gen).float()
    b = torch.randint(-8, 9, (256, 256), generator=gen).float()
    expected = a @ b  # small integers: every product and sum is exact in float32 (and TF32)
    for i in range(torch.cuda.device_count()):
        try:
            got = (a.to(f"cuda:{i}") @ b.to(f"cuda:{i}")).cpu()
            torch.cuda.synchronize(i)
        except RuntimeError as exc:
            if gpusmoke.NO_KERNEL_IMAGE in str(exc):
                capability = tuple(torch.cuda.get_device_capability(i))
                pytest.fail(gpusmoke.kernel_image_message(torch.cuda.get_device_name(i), capability,
                                                          list(torch.cuda.get_arch_list()), torch.__version__,
                                                          torch.version.cuda))
            raise
        assert torch.equal(got, expected), f"cuda:{i}: matmul differs from the CPU in {(got != expected).sum()} places"


def test_bf16_is_advised_only_where_the_gpu_has_it(torch, capability, report):
    advice = gpusmoke.dtype_advice(capability)
    try:
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.4 has no including_emulation: it answers for native support
        native = torch.cuda.is_bf16_supported()
    report(f"sm_{capability[0]}{capability[1]}: native bf16 {'yes' if native else 'no'}; "
           f"use dtype={advice} (vLLM dtype=, verl model dtype)")
    # Nothing in the image may make a low precision the silent default for every tensor.
    assert torch.get_default_dtype() == torch.float32, f"default dtype is {torch.get_default_dtype()}"
    # torch must agree with the capability, so code that asks it (vLLM's dtype='auto', verl) gets the advice.
    assert native == (advice == "bfloat16"), (
        f"torch says native bf16 is {native} on sm_{capability[0]}{capability[1]}, expected {advice == 'bfloat16'}")
    if native:
        x = torch.ones(64, 64, device="cuda", dtype=torch.bfloat16)
        assert torch.equal((x @ x).float().cpu(), torch.full((64, 64), 64.0))
