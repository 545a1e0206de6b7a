"""Mask2Former: backbone -> pixel decoder -> masked-attention decoder -> class + mask logits."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vistra.models.backbones import create_feature_backbone, create_vit_backbone
from vistra.models.mask2former.pixel_decoder import PixelDecoder
from vistra.models.mask2former.transformer_decoder import MaskedAttentionDecoder
from vistra.models.swin import SwinFeatures
from vistra.models.vit_pyramid import is_vit_backbone

STRIDES = (4, 8, 16, 32)


class MultiScaleBackbone(nn.Module):
    """A backbone giving NCHW maps at strides 4, 8, 16, 32: a timm network (ResNet, Swin,
    ConvNeXt, ...) or ViTDet's plain ViT with its simple feature pyramid (``vit_base`` ...)."""

    def __init__(self, name: str, frozen_batchnorm: bool, frozen_prefixes: tuple[str, ...],
                 checkpoint: str | None, **timm_options) -> None:  # fmt: skip
        super().__init__()
        if is_vit_backbone(name):
            self.body = create_vit_backbone(name, STRIDES, checkpoint, **timm_options)
            self.picked, self.channels = list(range(len(STRIDES))), list(self.body.channels)
            self.channels_last, self.out_norms = False, None
            return
        self.body = create_feature_backbone(
            name,
            out_indices=None,
            frozen_batchnorm=frozen_batchnorm,
            frozen_prefixes=frozen_prefixes,
            checkpoint=checkpoint,
            **timm_options,
        )
        if name.startswith("swin"):  # the original windowing at every input size
            self.body = SwinFeatures.like(self.body)
        reductions = self.body.feature_info.reduction()
        missing = [s for s in STRIDES if s not in reductions]
        if missing:
            raise ValueError(f"backbone {name!r} has no feature map at stride(s) {missing}")
        self.picked = [len(reductions) - 1 - reductions[::-1].index(s) for s in STRIDES]
        self.channels = [self.body.feature_info.channels()[i] for i in self.picked]
        self.channels_last = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")
        # Transformer backbones (Swin) normalise each output map, as Mask2Former's Swin does.
        self.out_norms = nn.ModuleList(nn.LayerNorm(c) for c in self.channels) if (
            self.channels_last) else None  # fmt: skip

    def forward(self, images: Tensor) -> list[Tensor]:
        """images [B, 3, H, W] -> [B, C_s, H/s, W/s] for s = 4, 8, 16, 32."""
        maps = self.body(images)
        maps = [maps[i] for i in self.picked]
        if self.channels_last:
            maps = [norm(m).permute(0, 3, 1, 2) for norm, m in zip(self.out_norms, maps)]
        return maps


