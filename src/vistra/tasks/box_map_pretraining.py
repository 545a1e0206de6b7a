"""Box-map pre-training: teach a detector's backbone from the detection labels alone.

DETR's recipe starts from an ImageNet-trained backbone. Where none is at hand (a CPU demo, a
domain far from ImageNet), a random backbone makes the transformer wait a long time for useful
features. This task trains the backbone first on a dense, easy problem built from the same
boxes and classes DETR will be trained on (``box_class_maps``: every pixel gets the class of
the smallest box covering it, background elsewhere), through a 1x1 convolution and per-pixel
cross-entropy. At the end of ``fit`` it writes the backbone's weights in timm naming, ready
for ``DETR(backbone_checkpoint=...)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vistra.convert.backbone import ENCODER_KEY
from vistra.data.box_maps import IGNORE_INDEX, box_class_maps
from vistra.models.backbones import create_feature_backbone
from vistra.tasks.class_count import NOT_SET, ClassCountCheck
from vistra.tasks.optim import adamw, cosine_with_warmup, training_steps


class BoxMapPretraining(ClassCountCheck, L.LightningModule):
    """Per-pixel box-class segmentation with a timm backbone's stage ``backbone_stage`` output.

    Batches are DETR batches: ``(images [B,3,H,W], pixel_mask [B,H,W], targets)`` from
    ``DetectionDataModule``.

    Args:
        num_classes: foreground classes (the head predicts them plus background).
        backbone, backbone_stage: the timm backbone and stage DETR will use.
        backbone_checkpoint: start the backbone from this file's encoder (as DETR's
            ``backbone_checkpoint``: ImageNet weights, a SupCon / SimCLR run...).
        backbone_out: file the backbone weights are written to when ``fit`` ends (None: only
            the Lightning checkpoint).
        lr, weight_decay, warmup_steps: AdamW with a cosine decay over the run.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        backbone: str = "resnet50",
        backbone_stage: int = 4,
        backbone_checkpoint: str | None = None,
        backbone_out: str | None = None,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        if num_classes is None:
            raise ValueError(NOT_SET)
        self.save_hyperparameters()
        self.backbone = create_feature_backbone(
            backbone,
            out_indices=(backbone_stage,),
            frozen_batchnorm=False,
            frozen_prefixes=(),
            checkpoint=backbone_checkpoint,
        )
        self.head = nn.Conv2d(self.backbone.feature_info.channels()[-1], num_classes + 1, 1)

    def configured_classes(self) -> int:
        return self.hparams.num_classes

    def forward(self, images: Tensor) -> Tensor:
        """images [B,3,H,W] -> class logits [B, C+1, H, W] (upsampled bilinearly)."""
        logits = self.head(self.backbone(images)[-1])
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, pixel_mask, targets = batch
        labels = box_class_maps(targets, pixel_mask)
        logits = self(images)
        loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
        real = labels != IGNORE_INDEX
        accuracy = (logits.argmax(1) == labels)[real].float().mean()
        self.log_dict({"train/loss": loss, "train/pixel_accuracy": accuracy}, prog_bar=True,
                      batch_size=images.shape[0])  # fmt: skip
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = adamw(list(self.parameters()), self.trainer, lr=hp.lr,
                          weight_decay=hp.weight_decay)  # fmt: skip
        _, total_steps = training_steps(self.trainer)
        schedule = cosine_with_warmup(optimizer, hp.warmup_steps, total_steps)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}  # fmt: skip

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # What the backbone is, for a later `backbone_checkpoint` (vistra.convert.backbone).
        checkpoint[ENCODER_KEY] = {"name": self.hparams.backbone}

    def on_fit_end(self) -> None:
        if self.hparams.backbone_out and self.trainer.is_global_zero:
            save_backbone(self.backbone, self.hparams.backbone_out)


def save_backbone(backbone: nn.Module, path: str | Path) -> Path:
    """Write ``backbone``'s state dict (timm names) atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    state = {name: tensor.detach().cpu() for name, tensor in backbone.state_dict().items()}
    torch.save(state, partial)
    os.replace(partial, path)
    return path
