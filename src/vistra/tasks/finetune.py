"""End-to-end (or partial) fine-tuning of a classifier: the MAE fine-tuning recipe."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vistra.tasks.class_count import ClassCountCheck
from vistra.tasks.classification import AccuracyMetrics
from vistra.tasks.inference import InferenceSteps
from vistra.tasks.optim import build_optimizer, fused_allowed, scaled_lr, with_cosine_schedule
from vistra.tasks.sharding import ShardableViT


class FineTuning(ShardableViT, InferenceSteps, ClassCountCheck, AccuracyMetrics, L.LightningModule):
    """Cross-entropy fine-tuning with mixup / cutmix, label smoothing and layer-wise lr decay.

    The MAE paper's recipe (ViT-B): AdamW (0.9, 0.999), base lr 5e-4 (lr = base_lr x global
    batch / 256), weight decay 0.05, layer decay 0.65 (0.75 for L/H), 5 warm-up epochs then
    cosine, mixup 0.8, cutmix 1.0, label smoothing 0.1; drop path and RandAugment live in the
    network and the data module.

    Args:
        network: e.g. ``ViTClassifier``; needs ``num_layers`` / ``layer_of`` for layer decay.
        num_classes: for mixup's soft targets and the metrics (default: the network's).
        mixup, cutmix: Beta(alpha, alpha) parameters; 0 turns each off (timm's ``Mixup``).
        label_smoothing: applied to the (mixed) targets.
        layer_decay: None for one learning rate everywhere.
    """

    sharded_methods = ("forward_features",)

    def __init__(
        self,
        network: nn.Module,
        num_classes: int | None = None,
        base_lr: float = 5e-4,
        weight_decay: float = 0.05,
        layer_decay: float | None = 0.65,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_epochs: float = 5,
        mixup: float = 0.8,
        cutmix: float = 1.0,
        label_smoothing: float = 0.1,
    ) -> None:
        super().__init__()
        num_classes = num_classes if num_classes is not None else network.num_classes
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.save_hyperparameters(ignore=["network"])
        self.hparams.num_classes = num_classes
        self.network = network
        self.mixing = None
        if mixup > 0 or cutmix > 0:
            from timm.data import Mixup

            self.mixing = Mixup(
                mixup_alpha=mixup,
                cutmix_alpha=cutmix,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
        self._init_accuracy(num_classes)

    def configured_classes(self) -> int:
        return self.hparams.num_classes

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, labels = batch
        if self.mixing is not None and len(images) % 2 == 0:
            images, soft_targets = self.mixing(images, labels)
            logits = self.network(images)
            loss = torch.sum(-soft_targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        else:
            logits = self.network(images)
            loss = F.cross_entropy(logits.float(), labels,
                                   label_smoothing=self.hparams.label_smoothing)  # fmt: skip
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        images, labels = batch
        logits = self.network(images)
        self._log_accuracy(stage, logits, labels, F.cross_entropy(logits.float(), labels))

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        hp = self.hparams
        lr = scaled_lr(hp.base_lr, self.trainer)
        optimizer = build_optimizer(self.network, "adamw", lr, hp.weight_decay, betas=hp.betas,
                                    layer_decay=hp.layer_decay,
                                    fused=fused_allowed(self.trainer))  # fmt: skip
        return with_cosine_schedule(optimizer, self.trainer, hp.warmup_epochs)
