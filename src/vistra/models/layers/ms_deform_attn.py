"""Multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021) in pure PyTorch.

Each query looks at ``points`` locations per head and feature level, placed around its
reference point by learned offsets, and averages the bilinearly sampled values with learned
softmax weights. Sampling is ``torch.nn.functional.grid_sample``, so the layer needs no compiled
extension: it runs on CPU and exports to ONNX.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def multi_scale_deformable_attention(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Weighted sum of bilinearly sampled values.

    Args:
        value: [B, S, H, Dh], the levels' flattened (row-major) maps concatenated, S = sum h*w.
        spatial_shapes: (h, w) of each level, in the order of ``value``.
        sampling_locations: [B, Q, H, L, P, 2] (x, y) in 0..1 of each level's map; outside
            points read zeros.
        attention_weights: [B, Q, H, L, P], summing to 1 over (L, P) per query and head.

    Returns:
        [B, Q, H * Dh].
    """
    batch, _, heads, head_dim = value.shape
    queries, levels, points = (
        sampling_locations.shape[1],
        sampling_locations.shape[3],
        sampling_locations.shape[4],
    )
    if levels != len(spatial_shapes):
        raise ValueError(f"{levels} levels of sampling locations for {len(spatial_shapes)} maps")
    grids = 2 * sampling_locations - 1  # grid_sample's -1..1 with align_corners=False
    # Points before queries ([.., P, Q]) and each level weighted as it is sampled: the sum over
    # points then runs over an outer dimension with queries contiguous, and no [.., L, P] stack
    # is built (compared with the stacked form in benchmarks/mask2former.py --components).
    weights = attention_weights.permute(0, 2, 3, 4, 1).reshape(
        batch * heads, 1, levels, points, queries
    )
    maps = value.split([h * w for h, w in spatial_shapes], dim=1)
    output = None
    for level, (height, width) in enumerate(spatial_shapes):
        level_map = maps[level].permute(0, 2, 3, 1).reshape(batch * heads, head_dim, height, width)
        grid = (
            grids[:, :, :, level].permute(0, 2, 3, 1, 4).reshape(batch * heads, points, queries, 2)
        )
        sampled = F.grid_sample(
            level_map, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # [B*H, Dh, P, Q]
        weighted = (sampled * weights[:, :, level]).sum(2)  # [B*H, Dh, Q]
        output = weighted if output is None else output + weighted
    return output.view(batch, heads * head_dim, queries).transpose(1, 2)


class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention of queries over a multi-scale feature pyramid.

    Args:
        dim: model width d; heads: attention heads (d divisible by heads).
        levels: feature levels; points: sampling points per head and level (paper: 4).

    Initialisation as Deformable DETR: offsets start on a ring of directions, one per head,
    at distances 1..points; attention weights start uniform.
    """

    def __init__(self, dim: int = 256, heads: int = 8, levels: int = 3, points: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads, self.levels, self.points = dim, heads, levels, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        ring = directions[:, None, None, :].repeat(1, self.levels, self.points, 1)
        ring *= torch.arange(1, self.points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(ring.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for projection in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(projection.weight)
            nn.init.zeros_(projection.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        spatial_shapes: list[tuple[int, int]],
        value_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """query [B, Q, d] (position already added), reference_points [B, Q, L, 2] (x, y) in
        0..1 per level, value [B, S, d], value_padding_mask [B, S] True = padding. -> [B, Q, d].
        """
        batch, queries, _ = query.shape
        values = self.value_proj(value)
        if value_padding_mask is not None:
            values = values.masked_fill(value_padding_mask[..., None], 0.0)
        values = values.view(batch, -1, self.heads, self.dim // self.heads)
        offsets = self.sampling_offsets(query).view(
            batch, queries, self.heads, self.levels, self.points, 2
        )
        weights = self.attention_weights(query).view(
            batch, queries, self.heads, self.levels * self.points
        )
        weights = weights.softmax(-1).view(batch, queries, self.heads, self.levels, self.points)
        # Offsets are in pixels of each level: divide by that level's (w, h).
        sizes = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype,
                             device=query.device)  # fmt: skip
        locations = (
            reference_points[:, :, None, :, None, :] + offsets / sizes[None, None, None, :, None, :]
        )
        output = multi_scale_deformable_attention(values, spatial_shapes, locations, weights)
        return self.output_proj(output)
