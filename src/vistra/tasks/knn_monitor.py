"""The kNN monitor shared by the pre-training tasks (SupCon, SimCLR, MAE)."""

from __future__ import annotations

import torch
from torch import Tensor

from vistra.evaluation.knn import knn_classify


class KNNMonitor:
    """Mixin for a LightningModule whose ``network`` has ``forward_features``.

    Validation and test run over two loaders: the training images without augmentation (the
    memory bank), then the held-out images (the queries); the epoch end logs
    ``{stage}/knn_top1``. The task's hparams must hold ``knn_k`` and ``knn_temperature``.
    """

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        images, labels = batch
        if not hasattr(self, "_knn_store"):
            self._knn_store: dict[int, list[tuple[Tensor, Tensor]]] = {}
        features = self.network.forward_features(images).float()
        self._knn_store.setdefault(dataloader_idx, []).append((features, labels))

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.validation_step(batch, batch_idx, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._log_knn_top1("val")

    def on_test_epoch_end(self) -> None:
        self._log_knn_top1("test")

    def _log_knn_top1(self, stage: str) -> None:
        store = getattr(self, "_knn_store", {})
        self._knn_store = {}
        if len(store) != 2:  # needs both the memory bank and the queries
            return
        (bank, bank_labels), (queries, query_labels) = (self._gathered(store[i]) for i in (0, 1))
        if (bank_labels < 0).any():
            return  # unlabelled data: nothing to vote with
        scores = knn_classify(
            queries,
            bank,
            bank_labels,
            int(bank_labels.max()) + 1,
            self.hparams.knn_k,
            self.hparams.knn_temperature,
        )
        top1 = (scores.argmax(dim=1) == query_labels).float().mean()
        self.log(f"{stage}/knn_top1", top1, prog_bar=True)

    def _gathered(self, batches: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """Concatenate this rank's batches and gather every rank's: ([N, D], [N]). Ranks may
        hold different counts (each image is evaluated on one rank only)."""
        features, labels = (torch.cat(parts) for parts in zip(*batches))
        if self.trainer.world_size <= 1:
            return features, labels
        gathered = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(gathered, (features.cpu(), labels.cpu()))
        device = features.device
        return (torch.cat([g[0] for g in gathered]).to(device),
                torch.cat([g[1] for g in gathered]).to(device))  # fmt: skip
