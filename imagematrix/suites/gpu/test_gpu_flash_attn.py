"""flash-attn (rows that ship it): forward and backward agree with PyTorch's SDPA on small random tensors."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_flash_attn_matches_sdpa_forward_and_backward(torch, capability, smoke, need, causal):
    if smoke.ships("flash-attn") is False:
        pytest.skip(f"row {smoke.row.id} ships no flash-attn")
    if capability < (8, 0):
        pytest.skip(f"flash-attn 2 needs sm80 or newer (Ampere+); this GPU is sm_{capability[0]}{capability[1]}")
    flash_attn = need("flash-attn")
    gen = torch.Generator(device="cuda").manual_seed(0)
    batch, seqlen, heads, dim = 2, 128, 4, 64
    q, k, v = (torch.randn(batch, seqlen, heads, dim, device="cuda", dtype=torch.bfloat16, generator=gen)
               .requires_grad_() for _ in range(3))
    grad_out = torch.randn(batch, seqlen, heads, dim, device="cuda", dtype=torch.bfloat16, generator=gen)

    out = flash_attn.flash_attn_func(q, k, v, causal=causal)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad_out)

    # Reference: SDPA in float32 on the same inputs (SDPA takes batch, heads, seq, dim).
    ref_in = [t.detach().float().transpose(1, 2).requires_grad_() for t in (q, k, v)]
    ref = torch.nn.functional.scaled_dot_product_attention(*ref_in, is_causal=causal)
    ref_grads = torch.autograd.grad(ref, ref_in, grad_out.float().transpose(1, 2))
    ref = ref.transpose(1, 2)

    assert out.shape == ref.shape and out.dtype == torch.bfloat16
    for name, got in {"out": out, "dq": dq, "dk": dk, "dv": dv}.items():
        assert torch.isfinite(got).all(), f"flash-attn {name} has non-finite values"
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    for name, got, want in zip(("dq", "dk", "dv"), (dq, dk, dv), ref_grads, strict=True):
        torch.testing.assert_close(got.float(), want.transpose(1, 2), atol=5e-2, rtol=5e-2, msg=lambda m, n=name: f"{n}: {m}")
