"""Stage 1 of SupCon / SimCLR: contrastive pre-training with a kNN monitor."""

from __future__ import annotations

import lightning as L
from torch import Tensor, nn

from vistra.losses.supcon import SupConLoss
from vistra.models.layers.global_batchnorm import use_global_batchnorm
from vistra.tasks.inference import InferenceSteps
from vistra.tasks.knn_monitor import KNNMonitor
from vistra.tasks.optim import build_optimizer, fused_allowed, with_cosine_schedule


class ContrastivePretraining(InferenceSteps, KNNMonitor, L.LightningModule):
    """Train ``network`` (images -> unit-norm projections) with the SupCon loss.

    Batches are ``(views [B, V, 3, H, W], labels [B])``. With ``use_labels=False`` the labels
    are ignored and the loss is SimCLR's. Validation (two loaders: training images without
    augmentation, then held-out images) reports kNN top-1 of encoder features as ``val/knn_top1``.

    Args:
        network: e.g. ``SupConModel``; needs ``forward`` and ``forward_features``.
        temperature, base_temperature, contrast_mode: see ``SupConLoss``.
        use_labels: SupCon (True) or SimCLR (False); data without labels (e.g.
            ``UnlabelledFolderSource``) always trains SimCLR.
        optimizer: "sgd" (paper), "lars" (large batches) or "adamw".
        lr: peak learning rate; warmup_epochs: linear warm-up before the cosine decay.
        knn_k, knn_temperature: the kNN monitor (k=20 cosine, T=0.07 by default).
    """

    def __init__(
        self,
        network: nn.Module,
        temperature: float = 0.1,
        base_temperature: float = 0.07,
        contrast_mode: str = "all",
        use_labels: bool = True,
        optimizer: str = "sgd",
        lr: float = 0.5,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 10,
        knn_k: int = 20,
        knn_temperature: float = 0.07,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["network"])
        self.network = network
        self.criterion = SupConLoss(temperature, base_temperature, contrast_mode)
        self.labelled = use_labels

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.labelled and datamodule is not None and not getattr(datamodule, "classes", [1]):
            origin = getattr(datamodule, "classes_origin", "the data")
            print(f"{origin}: no labels, so the loss is SimCLR's (SupCon without labels)")
            self.labelled = False

    def configure_model(self) -> None:
        # SimCLR / SupCon normalise over the global batch: per-process BatchNorm statistics
        # would let the network tell processes apart (and change the step with the world size)
        if self.trainer.world_size > 1:
            use_global_batchnorm(self.network)

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        views, labels = batch  # [B, V, 3, H, W], [B]
        batch_size, num_views = views.shape[:2]
        projections = self.network(views.flatten(0, 1)).view(batch_size, num_views, -1)
        loss = self.criterion(projections.float(), labels if self.labelled else None)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = build_optimizer(self.network, hp.optimizer, hp.lr, hp.weight_decay, hp.momentum,
                                    fused=fused_allowed(self.trainer))  # fmt: skip
        return with_cosine_schedule(optimizer, self.trainer, hp.warmup_epochs)
