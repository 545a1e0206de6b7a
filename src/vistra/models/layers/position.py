"""Fixed 2-D sine position encodings of feature maps (DETR, Mask2Former)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sine_position_encoding(
    pixel_mask: Tensor,
    num_feats: int = 128,
    temperature: float = 10000.0,
    normalize: bool = True,
    scale: float = 2 * math.pi,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Sine/cosine encoding of each real pixel's row and column.

    Positions count real pixels only (``pixel_mask`` True), so an image padded in a batch gets
    the same encoding as alone. With ``normalize`` the counts are divided by the image's own
    height / width and multiplied by ``scale``.

    Args:
        pixel_mask: [B, H, W] bool, True = real pixel.
        num_feats: channels per axis; the output has ``2 * num_feats`` (rows first, then columns).

    Returns:
        [B, 2 * num_feats, H, W].
    """
    real = pixel_mask.to(dtype)
    rows = real.cumsum(1)
    cols = real.cumsum(2)
    if normalize:
        eps = 1e-6
        rows = rows / (rows[:, -1:, :] + eps) * scale
        cols = cols / (cols[:, :, -1:] + eps) * scale
    index = torch.arange(num_feats, device=pixel_mask.device, dtype=dtype)
    frequencies = temperature ** (2 * torch.div(index, 2, rounding_mode="floor") / num_feats)
    pos_rows = rows[..., None] / frequencies  # [B, H, W, num_feats]
    pos_cols = cols[..., None] / frequencies
    pos_rows = torch.stack((pos_rows[..., 0::2].sin(), pos_rows[..., 1::2].cos()), dim=4).flatten(3)
    pos_cols = torch.stack((pos_cols[..., 0::2].sin(), pos_cols[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_rows, pos_cols), dim=3).permute(0, 3, 1, 2)
