"""Stage 2: a linear classifier on a frozen encoder (linear probe)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from vistra.inference.checkpoint import load_network
from vistra.tasks.class_count import NOT_SET, ClassCountCheck
from vistra.tasks.inference import InferenceSteps
from vistra.tasks.optim import build_optimizer, fused_allowed, scaled_lr, with_cosine_schedule


class AccuracyMetrics:
    """Mixin for classification tasks: micro top-1 / top-5 accuracy and the mean loss per
    image, logged per stage (torchmetrics: summed over processes, so an uneven split of the
    held-out images gives the one-process numbers)."""

    def _init_accuracy(self, num_classes: int) -> None:
        self.top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
        self.mean_loss = MeanMetric()

    def _log_accuracy(self, stage: str, logits: Tensor, labels: Tensor, loss: Tensor) -> None:
        self.mean_loss.update(loss.detach(), weight=len(labels))
        self.log(f"{stage}/loss", self.mean_loss, batch_size=len(labels))
        self.top1.update(logits, labels)
        self.top5.update(logits, labels)
        self.log(f"{stage}/top1", self.top1, prog_bar=True, batch_size=len(labels))
        self.log(f"{stage}/top5", self.top5, batch_size=len(labels))


class LinearProbe(InferenceSteps, ClassCountCheck, AccuracyMetrics, L.LightningModule):
    """Cross-entropy on ``Linear(encoder features)``; the encoder stays in eval mode, no grad.

    Give either ``checkpoint`` (a stage-1 vistra checkpoint: the network is rebuilt from it) or
    ``network`` (e.g. a randomly initialised ``SupConModel`` as the baseline).

    Args:
        num_classes: classes of the dataset (``vistra fit`` takes it from the data).
        checkpoint: path of a vistra checkpoint holding the encoder.
        network: a module with ``forward_features`` and ``num_features``.
        feature_norm: BatchNorm without affine before the head (the MAE linear-probe recipe).
        optimizer, lr, momentum, weight_decay, warmup_epochs: SGD recipe for the head.
        base_lr: instead of ``lr``, the learning rate per 256 images: the absolute rate is
            ``base_lr x global batch / 256`` (devices, nodes and accumulation counted; the
            MAE probe: 0.1).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        checkpoint: str | None = None,
        network: nn.Module | None = None,
        feature_norm: bool = False,
        optimizer: str = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        warmup_epochs: float = 0,
        base_lr: float | None = None,
    ) -> None:
        super().__init__()
        if (checkpoint is None) == (network is None):
            raise ValueError("give exactly one of checkpoint (a stage-1 run) or network")
        if num_classes is None:
            raise ValueError(NOT_SET)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.save_hyperparameters(ignore=["network"])
        self.network = load_network(checkpoint) if checkpoint is not None else network
        self.network.requires_grad_(False)
        width = self.network.num_features
        norm = nn.BatchNorm1d(width, affine=False) if feature_norm else nn.Identity()
        self.head = nn.Sequential(norm, nn.Linear(width, num_classes))
        self._init_accuracy(num_classes)

    def configured_classes(self) -> int:
        return self.hparams.num_classes

    def train(self, mode: bool = True):
        super().train(mode)
        self.network.eval()  # frozen: BatchNorm statistics must not move either
        return self

    def forward(self, images: Tensor) -> Tensor:
        """images [B, 3, H, W] -> class logits [B, num_classes]."""
        with torch.no_grad():
            features = self.network.forward_features(images)
        return self.head(features.float())

    def _step(self, batch, stage: str) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        if stage == "train":
            self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        else:
            self._log_accuracy(stage, logits, labels, loss)
        return loss

    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self):
        hp = self.hparams
        lr = hp.lr if hp.base_lr is None else scaled_lr(hp.base_lr, self.trainer)
        optimizer = build_optimizer(self.head, hp.optimizer, lr, hp.weight_decay, hp.momentum,
                                    fused=fused_allowed(self.trainer))  # fmt: skip
        return with_cosine_schedule(optimizer, self.trainer, hp.warmup_epochs)
