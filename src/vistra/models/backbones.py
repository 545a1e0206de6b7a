"""Image encoders built by timm, returning one pooled feature vector per image."""

from __future__ import annotations

import timm
from torch import nn


def create_encoder(name: str, small_input: bool = False, in_chans: int = 3) -> nn.Module:
    """A timm model with its classifier removed: ``encoder(images [B,3,H,W]) -> [B, D]``.

    Args:
        name: any timm architecture name (``resnet18``, ``resnet50``, ``vit_small_patch16_224``...).
        small_input: for 32-pixel images (CIFAR, digits): a ResNet gets the CIFAR stem
            (3x3 stride-1 first convolution, no max-pool), as in the SupCon paper's CIFAR runs.
        in_chans: input channels.

    The feature width is ``encoder.num_features``. Weights are random: nothing is downloaded;
    load your own with the converters or a checkpoint path.
    """
    if name not in timm.list_models():
        raise ValueError(f"unknown timm encoder {name!r}; see timm.list_models()")
    encoder = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
    if small_input:
        if not (hasattr(encoder, "conv1") and hasattr(encoder, "maxpool")):
            raise ValueError(
                f"small_input=True is only defined for ResNet-style encoders, not {name}"
            )
        encoder.conv1 = nn.Conv2d(
            in_chans, encoder.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False
        )
        encoder.maxpool = nn.Identity()
    return encoder
