"""Images as sequences of patches and back (the MAE layout: patches row-major, pixels (row,
column, channel) within a patch)."""

from __future__ import annotations

from torch import Tensor


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """[B, C, H, W] -> [B, (H/p)*(W/p), p*p*C], patches in row-major order, pixels (row, col, c)."""
    batch, channels, height, width = images.shape
    rows, cols = height // patch_size, width // patch_size
    patches = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, -1)


def unpatchify(patches: Tensor, patch_size: int, grid: tuple[int, int]) -> Tensor:
    """Inverse of ``patchify``: [B, L, p*p*C] -> [B, C, H, W]."""
    batch = patches.shape[0]
    rows, cols = grid
    channels = patches.shape[-1] // patch_size**2
    images = patches.reshape(batch, rows, cols, patch_size, patch_size, channels)
    return images.permute(0, 5, 1, 3, 2, 4).reshape(
        batch, channels, rows * patch_size, cols * patch_size
    )
