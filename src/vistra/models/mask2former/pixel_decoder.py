"""Mask2Former's pixel decoder: deformable-attention encoder over 1/8-1/32, FPN up to 1/4.

The three coarsest backbone maps are projected to ``dim`` channels (1x1 conv + GroupNorm),
tagged with a learned level embedding plus sine positions, flattened into one sequence and
refined by ``num_layers`` post-norm layers of multi-scale deformable self-attention (every
pixel of every level samples ``points`` locations per head on each level around itself). The
1/4 map joins through an FPN step (lateral 1x1 conv + upsampled 1/8 output, then a 3x3 conv),
and a 1x1 conv turns that into the per-pixel mask features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vistra.models.layers import sine_position_encoding
from vistra.models.layers.ms_deform_attn import MultiScaleDeformableAttention


def conv_norm(in_channels: int, out_channels: int, kernel_size: int, bias: bool) -> nn.Sequential:
    """Conv + GroupNorm(32): the projection unit of the pixel decoder."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias),
        nn.GroupNorm(32, out_channels),
    )


class DeformableEncoderLayer(nn.Module):
    """x = norm1(x + MSDeformAttn(x + pos, x)); x = norm2(x + FFN(x)) (post-norm, ReLU)."""

    def __init__(self, dim: int, heads: int, levels: int, points: int, ffn_dim: int,
                 dropout: float) -> None:  # fmt: skip
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(dim, heads, levels, points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor, reference_points: Tensor,
                spatial_shapes: list[tuple[int, int]]) -> Tensor:  # fmt: skip
        """x, pos [B, S, d]; reference_points [B, S, L, 2] -> [B, S, d]."""
        attended = self.self_attn(x + pos, reference_points, x, spatial_shapes)
        x = self.norm1(x + self.dropout(attended))
        hidden = self.dropout(F.relu(self.linear1(x)))
        return self.norm2(x + self.dropout(self.linear2(hidden)))


def grid_reference_points(spatial_shapes: list[tuple[int, int]], device, dtype) -> Tensor:
    """Centre of every pixel of every level in 0..1 (x, y): [S, 2], levels concatenated."""
    points = []
    for height, width in spatial_shapes:
        ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1))
    return torch.cat(points)


class PixelDecoder(nn.Module):
    """Multi-scale deformable-attention pixel decoder (Mask2Former, section 3.2 / 4.1).

    Args:
        in_channels: channels of the backbone maps at strides 4, 8, 16, 32 (finest first).
        dim: width of the decoder (256).
        mask_dim: channels of the per-pixel mask features (256).
        num_layers, heads, points, ffn_dim, dropout: the deformable encoder (6, 8, 4, 1024, 0).
    """

    num_levels = 3

    def __init__(
        self,
        in_channels: list[int],
        dim: int = 256,
        mask_dim: int = 256,
        num_layers: int = 6,
        heads: int = 8,
        points: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(in_channels) != self.num_levels + 1:
            raise ValueError(f"need 4 backbone maps (strides 4..32), got {len(in_channels)}")
        # Coarsest first: input_proj[0] takes the 1/32 map, as in the original.
        self.input_proj = nn.ModuleList(
            conv_norm(channels, dim, 1, bias=True) for channels in in_channels[:0:-1]
        )
        self.level_embed = nn.Parameter(torch.randn(self.num_levels, dim))
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(dim, heads, self.num_levels, points, ffn_dim, dropout)
            for _ in range(num_layers)
        )
        self.lateral = conv_norm(in_channels[0], dim, 1, bias=False)
        self.output = nn.Sequential(*conv_norm(dim, dim, 3, bias=False), nn.ReLU())
        self.mask_features = nn.Conv2d(dim, mask_dim, 1)
        for projection in self.input_proj:
            nn.init.xavier_uniform_(projection[0].weight, gain=1)
            nn.init.zeros_(projection[0].bias)
        for conv in (self.lateral[0], self.output[0], self.mask_features):
            nn.init.kaiming_uniform_(conv.weight, a=1)  # c2_xavier_fill, as detectron2
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """features: backbone maps [B, C_i, H/s, W/s] for s = 4, 8, 16, 32.

        Returns ``(mask_features [B, mask_dim, H/4, W/4], [maps at 1/32, 1/16, 1/8] [B, d, h, w])``.
        """
        coarse_first = features[:0:-1]
        projected = [proj(x) for proj, x in zip(self.input_proj, coarse_first)]
        spatial_shapes = [tuple(x.shape[-2:]) for x in projected]
        batch = projected[0].shape[0]
        tokens, positions = [], []
        for level, x in enumerate(projected):
            full = torch.ones(batch, *x.shape[-2:], dtype=torch.bool, device=x.device)
            pos = sine_position_encoding(full, x.shape[1] // 2, dtype=x.dtype)
            positions.append(pos.flatten(2).transpose(1, 2) + self.level_embed[level])
            tokens.append(x.flatten(2).transpose(1, 2))
        x, pos = torch.cat(tokens, 1), torch.cat(positions, 1)  # [B, S, d]
        reference = grid_reference_points(spatial_shapes, x.device, x.dtype)
        reference = reference[None, :, None, :].expand(batch, -1, self.num_levels, -1)
        for layer in self.layers:
            x = layer(x, pos, reference, spatial_shapes)
        maps = [
            level.transpose(1, 2).reshape(batch, -1, h, w)
            for level, (h, w) in zip(x.split([h * w for h, w in spatial_shapes], 1), spatial_shapes)
        ]
        finest = self.lateral(features[0])
        finest = finest + F.interpolate(maps[-1], size=finest.shape[-2:], mode="bilinear",
                                        align_corners=False)  # fmt: skip
        return self.mask_features(self.output(finest)), maps
