"""Mask2Former's masked-attention transformer decoder (Cheng et al. 2022, section 3.2).

Learnable query features and query positions; each layer cross-attends to one scale of the
pixel decoder (1/32, 1/16, 1/8, 1/32, ...) **restricted to the foreground of the mask the
previous prediction gave** (thresholded at 0.5 after resizing to that scale), then
self-attends, then runs an FFN (post-norm). A query whose mask would hide every pixel attends
everywhere instead. Class logits and mask logits are predicted from the queries before the
first layer and after every layer; all of them are supervised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vistra.models.layers import MLP, Attention, FeedForward, sine_position_encoding


class MaskedAttentionLayer(nn.Module):
    """Masked cross-attention -> self-attention -> FFN, each followed by residual + LayerNorm."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.cross_attn = Attention(dim, heads, dropout)
        self.self_attn = Attention(dim, heads, dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, attend: Tensor
    ) -> Tensor:
        """x, query_pos [B, Q, d]; memory, memory_pos [B, S, d]; attend [B, 1, Q, S] bool."""
        attended = self.cross_attn(x + query_pos, memory + memory_pos, memory, attn_mask=attend)
        x = self.norm1(x + self.dropout(attended))
        with_pos = x + query_pos
        x = self.norm2(x + self.dropout(self.self_attn(with_pos, with_pos, x)))
        return self.norm3(x + self.dropout(self.ffn(x)))


class MaskedAttentionDecoder(nn.Module):
    """Queries -> class and mask predictions at every layer.

    Args:
        in_channels: channels of the pixel decoder's multi-scale maps.
        num_classes: foreground classes; the class head has ``num_classes + 1`` outputs.
        dim, heads, ffn_dim, dropout: the transformer (256, 8, 2048, 0).
        num_layers: decoder layers (9 = three rounds over the three scales).
        num_queries: object queries (100).
        mask_dim: channels of the per-pixel mask features.
    """

    num_levels = 3

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        dim: int = 256,
        heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.0,
        num_layers: int = 9,
        num_queries: int = 100,
        mask_dim: int = 256,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.input_proj = nn.ModuleList(
            nn.Conv2d(in_channels, dim, 1) if in_channels != dim else nn.Identity()
            for _ in range(self.num_levels)
        )
        for projection in self.input_proj:
            if isinstance(projection, nn.Conv2d):
                nn.init.kaiming_uniform_(projection.weight, a=1)
                nn.init.zeros_(projection.bias)
        self.level_embed = nn.Embedding(self.num_levels, dim)
        self.query_feat = nn.Embedding(num_queries, dim)
        self.query_embed = nn.Embedding(num_queries, dim)
        self.layers = nn.ModuleList(
            MaskedAttentionLayer(dim, heads, ffn_dim, dropout) for _ in range(num_layers)
        )
        self.decoder_norm = nn.LayerNorm(dim)
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self.mask_embed = MLP(dim, dim, mask_dim, 3)

    def forward(self, maps: list[Tensor], mask_features: Tensor) -> list[dict]:
        """maps: pixel-decoder outputs [B, C, h_l, w_l] (coarsest first); mask_features
        [B, mask_dim, H/4, W/4].

        Returns one ``{"pred_logits" [B, Q, C+1], "pred_masks" [B, Q, H/4, W/4]}`` per
        prediction, the last being the final one (``num_layers + 1`` in all).
        """
        memories, positions, shapes = [], [], []
        for level, x in enumerate(maps[: self.num_levels]):
            full = torch.ones(x.shape[0], *x.shape[-2:], dtype=torch.bool, device=x.device)
            pos = sine_position_encoding(full, self.query_feat.embedding_dim // 2, dtype=x.dtype)
            positions.append(pos.flatten(2).transpose(1, 2))
            memory = self.input_proj[level](x).flatten(2).transpose(1, 2)
            memories.append(memory + self.level_embed.weight[level])
            shapes.append(tuple(x.shape[-2:]))
        batch = mask_features.shape[0]
        query_pos = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)
        x = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)

        predictions = []
        prediction, attend = self.predict(x, mask_features, shapes[0])
        predictions.append(prediction)
        for index, layer in enumerate(self.layers):
            level = index % self.num_levels
            x = layer(x, query_pos, memories[level], positions[level], attend)
            prediction, attend = self.predict(
                x, mask_features, shapes[(index + 1) % self.num_levels]
            )
            predictions.append(prediction)
        return predictions

    def predict(self, x: Tensor, mask_features: Tensor, attention_size: tuple[int, int]):
        """Class and mask logits of queries ``x`` [B, Q, d], and where each query may attend at
        the next scale: [B, 1, Q, h*w] bool (all True for a query whose mask is empty there)."""
        x = self.decoder_norm(x)
        logits = self.class_embed(x)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(x), mask_features)
        resized = F.interpolate(masks, size=attention_size, mode="bilinear", align_corners=False)
        attend = resized.detach().sigmoid().flatten(2) >= 0.5  # [B, Q, h*w]
        attend = attend | ~attend.any(-1, keepdim=True)
        return {"pred_logits": logits, "pred_masks": masks}, attend.unsqueeze(1)
