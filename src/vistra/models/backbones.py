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


def create_feature_backbone(
    name: str = "resnet50",
    out_indices: tuple[int, ...] | None = (4,),
    frozen_batchnorm: bool = True,
    dilation: bool = False,
    frozen_prefixes: tuple[str, ...] = ("conv1", "bn1", "layer1"),
    checkpoint: str | None = None,
    **timm_options,
) -> nn.Module:
    """A timm backbone returning a list of feature maps, one per entry of ``out_indices``.

    ``backbone(images [B,3,H,W]) -> [features [B, C_i, H/s_i, W/s_i] ...]``; the channel widths
    are ``backbone.feature_info.channels()`` and the strides ``.reduction()``.

    Args:
        name: timm architecture (``resnet50``, ``resnet101``, ``resnet18``, ``swin_tiny_...``).
        out_indices: which stages to return (ResNet: 1..4 = strides 4..32; None: all).
        frozen_batchnorm: BatchNorm statistics and affine terms fixed (the DETR recipe: batches
            of two images cannot estimate them).
        dilation: dilate the last stage instead of striding it ("DC5": stride 16).
        frozen_prefixes: parameters whose name starts with one of these are not trained (the
            stem and first stage, as in DETR).
        checkpoint: local file holding an encoder of this architecture: timm / torchvision
            weights (ImageNet pre-training), a vistra SupCon / SimCLR, linear-probe or box-map
            checkpoint; every weight is checked (``vistra.convert.backbone``). Nothing is
            downloaded.
        timm_options: passed to ``timm.create_model`` (e.g. ``img_size`` for Swin).
    """
    if name not in timm.list_models():
        raise ValueError(f"unknown timm backbone {name!r}; see timm.list_models()")
    options = dict(features_only=True, **timm_options)
    if out_indices is not None:
        options["out_indices"] = tuple(out_indices)
    if dilation:
        options["output_stride"] = 16
    backbone = timm.create_model(name, **options)
    _drop_unused_blocks(backbone)
    if checkpoint is not None:
        from vistra.convert.backbone import load_backbone_weights

        load_backbone_weights(backbone, checkpoint, name)
    if frozen_batchnorm:
        backbone = timm.layers.freeze_batch_norm_2d(backbone)
    for parameter_name, parameter in backbone.named_parameters():
        if parameter_name.startswith(tuple(frozen_prefixes)):
            parameter.requires_grad_(False)
    return backbone


def _drop_unused_blocks(backbone: nn.Module) -> None:
    """Remove the blocks after the last returned stage. timm's MobileNet-style feature models
    (``blocks.N``) keep and run them; their parameters then get no gradient, which plain DDP
    refuses ("parameters that were not used"), and they cost time."""
    names = backbone.feature_info.module_name()
    blocks = getattr(backbone, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not all(n.startswith("blocks.") for n in names):
        return
    last = max(int(n.split(".")[1]) for n in names)
    backbone.blocks = blocks[: last + 1]


def create_vit_backbone(
    name: str, strides: tuple[int, ...], checkpoint: str | None = None, **options
) -> nn.Module:
    """ViTDet's plain ViT with a simple feature pyramid at ``strides`` (``vit_tiny`` ...
    ``vit_huge``; ``options`` as ``ViTPyramid``), its trunk from ``checkpoint`` (a vistra MAE,
    fine-tuning or probe checkpoint, the MAE repository's, Hugging Face ViTMAE or timm ViT
    weights), every weight checked."""
    from vistra.models.vit_pyramid import ViTPyramid

    backbone = ViTPyramid(name.removeprefix("vit_"), strides=tuple(strides), **options)
    if checkpoint is not None:
        from vistra.convert.backbone import load_backbone_weights

        load_backbone_weights(backbone, checkpoint, name)
    return backbone


def backbone_channels(backbone: nn.Module) -> list[int]:
    """Channels of each map a backbone returns (timm feature model or ``ViTPyramid``)."""
    if hasattr(backbone, "feature_info"):
        return list(backbone.feature_info.channels())
    return list(backbone.channels)
