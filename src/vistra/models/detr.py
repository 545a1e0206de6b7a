"""DETR: a CNN backbone, a transformer encoder-decoder and set-prediction heads.

Carion et al., "End-to-End Object Detection with Transformers" (ECCV 2020). Post-norm
transformer layers; the sine position encoding is added to queries and keys of every attention
(never to values); the padding mask is respected everywhere, so an image gives the same
detections alone or padded in a batch.

The loss and the Hungarian matching live in ``vistra.losses``; post-processing to boxes in
pixels is ``detr_postprocess`` below.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert

from vistra.models.backbones import backbone_channels, create_feature_backbone, create_vit_backbone
from vistra.models.layers import MLP, Attention, FeedForward, sine_position_encoding
from vistra.models.vit_pyramid import is_vit_backbone


class EncoderLayer(nn.Module):
    """Post-norm: x = norm1(x + SelfAttn(x+pos, x+pos, x)); x = norm2(x + FFN(x))."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads, dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor, key_mask: Tensor) -> Tensor:
        with_pos = x + pos
        x = self.norm1(x + self.dropout(self.self_attn(with_pos, with_pos, x, key_mask)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class DecoderLayer(nn.Module):
    """Post-norm self-attention over queries, cross-attention to the memory, FFN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads, dropout)
        self.cross_attn = Attention(dim, num_heads, dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, memory_mask: Tensor
    ) -> Tensor:
        """x, query_pos [B, Q, d]; memory, memory_pos [B, S, d]; memory_mask [B, S] bool."""
        with_pos = x + query_pos
        x = self.norm1(x + self.dropout(self.self_attn(with_pos, with_pos, x)))
        attended = self.cross_attn(x + query_pos, memory + memory_pos, memory, memory_mask)
        x = self.norm2(x + self.dropout(attended))
        return self.norm3(x + self.dropout(self.ffn(x)))


class DETR(nn.Module):
    """The DETR detector (paper defaults: R50, d=256, 8 heads, 6+6 layers, FFN 2048, 100 queries).

    Args:
        num_classes: foreground classes; the class head has ``num_classes + 1`` outputs, the
            last meaning "no object". Mapping to a dataset's category ids is the data's job.
        backbone: timm name (ResNet: the paper; ``dilation`` gives the DC5 variant), or
            ``vit_tiny`` ... ``vit_huge``: ViTDet's plain ViT with its simple feature pyramid
            (``vistra.models.vit_pyramid``), of which DETR takes the level ``backbone_stage``.
        backbone_checkpoint: local file holding the backbone's encoder (optional): ImageNet
            weights, or a vistra pre-training run (SupCon / SimCLR or box-map for a timm
            network, MAE for a ViT), checked weight by weight (``vistra.convert.backbone``).
        backbone_stage: the stage whose output feeds the transformer, stride 2^(stage+1)
            (4 = stride 32, the paper; 3 = stride 16, cheaper than DC5 for small images).
        backbone_options: more arguments of the backbone: ``ViTPyramid``'s for a ViT
            (``patch_size``, ``pretrain_image_size``, ``window_size``, ``drop_path``...),
            ``timm.create_model``'s otherwise.
        frozen_batchnorm: fixed BatchNorm (the paper, with a pre-trained backbone); train it
            when the backbone starts from random weights.
        train_stem: also train the stem and first stage (frozen in the paper).
        hidden_dim, num_heads, num_encoder_layers, num_decoder_layers, ffn_dim, dropout: the
            transformer.
        num_queries: object queries (the most objects one image can have).
        aux_loss: also return predictions of every earlier decoder layer.
        checkpoint: a whole detector to start from (original ``detr-r50-*.pth``, Hugging Face
            or vistra file); trained on other classes (e.g. COCO's 91), its class head is
            re-initialised with a message and everything else loads strictly.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        backbone: str = "resnet50",
        dilation: bool = False,
        backbone_checkpoint: str | None = None,
        backbone_stage: int = 4,
        backbone_options: dict | None = None,
        frozen_batchnorm: bool = True,
        train_stem: bool = False,
        hidden_dim: int = 256,
        num_heads: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        num_queries: int = 100,
        aux_loss: bool = True,
        checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        if num_classes is None:
            raise ValueError(
                "num_classes is not set: give it, or train with `vistra fit`, which takes it from "
                "the data"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if num_queries < 1 or num_decoder_layers < 1:
            raise ValueError("num_queries and num_decoder_layers must be >= 1")
        self.config = dict(
            num_classes=num_classes,
            backbone=backbone,
            dilation=dilation,
            backbone_checkpoint=None,  # the weights travel in the checkpoint itself
            backbone_stage=backbone_stage,
            backbone_options=dict(backbone_options or {}),
            frozen_batchnorm=frozen_batchnorm,
            train_stem=train_stem,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers,
            ffn_dim=ffn_dim,
            dropout=dropout,
            num_queries=num_queries,
            aux_loss=aux_loss,
        )
        self.num_classes, self.aux_loss = num_classes, aux_loss
        self.backbone = detr_backbone(
            backbone,
            backbone_stage,
            backbone_checkpoint,
            backbone_options,
            frozen_batchnorm,
            dilation,
            train_stem,
        )
        self.input_proj = nn.Conv2d(backbone_channels(self.backbone)[-1], hidden_dim, 1)
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(hidden_dim, num_heads, ffn_dim, dropout) for _ in range(num_encoder_layers)
        )
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(hidden_dim, num_heads, ffn_dim, dropout) for _ in range(num_decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        if checkpoint is not None:
            from vistra.convert.detr import load_detr_weights

            load_detr_weights(self, checkpoint, new_classes=True)

    def forward(self, images: Tensor, pixel_mask: Tensor | None = None) -> dict:
        """Detect objects in a padded batch.

        Args:
            images: [B, 3, H, W] normalized, padded to the batch maximum.
            pixel_mask: [B, H, W] bool, True = real pixel (None: no padding).

        Returns:
            ``{"pred_logits": [B, Q, C+1], "pred_boxes": [B, Q, 4] cxcywh in 0..1 of the real
            image, "aux_outputs": [{"pred_logits", "pred_boxes"} per earlier decoder layer]}``.
        """
        hidden = self.forward_transformer(images, pixel_mask)  # [L, B, Q, d]
        logits = self.class_embed(hidden)
        boxes = self.bbox_embed(hidden).sigmoid()
        outputs = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            outputs["aux_outputs"] = [
                {"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])
            ]
        return outputs

    def forward_transformer(self, images: Tensor, pixel_mask: Tensor | None = None) -> Tensor:
        """Normalized decoder outputs: [L, B, Q, d] (L = decoder layers if ``aux_loss``, else 1)."""
        if pixel_mask is None:
            pixel_mask = images.new_ones(images.shape[0], *images.shape[-2:], dtype=torch.bool)
        features = self.backbone(images)[-1]
        mask = F.interpolate(pixel_mask[:, None].float(), size=features.shape[-2:])[:, 0] > 0.5
        pos = sine_position_encoding(mask, self.input_proj.out_channels // 2)
        memory = self.input_proj(features).flatten(2).transpose(1, 2)  # [B, S, d]
        pos = pos.flatten(2).transpose(1, 2).to(memory.dtype)
        key_mask = mask.flatten(1)
        for layer in self.encoder_layers:
            memory = layer(memory, pos, key_mask)

        batch = images.shape[0]
        query_pos = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)
        x = torch.zeros_like(query_pos)
        outputs = []
        for index, layer in enumerate(self.decoder_layers):
            x = layer(x, query_pos, memory, pos, key_mask)
            if self.aux_loss or index == len(self.decoder_layers) - 1:
                outputs.append(self.decoder_norm(x))
        return torch.stack(outputs)


def detr_backbone(
    name: str,
    stage: int,
    checkpoint: str | None,
    options: dict | None,
    frozen_batchnorm: bool,
    dilation: bool,
    train_stem: bool,
) -> nn.Module:
    """DETR's backbone, returning the one map of ``stage`` (stride 2^(stage+1)): a ViT with
    ViTDet's pyramid level, or a timm network's stage (the stem and first stage frozen unless
    ``train_stem``)."""
    if is_vit_backbone(name):
        return create_vit_backbone(name, (2 ** (stage + 1),), checkpoint, **(options or {}))
    return create_feature_backbone(
        name,
        out_indices=(stage,),
        frozen_batchnorm=frozen_batchnorm,
        dilation=dilation,
        frozen_prefixes=() if train_stem else ("conv1", "bn1", "layer1"),
        checkpoint=checkpoint,
        **(options or {}),
    )


@torch.no_grad()
def detr_postprocess(outputs: dict, image_sizes: Tensor) -> list[dict]:
    """Scores, labels and pixel boxes per image, one per query (no NMS: the set is the answer).

    Args:
        outputs: ``{"pred_logits": [B, Q, C+1], "pred_boxes": [B, Q, 4]}``.
        image_sizes: [B, 2] (height, width) to scale the boxes to (the original image size).

    Returns:
        per image ``{"scores": [Q], "labels": [Q] in 0..C-1, "boxes": [Q, 4] xyxy pixels}``.
    """
    probabilities = outputs["pred_logits"].float().softmax(-1)[..., :-1]
    scores, labels = probabilities.max(-1)
    boxes = box_convert(outputs["pred_boxes"].float(), "cxcywh", "xyxy")
    height, width = image_sizes.float().unbind(1)
    scale = torch.stack([width, height, width, height], dim=1)[:, None, :]
    boxes = boxes * scale
    return [{"scores": s, "labels": lab, "boxes": b} for s, lab, b in zip(scores, labels, boxes)]
