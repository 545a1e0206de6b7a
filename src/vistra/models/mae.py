"""Masked autoencoder (He et al., "Masked Autoencoders Are Scalable Vision Learners", 2021).

A ViT encoder that sees only the visible patches, and a lightweight decoder that gets the
encoded visible tokens plus one shared learnable mask token per removed patch, puts them back
in image order and predicts every patch's pixels. The loss (``vistra.losses.mae``) is the mean
squared error on the removed patches only, against per-patch normalised pixels by default.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from vistra.losses.mae import mae_loss, removed_patches
from vistra.models.layers.attention import ViTAttention
from vistra.models.layers.patches import patchify, unpatchify
from vistra.models.layers.vit import (
    PRESETS,
    block_rows,
    random_masking,
    run_blocks,
    sincos_2d_position_embedding,
    vit_layer_of,
)


class MaskedAutoencoder(nn.Module):
    """MAE with a ViT encoder and a lightweight Transformer decoder.

    Args:
        size: encoder preset ("tiny", "small", "base", "large", "huge"), see ``PRESETS``.
        image_size: square input side, divisible by ``patch_size``.
        patch_size: 16 or 14 (ViT-H/14).
        decoder_width, decoder_depth, decoder_heads: the paper's default decoder is 512 / 8 / 16.
        mask_ratio: share of patches removed in pre-training (paper: 0.75).
        norm_pix_loss: per-patch normalised target (paper default for its best results).
        mlp_ratio: MLP hidden width / width for encoder and decoder blocks.
        in_chans: input channels.
        depth: encoder blocks instead of the preset's (small experiments and tests).
        grad_checkpointing: recompute each block's activations in the backward pass (ViT-L/H:
            memory for one block's activations instead of all).
    """

    def __init__(
        self,
        size: str = "base",
        image_size: int = 224,
        patch_size: int = 16,
        decoder_width: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        mlp_ratio: float = 4.0,
        in_chans: int = 3,
        depth: int | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if size not in PRESETS:
            raise ValueError(f"size must be one of {sorted(PRESETS)}, got {size!r}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.config = dict(
            size=size, image_size=image_size, patch_size=patch_size, decoder_width=decoder_width,
            decoder_depth=decoder_depth, decoder_heads=decoder_heads, mask_ratio=mask_ratio,
            norm_pix_loss=norm_pix_loss, mlp_ratio=mlp_ratio, in_chans=in_chans, depth=depth,
            grad_checkpointing=grad_checkpointing,
        )  # fmt: skip
        width, preset_depth, heads = PRESETS[size]
        depth = preset_depth if depth is None else depth
        if depth < 1 or decoder_depth < 1:
            raise ValueError(f"depth and decoder_depth must be >= 1, got {depth}, {decoder_depth}")
        self.patch_size, self.mask_ratio, self.norm_pix_loss = patch_size, mask_ratio, norm_pix_loss
        self.grad_checkpointing = grad_checkpointing
        self.grid = (image_size // patch_size, image_size // patch_size)
        self.num_features = width
        norm = partial(nn.LayerNorm, eps=1e-6)  # the MAE repository's eps

        self.patch_embed = PatchEmbed(image_size, patch_size, in_chans, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer(
            "pos_embed", sincos_2d_position_embedding(width, self.grid, True)[None], persistent=True
        )
        self.blocks = nn.ModuleList(
            Block(width, heads, mlp_ratio, qkv_bias=True, norm_layer=norm, attn_layer=ViTAttention)
            for _ in range(depth)
        )
        self.norm = norm(width)

        self.decoder_embed = nn.Linear(width, decoder_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_width))
        self.register_buffer(
            "decoder_pos_embed",
            sincos_2d_position_embedding(decoder_width, self.grid, True)[None],
            persistent=True,
        )
        self.decoder_blocks = nn.ModuleList(
            Block(
                decoder_width,
                decoder_heads,
                mlp_ratio,
                qkv_bias=True,
                norm_layer=norm,
                attn_layer=ViTAttention,
            )
            for _ in range(decoder_depth)
        )
        self.decoder_norm = norm(decoder_width)
        self.decoder_pred = nn.Linear(decoder_width, patch_size**2 * in_chans)
        self._init_weights()

    def _init_weights(self) -> None:
        # As the MAE repository: patch projection like a linear layer, tokens N(0, 0.02),
        # xavier-uniform linears with zero bias, LayerNorm weight 1 bias 0.
        projection = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(projection.view(projection.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def num_layers(self) -> int:
        """Layers for layer-wise lr decay: embeddings, one per block, then everything after."""
        return len(self.blocks) + 1

    def layer_of(self, name: str) -> int:
        """Layer of parameter ``name``: 0 embeddings, i + 1 block i, ``num_layers`` the rest."""
        return vit_layer_of(name, self.num_layers)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "mask_token", "pos_embed", "decoder_pos_embed"}

    def check_input(self, images: Tensor) -> None:
        rows, cols = self.grid
        expected = (self.patch_embed.proj.in_channels, rows * self.patch_size,
                    cols * self.patch_size)  # fmt: skip
        if tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"MaskedAutoencoder expects [B, C, H, W] images with C, H, W = {expected} "
                f"(its in_chans and image_size), got {tuple(images.shape)}"
            )

    def project_patches(self, pixels: Tensor) -> Tensor:
        """``patch_embed``'s stride-p convolution as a linear map of ``patchify``'s patches:
        [B, N, p*p*C] -> [B, N, width] (its weight reordered to (row, column, channel))."""
        projection = self.patch_embed.proj
        weight = projection.weight.permute(0, 2, 3, 1).flatten(1)
        return nn.functional.linear(pixels, weight, projection.bias)

    def forward_encoder(
        self, images: Tensor, mask_ratio: float, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """images [B, C, H, W] -> latent [B, 1 + L_keep, width], mask [B, L], ids_restore [B, L].

        Only the visible patches (and the class token) go through the Transformer blocks, and
        only the visible patches are projected: the patch projection is a linear map of each
        patch's pixels (the stride-p convolution of ``patch_embed``), so masking its input
        instead of its output is the same and skips 75% of it.
        """
        self.check_input(images)
        pixels = patchify(images, self.patch_size)
        batch, length = pixels.shape[:2]
        positions = self.pos_embed[:, 1:].expand(batch, -1, -1)
        if mask_ratio > 0:
            pixels, mask, ids_restore = random_masking(pixels, mask_ratio, noise)
            ids_keep = ids_restore.argsort(dim=1)[:, : pixels.shape[1]]
            positions = positions.gather(1, ids_keep[..., None].expand(-1, -1, self.num_features))
        else:  # deterministic feature extraction: nothing removed, nothing shuffled
            mask = pixels.new_zeros(batch, length)
            ids_restore = torch.arange(length, device=pixels.device).expand(batch, -1)
        tokens = self.project_patches(pixels)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(batch, -1, -1)
        hidden = torch.cat([cls, tokens + positions], dim=1)
        hidden = run_blocks(self.blocks, hidden, self.grad_checkpointing)
        return self.norm(hidden), mask, ids_restore

    def decoder_input(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """latent [B, 1 + L_keep, width], ids_restore [B, L] -> [B, 1 + L, decoder_width]: the
        embedded visible tokens and one mask token per removed patch, in image order, with the
        decoder's position embedding; row 0 is the class token."""
        hidden = self.decoder_embed(latent)
        batch, visible_plus_cls, width = hidden.shape
        length = ids_restore.shape[1]
        masked = self.mask_token.expand(batch, length + 1 - visible_plus_cls, -1)
        patches = torch.cat([hidden[:, 1:], masked], dim=1)
        patches = patches.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, width))
        return torch.cat([hidden[:, :1], patches], dim=1) + self.decoder_pos_embed

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """latent [B, 1 + L_keep, width], ids_restore [B, L] -> pixel predictions [B, L, p*p*C]."""
        hidden = self.decoder_input(latent, ids_restore)
        hidden = run_blocks(self.decoder_blocks, hidden, self.grad_checkpointing)
        return self.decoder_pred(self.decoder_norm(hidden))[:, 1:]

    def forward(
        self, images: Tensor, mask_ratio: float | None = None, noise: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Pre-training forward pass (the loss stays out: see ``mae_loss`` / ``loss``).

        Returns:
            "pred": [B, L, p*p*C] pixel predictions for every patch,
            "mask": [B, L] 1 = removed, "ids_restore": [B, L].
        """
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.forward_encoder(images, ratio, noise)
        return {"pred": self.forward_decoder(latent, ids_restore), "mask": mask,
                "ids_restore": ids_restore}  # fmt: skip

    def loss(self, images: Tensor, outputs: dict[str, Tensor]) -> Tensor:
        """The MAE loss of ``forward``'s outputs (its predictions at the removed patches)."""
        removed = removed_patches(outputs["mask"])
        predictions = outputs["pred"].gather(
            1, removed[..., None].expand(-1, -1, outputs["pred"].shape[-1])
        )
        return mae_loss(predictions, images, removed, self.patch_size, self.norm_pix_loss)

    def pretraining_loss(self, images: Tensor, noise: Tensor | None = None) -> Tensor:
        """``loss(images, forward(images, noise=noise))``, computing only what the loss reads.

        The loss reads predictions at removed patches only, so the decoder's last block (see
        ``block_rows``), its norm and the pixel head run on those rows only. With the
        visible-only patch projection of ``forward_encoder``: the same value and gradients as
        Hugging Face's step with fewer FLOPs (counted in benchmarks/mae.py).
        """
        latent, _, ids_restore = self.forward_encoder(images, self.mask_ratio, noise)
        removed = ids_restore.argsort(dim=1)[:, latent.shape[1] - 1 :]  # [B, R] patch indices
        hidden = self.decoder_input(latent, ids_restore)
        hidden = run_blocks(self.decoder_blocks[:-1], hidden, self.grad_checkpointing)
        predictions = self.decode_removed(hidden, removed)
        return mae_loss(predictions, images, removed, self.patch_size, self.norm_pix_loss)

    def decode_removed(self, hidden: Tensor, removed: Tensor) -> Tensor:
        """The decoder's last block, norm and pixel head at the removed patches only.

        Args:
            hidden: [B, 1 + L, decoder_width] input of the last decoder block, class token first.
            removed: [B, R] indices (0..L-1) of the removed patches, R the same for every image.

        Returns:
            [B, R, p*p*C] pixel predictions.
        """
        hidden = block_rows(self.decoder_blocks[-1], hidden, removed + 1)
        return self.decoder_pred(self.decoder_norm(hidden))

    def called_blocks(self) -> list[nn.Module]:
        """The blocks only ever run through their own ``forward`` (sharding units): every
        block but the decoder's last, which ``decode_removed`` runs in parts."""
        return [*self.blocks, *self.decoder_blocks[:-1]]

    def forward_features(self, images: Tensor, pool: str = "avg") -> Tensor:
        """Deterministic features of the whole image (no masking): [B, width].

        pool="avg": mean of the patch tokens (after the final norm), "cls": the class token.
        """
        latent, _, _ = self.forward_encoder(images, mask_ratio=0.0)
        return latent[:, 1:].mean(dim=1) if pool == "avg" else latent[:, 0]

    def reconstruct(self, images: Tensor, outputs: dict[str, Tensor]) -> Tensor:
        """Predictions back in pixel space [B, C, H, W], un-normalising per patch if needed."""
        predictions = outputs["pred"]
        if self.norm_pix_loss:
            target = patchify(images, self.patch_size)
            mean = target.mean(dim=-1, keepdim=True)
            std = (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
            predictions = predictions * std + mean
        return unpatchify(predictions, self.patch_size, self.grid)


__all__ = [
    "PRESETS",
    "MaskedAutoencoder",
    "block_rows",
    "patchify",
    "random_masking",
    "sincos_2d_position_embedding",
    "unpatchify",
]
