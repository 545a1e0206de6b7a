"""Swin Transformer feature maps with the windowing of the original Swin and Mask2Former code.

At any input size each stage's map is padded (right and bottom) to a multiple of the window
*before* the cyclic shift, and every odd block of every stage is shifted by half a window, as
in the Swin repository's ``D2SwinTransformer`` that Mask2Former's Swin checkpoints were trained
and evaluated with (and Hugging Face's ``SwinBackbone``). timm's Swin fixes window and shift
per stage from the size it was built for and pads after the shift, which gives other features
at every size whose stage maps are not window multiples (512, 1024, 256 x 320 ...), and no
shift in a stage whose map is one window.

The parameter names are those of timm's ``features_only`` Swin (``patch_embed``,
``layers_N.downsample``, ``layers_N.blocks.M.attn.qkv`` ...), so timm, Hugging Face and
original-repository checkpoints load through the same converters; the architecture (widths,
depths, heads, window, drop path) is read from the timm model built for the name
(``SwinFeatures.like``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MASKED = -100.0  # the original code's additive mask between windows' shifted regions


class PatchEmbed(nn.Module):
    """4x4 patches -> tokens [B, H/4, W/4, C] (the image padded right / bottom to a multiple)."""

    def __init__(self, patch_size: int, width: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, width, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(width)

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        images = F.pad(images, (0, -width % self.patch_size, 0, -height % self.patch_size))
        return self.norm(self.proj(images).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """2x2 neighbours -> one token of twice the width: [B, H, W, C] -> [B, H/2, W/2, 2C]
    (odd sides padded with zeros first)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * width)
        self.reduction = nn.Linear(4 * width, 2 * width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
        # (row, column) offsets in the order (0, 0), (1, 0), (0, 1), (1, 1), as the original
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learnt relative position bias."""

    def __init__(self, width: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        offsets = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                             indexing="ij")).flatten(1)  # fmt: skip
        relative = (offsets[:, :, None] - offsets[:, None, :]) + (window - 1)  # [2, N, N]
        index = relative[0] * (2 * window - 1) + relative[1]
        self.register_buffer("relative_position_index", index, persistent=False)

    def forward(self, windows: Tensor, mask: Tensor | None) -> Tensor:
        """windows [B*nW, N, C] (N = window^2), mask [nW, N, N] additive or None."""
        count, tokens, width = windows.shape
        q, k, v = self.qkv(windows).view(count, tokens, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index]  # [N, N, heads]
        bias = bias.permute(2, 0, 1).unsqueeze(0)  # [1, heads, N, N]
        if mask is not None:
            bias = (bias + mask.unsqueeze(1)).repeat(count // mask.shape[0], 1, 1, 1)
        bias = bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(count, tokens, width))


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's residual branch with probability ``rate``."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.rate)
        return x * keep / (1 - self.rate)


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """Window attention (shifted by ``shift``) and an MLP, each with a residual: [B, H, W, C]."""

    def __init__(
        self, width: int, heads: int, window: int, shift: int, hidden: int, drop_path: float
    ) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(width)
        self.attn = WindowAttention(width, heads, window)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, hidden)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, channels = x.shape
        window, shift = self.window, self.shift
        shortcut = x
        # Pad to window multiples first, then shift: the padded map is what gets rolled.
        x = F.pad(self.norm1(x), (0, 0, 0, -width % window, 0, -height % window))
        padded_h, padded_w = x.shape[1:3]
        mask = None
        if shift:
            x = torch.roll(x, (-shift, -shift), dims=(1, 2))
            mask = shifted_window_mask(padded_h, padded_w, window, shift, x.device)
        windows = partition(x, window)
        windows = self.attn(windows, mask)
        x = unpartition(windows, window, batch, padded_h, padded_w)
        if shift:
            x = torch.roll(x, (shift, shift), dims=(1, 2))
        x = shortcut + self.drop_path(x[:, :height, :width])
        return x + self.drop_path(self.mlp(self.norm2(x)))


def partition(x: Tensor, window: int) -> Tensor:
    """[B, H, W, C] (H, W multiples of window) -> [B * nW, window^2, C], windows row-major."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)


def unpartition(windows: Tensor, window: int, batch: int, height: int, width: int) -> Tensor:
    """The inverse of ``partition``: [B * nW, window^2, C] -> [B, H, W, C]."""
    x = windows.view(batch, height // window, width // window, window, window, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, -1)


def shifted_window_mask(height: int, width: int, window: int, shift: int, device) -> Tensor:
    """[nW, N, N] additive mask keeping attention inside the regions a cyclic shift brought
    together: along each axis the last ``window`` positions split at ``-shift``."""

    def regions(size: int) -> Tensor:
        index = torch.arange(size, device=device)
        return (index >= size - window).long() + (index >= size - shift).long()

    labels = (regions(height)[:, None] * 3 + regions(width)[None, :]).float()
    labels = partition(labels[None, :, :, None], window).squeeze(-1)  # [nW, N]
    different = labels[:, :, None] != labels[:, None, :]
    return torch.zeros(different.shape, device=device).masked_fill(different, MASKED)


class SwinStage(nn.Module):
    """Patch merging (stages after the first), then the blocks, odd ones shifted."""

    def __init__(self, width: int, depth: int, heads: int, window: int, hidden_ratio: float,
                 drop_paths: list[float], merge: bool) -> None:  # fmt: skip
        super().__init__()
        self.downsample = PatchMerging(width // 2) if merge else nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinBlock(width, heads, window, window // 2 if index % 2 else 0,
                      int(width * hidden_ratio), drop_paths[index])
            for index in range(depth)
        ])  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class SwinFeatures(nn.Module):
    """``features(images [B, 3, H, W]) -> [maps [B, H/s, W/s, C_s] for s = 4, 8, 16, 32]``
    (channels last, as timm's ``features_only`` Swin; any H, W).

    Args:
        width: the first stage's channels (96 Swin-T/S, 128 B, 192 L); doubled per stage.
        depths, heads: blocks and attention heads per stage.
        window: window side in tokens (7, or 12 for the 384-pixel Swin-B/L).
        hidden_ratio: MLP width / channels; drop_path: stochastic depth of the last block
            (linearly from 0 over the blocks).
    """

    def __init__(
        self,
        width: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        heads: tuple[int, ...] = (3, 6, 12, 24),
        window: int = 7,
        patch_size: int = 4,
        hidden_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, width)
        rates = torch.linspace(0, drop_path, sum(depths), device="cpu").tolist()  # also on meta
        starts = [sum(depths[:index]) for index in range(len(depths))]
        for index, (depth, head_count) in enumerate(zip(depths, heads)):
            stage_rates = rates[starts[index] : starts[index] + depth]
            stage = SwinStage(width * 2**index, depth, head_count, window, hidden_ratio,
                              stage_rates, merge=index > 0)  # fmt: skip
            self.add_module(f"layers_{index}", stage)
        self.stages = len(depths)
        self.channels = [width * 2**index for index in range(len(depths))]
        self.output_fmt = "NHWC"

    @classmethod
    def like(cls, timm_features: nn.Module) -> SwinFeatures:
        """A ``SwinFeatures`` of the architecture of a timm ``features_only`` Swin, holding its
        weights (what timm loaded, e.g. an ImageNet checkpoint)."""
        stages = [getattr(timm_features, f"layers_{i}") for i in range(4)]
        first = stages[0].blocks[0]
        blocks = [block for stage in stages for block in stage.blocks]
        # The first stage's map is never smaller than the window, so timm kept the window given.
        window = first.window_size
        window = window[0] if isinstance(window, (tuple, list)) else int(window)
        drop = blocks[-1].drop_path1
        features = cls(
            width=timm_features.patch_embed.proj.out_channels,
            depths=tuple(len(stage.blocks) for stage in stages),
            heads=tuple(stage.blocks[0].attn.num_heads for stage in stages),
            window=window,
            patch_size=timm_features.patch_embed.proj.kernel_size[0],
            hidden_ratio=first.mlp.fc1.out_features / first.mlp.fc1.in_features,
            drop_path=float(getattr(drop, "drop_prob", 0.0)),
        )
        state = {k: v for k, v in timm_features.state_dict().items()
                 if not k.endswith(("relative_position_index", "attn_mask"))}  # fmt: skip
        # assign: timm's tensors themselves (no copy; also on the meta device)
        features.load_state_dict(state, strict=True, assign=True)
        for name, parameter in timm_features.named_parameters():  # frozen parts stay frozen
            features.get_parameter(name).requires_grad_(parameter.requires_grad)
        features.feature_info = timm_features.feature_info
        return features

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.patch_embed(images)
        maps = []
        for index in range(self.stages):
            x = getattr(self, f"layers_{index}")(x)
            maps.append(x)
        return maps
