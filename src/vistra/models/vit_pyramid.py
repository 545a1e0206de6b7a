"""A plain ViT as a detection and segmentation backbone, built as ViTDet builds it.

Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection" (ECCV 2022):
the pre-trained ViT is kept plain. Its absolute position table (learnt at the pre-training
size) is resized to each input's patch grid; most blocks attend within 14 x 14 windows and a
few (evenly spaced) attend globally; decomposed relative positions are added to the attention
logits; a *simple feature pyramid* builds strides 4, 8, 16 and 32 from the last stride-16 map
alone (two transposed convolutions, one, identity, max-pooling), each followed by a 1x1 and a
3x3 convolution with LayerNorm. There is no final norm.

The trunk's parameter names are the MAE encoder's (``patch_embed.proj``, ``pos_embed`` with
the class token's row first, ``blocks.N.attn.qkv``, ...), so an MAE checkpoint loads one to
one (``vistra.convert.backbone``); ``attn.rel_pos_h`` / ``rel_pos_w`` start at zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, Mlp
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vistra.models.layers.vit import PRESETS
from vistra.models.layers.windows import relative_table, window_merge, window_partition

VIT_BACKBONES = tuple(f"vit_{size}" for size in PRESETS)
# ViTDet's layer-wise learning-rate decay and stochastic depth per size (B 0.7 / 0.1,
# L 0.8 / 0.4, H 0.9 / 0.5); the smaller sizes follow ViT-B.
LAYER_DECAY = {"tiny": 0.7, "small": 0.7, "base": 0.7, "large": 0.8, "huge": 0.9}
DROP_PATH = {"tiny": 0.1, "small": 0.1, "base": 0.1, "large": 0.4, "huge": 0.5}


def is_vit_backbone(name: str) -> bool:
    return name in VIT_BACKBONES


def default_global_blocks(depth: int) -> tuple[int, ...]:
    """Four evenly spaced global-attention blocks, the last block among them (ViT-B: 2, 5, 8,
    11; ViT-L: 5, 11, 17, 23; ViT-H: 7, 15, 23, 31)."""
    return tuple(sorted({max((i + 1) * depth // 4 - 1, 0) for i in range(4)}))


class RelPosAttention(nn.Module):
    """Multi-head self-attention over a [B, h, w, D] grid, with decomposed relative positions:
    logits[(i, j), (k, l)] += q_(i,j) · R_h[i - k] + q_(i,j) · R_w[j - l] (MViTv2)."""

    def __init__(self, dim: int, heads: int, rel_pos_grid: tuple[int, int] | None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = self.rel_pos_w = None
        if rel_pos_grid is not None:
            head_dim = dim // heads
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_pos_grid[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_pos_grid[1] - 1, head_dim))

    def forward(self, x: Tensor) -> Tensor:
        """x [B, h, w, D] -> [B, h, w, D]."""
        batch, height, width, dim = x.shape
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        queries, keys, values = qkv.unbind(0)  # [B, heads, h*w, d] each
        if self.rel_pos_h is None:
            attended = F.scaled_dot_product_attention(queries, keys, values)
        else:
            # The logits are formed here, the two relative terms added by broadcasting over
            # their view as [B, heads, h, w, h, w]: PyTorch's fused kernel with the sum as an
            # additive mask costs a [B, heads, h*w, h*w] tensor more and a slower backward.
            scale = queries.shape[-1] ** -0.5
            logits = (queries * scale) @ keys.transpose(-2, -1)
            grid_queries = queries.reshape(batch, self.heads, height, width, -1)
            along_h = torch.einsum("bnhwc,hkc->bnhwk", grid_queries,
                                   relative_table(height, self.rel_pos_h))  # fmt: skip
            along_w = torch.einsum("bnhwc,wkc->bnhwk", grid_queries,
                                   relative_table(width, self.rel_pos_w))  # fmt: skip
            logits = logits.view(batch, self.heads, height, width, height, width)
            logits = logits + along_h[..., :, None] + along_w[..., None, :]
            weights = logits.view(batch, self.heads, height * width, -1).softmax(dim=-1)
            attended = weights @ values
        return self.proj(attended.transpose(1, 2).reshape(batch, height, width, dim))


class ViTDetBlock(nn.Module):
    """Pre-norm ViT block on a [B, h, w, D] grid; ``window_size`` > 0 attends within windows
    (the grid zero-padded to a multiple of the window after the first norm), 0 globally."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float,
                 window_size: int, rel_pos_grid: tuple[int, int] | None) -> None:  # fmt: skip
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RelPosAttention(dim, heads, rel_pos_grid)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        shortcut, x = x, self.norm1(x)
        if self.window_size:
            height, width = x.shape[1:3]
            windows, padded = window_partition(x, self.window_size)
            x = window_merge(self.attn(windows), self.window_size, padded, (height, width))
        else:
            x = self.attn(x)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PyramidLevel(nn.Module):
    """One level of the simple feature pyramid: rescale the stride-p map by ``scale`` (a power
    of two: transposed 2x2 convolutions up, max-pooling down), then 1x1 and 3x3 convolutions
    with LayerNorm over channels to ``out_channels``."""

    def __init__(self, dim: int, scale: float, out_channels: int) -> None:
        super().__init__()
        steps, layers, width = round(math.log2(scale)), [], dim
        for step in range(max(steps, 0)):
            if step:
                layers += [LayerNorm2d(width), nn.GELU()]
            layers.append(nn.ConvTranspose2d(width, width // 2, 2, stride=2))
            width //= 2
        if steps < 0:
            layers.append(nn.MaxPool2d(2 ** (-steps), stride=2 ** (-steps)))
        self.rescale = nn.Sequential(*layers)
        self.project = nn.Sequential(
            nn.Conv2d(width, out_channels, 1, bias=False),
            LayerNorm2d(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            LayerNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.rescale(x))


class ViTPyramid(nn.Module):
    """ViTDet's plain ViT + simple feature pyramid: ``images [B, 3, H, W] -> [maps [B, C, H/s,
    W/s] for s in strides]`` (H, W rounded up to the patch size: the images are zero-padded
    at the bottom and right, as detectron2 pads to its size divisibility).

    Args:
        size: "tiny", "small", "base", "large" or "huge" (the MAE presets' width, depth, heads).
        strides: the pyramid levels to build (4, 8, 16, 32 for Mask2Former; DETR takes one).
        patch_size: 16 (ViTDet); any power-of-two ratio to the strides works.
        pretrain_image_size: the square side the position table was learnt at (224 for the
            MAE presets): the table has (side / patch)^2 rows plus the class token's.
        image_size: the side the global blocks' relative-position tables are sized for
            (ViTDet: 1024); other grids resize them linearly.
        window_size: window attention side in patches (ViTDet: 14).
        global_blocks: blocks attending globally (None: four evenly spaced, ViT-B 2, 5, 8, 11).
        rel_pos: add decomposed relative positions (zero at the start when a file has none).
        drop_path: stochastic depth rate, growing linearly to it (None: ViTDet's per size).
        grad_checkpointing: recompute each block in the backward pass (memory for time).
        out_channels: channels of every pyramid level (256).
        depth: blocks instead of the preset's (small experiments); mlp_ratio, in_chans: ViT.
    """

    def __init__(
        self,
        size: str = "base",
        strides: tuple[int, ...] = (4, 8, 16, 32),
        patch_size: int = 16,
        pretrain_image_size: int = 224,
        image_size: int = 1024,
        window_size: int = 14,
        global_blocks: tuple[int, ...] | None = None,
        rel_pos: bool = True,
        drop_path: float | None = None,
        grad_checkpointing: bool = False,
        out_channels: int = 256,
        depth: int | None = None,
        mlp_ratio: float = 4.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if size not in PRESETS:
            raise ValueError(f"ViT size must be one of {sorted(PRESETS)}, got {size!r}")
        width, preset_depth, heads = PRESETS[size]
        depth = preset_depth if depth is None else depth
        global_blocks = default_global_blocks(depth) if global_blocks is None else global_blocks
        if any(not 0 <= b < depth for b in global_blocks):
            raise ValueError(f"global_blocks {list(global_blocks)} must be in 0..{depth - 1}")
        for stride in strides:
            scale = patch_size / stride
            if stride < 1 or scale != 2 ** round(math.log2(scale)):
                raise ValueError(f"stride {stride} is not a power-of-two ratio to patch_size "
                                 f"{patch_size}")  # fmt: skip
        if pretrain_image_size % patch_size:
            raise ValueError(f"pretrain_image_size {pretrain_image_size} is not a multiple of "
                             f"patch_size {patch_size}")  # fmt: skip
        drop_path = DROP_PATH[size] if drop_path is None else drop_path
        self.size, self.width, self.depth, self.patch_size = size, width, depth, patch_size
        self.strides, self.channels = tuple(strides), [out_channels] * len(strides)
        self.layer_decay = LAYER_DECAY[size]
        self.grad_checkpointing = grad_checkpointing
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, width, patch_size, stride=patch_size)
        pretrain_grid = pretrain_image_size // patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pretrain_grid**2, width))
        global_grid = (image_size // patch_size,) * 2
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # linearly to drop_path
        self.blocks = nn.ModuleList(
            ViTDetBlock(
                width, heads, mlp_ratio, rates[i], 0 if i in global_blocks else window_size,
                (global_grid if i in global_blocks else (window_size,) * 2) if rel_pos else None,
            )
            for i in range(depth)
        )  # fmt: skip
        self.pyramid = nn.ModuleList(PyramidLevel(width, patch_size / s, out_channels)
                                     for s in strides)  # fmt: skip
        self._init_weights()

    def _init_weights(self) -> None:
        # ViTDet's: truncated normal 0.02 for the position table and linears, zero biases.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def describe(self) -> str:
        return (f"vit_{self.size} (width {self.width}, {self.depth} blocks, patch "
                f"{self.patch_size})")  # fmt: skip

    def trunk_names(self) -> list[str]:
        """The state-dict keys of the ViT itself (what pre-training gives), pyramid excluded."""
        return [k for k in self.state_dict() if not k.startswith("pyramid.")]

    def positions(self, height: int, width: int) -> Tensor:
        """The absolute position table resized (bicubic) to an h x w patch grid: [1, h, w, D]."""
        table = self.pos_embed[:, 1:]
        side = math.isqrt(table.shape[1])
        table = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        if (side, side) != (height, width):
            table = F.interpolate(table, size=(height, width), mode="bicubic",
                                  align_corners=False)  # fmt: skip
        return table.permute(0, 2, 3, 1)

    def forward_trunk(self, images: Tensor) -> Tensor:
        """images [B, C, H, W] -> the last block's map [B, D, ceil(H/p), ceil(W/p)]."""
        p = self.patch_size
        images = F.pad(images, (0, (-images.shape[-1]) % p, 0, (-images.shape[-2]) % p))
        x = self.patch_embed.proj(images).permute(0, 2, 3, 1)
        x = x + self.positions(x.shape[1], x.shape[2]).to(x.dtype)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x.permute(0, 3, 1, 2)

    def forward(self, images: Tensor) -> list[Tensor]:
        features = self.forward_trunk(images)
        return [level(features) for level in self.pyramid]

    # -- optimisation ----------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        """Layers for layer-wise lr decay: the embeddings (0), one per block (1..depth)."""
        return self.depth + 1

    def layer_of(self, name: str) -> int | None:
        """0 for the embeddings, i + 1 for ``blocks.i``; None for the pyramid (not decayed)."""
        if name.startswith(("patch_embed.", "pos_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return None

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}
