"""Vision Transformer pieces shared by the MAE and the fine-tuned classifier: size presets,
the fixed 2-D sine-cosine position table, random masking, a block run at chosen rows, and
layer-wise lr decay indices."""

from __future__ import annotations

import math

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

# (width, depth, heads) of the ViT sizes used in the paper and in timm.
PRESETS = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}


def sincos_2d_position_embedding(width: int, grid: tuple[int, int], cls_token: bool) -> Tensor:
    """Fixed 2-D sine-cosine position embedding, the MAE repository's layout.

    Returns [1 + H*W, width] with cls_token (its row is zeros), else [H*W, width]. The first
    half of the channels encodes the column index, the second half the row index; each half is
    [sin(pos * w_k), cos(pos * w_k)] with w_k = 10000^(-k / (width/4)).
    """
    if width % 4:
        raise ValueError(f"position embedding width must be divisible by 4, got {width}")
    rows, cols = grid
    frequencies = 1.0 / 10000 ** (torch.arange(width // 4, dtype=torch.float64) / (width / 4))
    row, col = torch.meshgrid(
        torch.arange(rows, dtype=torch.float64),
        torch.arange(cols, dtype=torch.float64),
        indexing="ij",
    )
    angles_col = col.reshape(-1, 1) * frequencies  # [H*W, width/4]
    angles_row = row.reshape(-1, 1) * frequencies
    table = torch.cat(
        [angles_col.sin(), angles_col.cos(), angles_row.sin(), angles_row.cos()], dim=1
    )
    if cls_token:
        table = torch.cat([torch.zeros(1, width, dtype=torch.float64), table])
    return table.float()


def random_masking(
    tokens: Tensor, mask_ratio: float, noise: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample random masking by argsort of uniform noise (the MAE recipe).

    Args:
        tokens: [B, L, D] patch tokens.
        mask_ratio: share of the L patches to remove.
        noise: optional [B, L] noise to make the choice reproducible; lowest noise is kept.

    Returns:
        visible [B, L_keep, D] with L_keep = int(L * (1 - mask_ratio)),
        mask [B, L] float, 1 = removed, in the original patch order,
        ids_restore [B, L] long, the permutation that undoes the shuffle.
    """
    batch, length, width = tokens.shape
    keep = int(length * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(batch, length, device=tokens.device)
    elif noise.shape != (batch, length):
        raise ValueError(f"noise must be [B, L]={batch, length}, got {tuple(noise.shape)}")
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    ids_keep = ids_shuffle[:, :keep]
    visible = tokens.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, width))
    mask = torch.ones(batch, length, device=tokens.device)
    mask[:, :keep] = 0
    mask = mask.gather(1, ids_restore)
    return visible, mask, ids_restore


def block_rows(block: Block, hidden: Tensor, rows: Tensor) -> Tensor:
    """``block(hidden)`` at ``rows`` only: hidden [B, N, D], rows [B, R] -> [B, R, D].

    Every token is still a key and a value, but only the R query rows go through the attention
    output, the residuals and the MLP. Used for the decoder's last block, whose outputs at
    visible patches the loss never reads. The block's attention must be a ``ViTAttention``.
    """
    attended = block.attn(block.norm1(hidden), rows=rows)
    kept = hidden.gather(1, rows[..., None].expand(-1, -1, hidden.shape[-1]))
    kept = kept + block.drop_path1(block.ls1(attended))
    return kept + block.drop_path2(block.ls2(block.mlp(block.norm2(kept))))


def vit_layer_of(name: str, num_layers: int) -> int:
    """Layer-wise lr decay index of a ViT parameter in timm / MAE names: 0 for the embeddings
    (``cls_token``, ``pos_embed``, ``patch_embed``), i + 1 for ``blocks.i``, ``num_layers`` for
    everything after the blocks (norms, decoder, head)."""
    if name.startswith(("cls_token", "pos_embed", "patch_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


def run_blocks(blocks, hidden: Tensor, recompute: bool = False) -> Tensor:
    """``hidden`` through ``blocks`` in turn; with ``recompute`` (activation checkpointing,
    in training) each block keeps only its input and recomputes the rest in the backward pass:
    the same values and gradients for less memory."""
    for block in blocks:
        if recompute and torch.is_grad_enabled():
            hidden = checkpoint(block, hidden, use_reentrant=False)
        else:
            hidden = block(hidden)
    return hidden


def transformer_blocks(network: nn.Module) -> list[nn.Module]:
    """The ViT blocks of ``network`` (encoder and decoder), the units FSDP shards by."""
    return [module for module in network.modules() if isinstance(module, Block)]


def resize_position_embedding(pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """[1, 1 + h*w, D] (class token first) -> [1, 1 + H*W, D] for the patch grid ``grid``.

    The grid part is resized bicubically without antialiasing (``align_corners=False``), as
    the MAE and DeiT fine-tuning code does; the class token is kept. A square old grid is
    assumed (the MAE and ViT checkpoints people have)."""
    from timm.layers import resample_abs_pos_embed

    old = round(math.sqrt(pos_embed.shape[1] - 1))
    if old * old != pos_embed.shape[1] - 1:
        raise ValueError(
            f"position embedding of {pos_embed.shape[1] - 1} patches is not a square grid"
        )
    return resample_abs_pos_embed(pos_embed, list(grid), [old, old], num_prefix_tokens=1,
                                  interpolation="bicubic", antialias=False)  # fmt: skip
