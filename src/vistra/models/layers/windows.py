"""Window attention's pieces (ViTDet, Swin-style windows over a plain ViT's grid): splitting a
[B, h, w, D] grid into windows and back, and the table of relative-position embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def relative_table(size: int, table: Tensor) -> Tensor:
    """Embeddings of the offsets between ``size`` query and key positions along one axis:
    table [L, d] -> [size, size, d] with entry [i, j] = table[i - j + size - 1]. A table learnt
    for another length (L != 2 size - 1) is resized linearly first."""
    length = 2 * size - 1
    if table.shape[0] != length:
        table = F.interpolate(table.T[None], size=length, mode="linear")[0].T
    offsets = torch.arange(size, device=table.device)
    return table[offsets[:, None] - offsets[None, :] + size - 1]


def window_partition(x: Tensor, size: int) -> tuple[Tensor, tuple[int, int]]:
    """x [B, h, w, D] -> windows [B * nh * nw, size, size, D] and the padded (h, w)."""
    batch, height, width, dim = x.shape
    x = F.pad(x, (0, 0, 0, (-width) % size, 0, (-height) % size))
    padded = x.shape[1], x.shape[2]
    x = x.view(batch, padded[0] // size, size, padded[1] // size, size, dim)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, size, size, dim), padded


def window_merge(windows: Tensor, size: int, padded: tuple[int, int],
                 grid: tuple[int, int]) -> Tensor:  # fmt: skip
    """The inverse of ``window_partition``: [B * nh * nw, size, size, D] -> [B, h, w, D]."""
    rows, cols = padded[0] // size, padded[1] // size
    x = windows.view(-1, rows, cols, size, size, windows.shape[-1]).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, padded[0], padded[1], windows.shape[-1])[:, : grid[0], : grid[1]]