class Mask2Former(nn.Module):
    """Universal segmentation model (paper defaults: R50, d=256, 6 pixel-decoder layers,
    9 decoder layers, 100 queries, FFN 2048 / 1024).

    Args:
        num_classes: thing + stuff classes; the class head has ``num_classes + 1`` outputs,
            the last meaning "no object". Mapping to dataset ids is the data's job.
        backbone: timm name (``resnet50``, ``swin_tiny_patch4_window7_224``, ...), or
            ``vit_tiny`` ... ``vit_huge``: ViTDet's plain ViT with its simple feature pyramid
            (``vistra.models.vit_pyramid``).
        backbone_checkpoint: local file holding the backbone's encoder (optional; nothing is
            downloaded): ImageNet weights, or a vistra pre-training run (SupCon / SimCLR for a
            timm network, MAE for a ViT), checked weight by weight (``vistra.convert.backbone``).
        frozen_batchnorm: fixed BatchNorm in the backbone (use with pre-trained weights).
        train_stem: also train the stem and first stage.
        backbone_options: passed to ``ViTPyramid`` for a ViT (``patch_size``,
            ``pretrain_image_size``, ``window_size``, ``drop_path``...), to timm otherwise (e.g.
            a Swin's ``embed_dim``, ``depths``, ``num_heads``, ``window_size``). A Swin runs as
            ``vistra.models.swin.SwinFeatures``: the original windowing at any input size.
        dim, mask_dim: transformer width and mask-feature channels (256, 256).
        pixel_decoder_layers, pixel_ffn_dim: deformable encoder (6, 1024).
        decoder_layers, ffn_dim, heads, num_queries, dropout: masked-attention decoder.
        channels_last: keep the convolutions' weights and inputs in NHWC memory order, which
            oneDNN (CPU) and cuDNN (tensor cores) run faster for most backbones; the numbers
            are the same up to rounding.
        checkpoint: a whole model to start from (original ``.pkl``, Hugging Face or vistra
            file); trained on other classes (e.g. COCO's 133), its class head is
            re-initialised with a message and everything else loads strictly.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        backbone: str = "resnet50",
        backbone_checkpoint: str | None = None,
        frozen_batchnorm: bool = True,
        train_stem: bool = True,
        backbone_options: dict | None = None,
        dim: int = 256,
        mask_dim: int = 256,
        pixel_decoder_layers: int = 6,
        pixel_ffn_dim: int = 1024,
        decoder_layers: int = 9,
        ffn_dim: int = 2048,
        heads: int = 8,
        num_queries: int = 100,
        dropout: float = 0.0,
        checkpoint: str | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if num_classes is None:
            raise ValueError(
                "num_classes is not set: give it, or train with `vistra fit`, which takes it from "
                "the data"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if dim % 32 or dim % heads:
            raise ValueError(f"dim {dim} must be divisible by 32 (GroupNorm) and by heads {heads}")
        self.config = dict(
            num_classes=num_classes,
            backbone=backbone,
            backbone_checkpoint=None,  # the weights travel in the checkpoint itself
            frozen_batchnorm=frozen_batchnorm,
            train_stem=train_stem,
            backbone_options=dict(backbone_options or {}),
            dim=dim,
            mask_dim=mask_dim,
            pixel_decoder_layers=pixel_decoder_layers,
            pixel_ffn_dim=pixel_ffn_dim,
            decoder_layers=decoder_layers,
            ffn_dim=ffn_dim,
            heads=heads,
            num_queries=num_queries,
            dropout=dropout,
            channels_last=channels_last,
        )
        self.num_classes = num_classes
        self.backbone = MultiScaleBackbone(
            backbone,
            frozen_batchnorm=frozen_batchnorm,
            frozen_prefixes=() if train_stem else ("conv1", "bn1", "layer1"),
            checkpoint=backbone_checkpoint,
            **(backbone_options or {}),
        )
        self.pixel_decoder = PixelDecoder(
            self.backbone.channels, dim, mask_dim, pixel_decoder_layers, heads, 4, pixel_ffn_dim,
            dropout,
        )  # fmt: skip
        self.decoder = MaskedAttentionDecoder(
            dim, num_classes, dim, heads, ffn_dim, dropout, decoder_layers, num_queries, mask_dim
        )
        if checkpoint is not None:
            from vistra.convert.mask2former import load_mask2former_weights

            load_mask2former_weights(self, checkpoint, new_classes=True)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.to(memory_format=self.memory_format)

    def forward(self, images: Tensor, pixel_mask: Tensor | None = None) -> dict:
        """images [B, 3, H, W] normalized (padded images: zeros outside ``pixel_mask``).

        Returns ``{"pred_logits": [B, Q, C+1], "pred_masks": [B, Q, H/4, W/4] logits,
        "aux_outputs": [the same for the query features and every layer but the last]}``.
        ``pixel_mask`` is accepted for a common call signature; like the original, the model
        does not use it (padding is a constant region the masks learn to leave out).
        """
        images = images.contiguous(memory_format=self.memory_format)
        mask_features, maps = self.pixel_decoder(self.backbone(images))
        predictions = self.decoder(maps, mask_features)
        return {**predictions[-1], "aux_outputs": predictions[:-1]}
