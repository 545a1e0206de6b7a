"""The attention core with its CPU bfloat16 fast path, and timm-compatible ViTAttention."""

import pytest
import torch
import torch.nn.functional as F
from timm.layers.attention import Attention

from vistra.models.layers import attention as attention_module
from vistra.models.layers.attention import ViTAttention, scaled_dot_product_attention


def qkv(length, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(2, 4, length, 32, generator=generator) * 2).to(dtype).requires_grad_()
        for _ in range(3)
    ]


def test_explicit_bf16_path_is_taken_and_at_least_as_accurate_as_the_fused_kernel(monkeypatch):
    queries, keys, values = qkv(50, torch.bfloat16)
    doubles = [t.detach().double().requires_grad_() for t in (queries, keys, values)]
    reference = F.scaled_dot_product_attention(*doubles)
    reference.pow(2).sum().backward()
    fused = F.scaled_dot_product_attention(queries, keys, values).detach()
    fused_error = (fused.double() - reference).abs().max()

    def no_fused_kernel(*args, **kwargs):
        raise AssertionError("the fused kernel ran")

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", no_fused_kernel)
    output = scaled_dot_product_attention(queries, keys, values)
    assert output.dtype == torch.bfloat16 and output.shape == (2, 4, 50, 32)
    assert (output.double() - reference).abs().max() <= fused_error
    # Gradients agree with float64 to bfloat16 precision.
    output.float().pow(2).sum().backward()
    for ours, exact in zip((queries, keys, values), doubles):
        torch.testing.assert_close(ours.grad.double(), exact.grad, rtol=0.05, atol=0.1)


def test_explicit_path_keeps_float32_scores_under_autocast():
    queries, keys, values = qkv(50, torch.bfloat16)
    plain = scaled_dot_product_attention(queries, keys, values)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = scaled_dot_product_attention(queries, keys, values)
    assert torch.equal(plain, under_autocast)


@pytest.mark.parametrize("length, dtype", [(50, torch.float32), (197, torch.bfloat16)])
def test_fused_kernel_elsewhere(length, dtype):
    queries, keys, values = qkv(length, dtype)
    expected = F.scaled_dot_product_attention(queries, keys, values)
    assert torch.equal(scaled_dot_product_attention(queries, keys, values), expected)


def test_vit_attention_matches_timm_and_its_rows():
    torch.manual_seed(0)
    ours, theirs = ViTAttention(64, num_heads=4, qkv_bias=True), Attention(64, 4, qkv_bias=True)
    theirs.load_state_dict(ours.state_dict())
    tokens = torch.randn(3, 11, 64)
    expected = theirs(tokens)
    torch.testing.assert_close(ours(tokens), expected)
    rows = torch.stack([torch.randperm(11)[:4] for _ in range(3)])
    torch.testing.assert_close(
        ours(tokens, rows=rows), expected.gather(1, rows[..., None].expand(-1, -1, 64))
    )
