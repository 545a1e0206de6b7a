"""Scaled dot-product attention with a CPU bfloat16 fast path, and timm's ViT attention on it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers.attention import Attention
from torch import Tensor

# Up to this many keys the explicit form below beats PyTorch's fused CPU kernel in bfloat16,
# forward + backward; above it the fused kernel wins (`benchmarks/mae.py --attention`).
EXPLICIT_CPU_BF16_MAX_KEYS = 160


def scaled_dot_product_attention(
    queries: Tensor, keys: Tensor, values: Tensor, dropout_p: float = 0.0
) -> Tensor:
    """softmax(q kᵀ / √d) v: queries [B, H, Nq, d], keys and values [B, H, Nk, d] -> [B, H, Nq, d].

    PyTorch's fused kernel, except on CPU in bfloat16 with few keys (the MAE encoder sees 50
    tokens), where the fused kernel is slow: there the whole product is computed explicitly in
    float32 and only the output is rounded to bfloat16, at least as accurate as the fused
    kernel (tests/test_attention.py).
    """
    explicit = (
        queries.device.type == "cpu"
        and queries.dtype == torch.bfloat16
        and keys.shape[-2] <= EXPLICIT_CPU_BF16_MAX_KEYS
        and dropout_p == 0.0
    )
    if not explicit:
        return F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout_p)
    return float32_attention(queries, keys, values)


def float32_attention(queries: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """softmax(q kᵀ / √d) v computed in float32 (autocast off), returned in the values' dtype."""
    with torch.autocast(queries.device.type, enabled=False):  # else the products run in bf16
        scores = (queries.float() * queries.shape[-1] ** -0.5) @ keys.float().transpose(-2, -1)
        return (scores.softmax(dim=-1) @ values.float()).to(values.dtype)


class ViTAttention(Attention):
    """timm's ViT ``Attention`` (same parameters and state-dict keys) on
    ``scaled_dot_product_attention``, optionally for a subset of query rows.

    ``forward(x, rows=rows)`` with x [B, N, D] and rows [B, R] equals ``forward(x)`` at those
    rows, [B, R, D]: every token is still a key and a value.
    """

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        rows: Tensor | None = None,
    ) -> Tensor:
        if attn_mask is not None or is_causal or self.gate is not None:
            if rows is not None:
                raise NotImplementedError("ViTAttention: rows with a mask or a gate")
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        batch, length, _ = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, self.head_dim)
        # The same views as timm's permute-then-unbind, but the backward stacks the gradients
        # straight into qkv's layout, one copy fewer.
        queries, keys, values = (part.transpose(1, 2) for part in qkv.unbind(2))  # [B, h, N, d]
        if rows is not None:
            index = rows[:, None, :, None].expand(-1, self.num_heads, -1, self.head_dim)
            queries = queries.gather(2, index)
        queries, keys = self.q_norm(queries), self.k_norm(keys)
        dropout = self.attn_drop.p if self.training else 0.0
        attended = scaled_dot_product_attention(queries, keys, values, dropout)
        attended = attended.transpose(1, 2).reshape(batch, queries.shape[2], self.attn_dim)
        return self.proj_drop(self.proj(self.norm(attended)))
