"""MAE pre-training: masked reconstruction, kNN monitor, reconstruction pictures."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch import Tensor, nn

from vistra.tasks.inference import InferenceSteps
from vistra.tasks.knn_monitor import KNNMonitor
from vistra.tasks.optim import build_optimizer, fused_allowed, scaled_lr, with_cosine_schedule
from vistra.tasks.sample_randomness import sample_generators, uniform_rows
from vistra.tasks.sharding import ShardableViT


class MAEPretraining(ShardableViT, InferenceSteps, KNNMonitor, L.LightningModule):
    """Train a ``MaskedAutoencoder`` on ``(images [B, 3, H, W], labels [B])`` batches.

    The paper's recipe: AdamW (0.9, 0.95), weight decay 0.05 (none on norms, biases, tokens,
    position embeddings), lr = base_lr x effective batch / 256 with base_lr 1.5e-4, cosine decay
    after a linear warm-up (40 epochs in the paper).

    Args:
        network: the ``MaskedAutoencoder``.
        base_lr: learning rate per 256 images; absolute lr = base_lr * global batch / 256.
        weight_decay, betas, warmup_epochs: the optimizer recipe.
        knn_k, knn_temperature: the kNN monitor on mask-free encoder features.
        pictures: images of the first validation batch drawn as reconstruction grids each
            validation (0 = none); written to ``<log dir>/reconstructions/``.
    """

    sharded_methods = ("pretraining_loss", "forward_features")

    def __init__(
        self,
        network: nn.Module,
        base_lr: float = 1.5e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_epochs: float = 40,
        knn_k: int = 20,
        knn_temperature: float = 0.07,
        pictures: int = 8,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["network"])
        self.network = network

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return self.network(images)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, _ = batch
        generators = sample_generators(self, batch_idx, len(images))
        noise = None
        if generators is not None:  # each image's mask from its own generator
            patches = self.network.grid[0] * self.network.grid[1]
            noise = uniform_rows(generators, patches, images.device)
        loss = self.network.pretraining_loss(images, noise)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        super().validation_step(batch, batch_idx, dataloader_idx)
        images, _ = batch
        loaders = self.trainer.val_dataloaders
        loader_count = len(loaders) if isinstance(loaders, (list, tuple)) else 1
        last_loader = dataloader_idx == loader_count - 1  # the held-out images
        if batch_idx == 0 and last_loader:
            outputs = self.network(images)
            self.log("val/loss", self.network.loss(images, outputs), add_dataloader_idx=False)
            if (
                self.hparams.pictures
                and self.trainer.is_global_zero
                and not self.trainer.sanity_checking
            ):
                self._save_reconstructions(images[: self.hparams.pictures], outputs)

    def _save_reconstructions(
        self, images: Tensor, outputs: dict[str, Tensor], name: str | None = None
    ) -> None:
        from vistra.inference.pictures import mae_reconstruction_grid

        count = len(images)
        outputs = {key: value[:count] for key, value in outputs.items()}
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "reconstructions"
        name = name or f"epoch_{self.current_epoch:04d}.png"
        mae_reconstruction_grid(self.network, images, outputs, folder / name)

    def configure_optimizers(self):
        hp = self.hparams
        lr = scaled_lr(hp.base_lr, self.trainer)
        optimizer = build_optimizer(self.network, "adamw", lr, hp.weight_decay, betas=hp.betas,
                                    fused=fused_allowed(self.trainer))  # fmt: skip
        return with_cosine_schedule(optimizer, self.trainer, hp.warmup_epochs)


__all__ = ["MAEPretraining"]
