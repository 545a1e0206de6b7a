"""What DETR's and Mask2Former's tasks share: a forward pass, a set loss and its logging, the
categories from the data, the metrics' logging and gathering over ranks, the optimizer's groups."""

from __future__ import annotations

import torch
from torch import Tensor


class SetPredictionSteps:
    """Mixin for LightningModules with ``self.network`` and a set ``self.criterion`` (one term
    per name, auxiliary copies suffixed ``_i``; ``criterion.total`` gives the weighted sum), and
    ``category_ids`` / ``class_names`` (and ``thing_labels`` where the task has things)."""

    first_category_id = 0  # the ids a model trained without a data module reports from

    def _categories_from_data(self) -> None:
        """The data module's category ids, names (and thing labels); without one, ids counted
        from ``first_category_id``."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        keeps_things = hasattr(self, "thing_labels")
        if datamodule is not None and hasattr(datamodule, "category_ids"):
            self.category_ids = list(datamodule.category_ids)
            self.class_names = list(datamodule.classes)
            if keeps_things:
                self.thing_labels = list(datamodule.thing_labels)
        if self.category_ids is None:
            first = self.first_category_id
            self.category_ids = list(range(first, first + self.network.num_classes))
            if keeps_things:
                self.thing_labels = []

    def log_metrics(self, stage: str, metrics: dict[str, float]) -> None:
        """Log ``stage/name`` for each metric from rank 0; an undefined metric (COCO's -1: no
        ground truth of that kind) stays NaN, as the README documents (0 would read as a
        failure)."""
        self.log_dict({f"{stage}/{k}": float(v) for k, v in metrics.items()}, rank_zero_only=True)

    def gathered(self, value) -> list:
        """``value`` of every rank, in rank order (``[value]`` in one process)."""
        if self.trainer.world_size <= 1:
            return [value]
        everything = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(everything, value)
        return everything

    def forward(self, images: Tensor, pixel_mask: Tensor | None = None) -> dict:
        return self.network(images, pixel_mask)

    def criterion_options(self, batch_idx: int, count: int) -> dict:
        """Extra keyword arguments of the training criterion (per-image generators...)."""
        return {}

    def _step(self, batch, stage: str, batch_idx: int = 0) -> tuple[Tensor, dict]:
        images, pixel_mask, targets = batch
        outputs = self.network(images, pixel_mask)
        options = self.criterion_options(batch_idx, len(targets)) if stage == "train" else {}
        # Evaluation ranks may hold different numbers of batches (each image on one rank):
        # no collective inside a step there.
        terms = self.criterion(outputs, targets, across_ranks=stage == "train", **options)
        loss = self.criterion.total(terms)
        if stage == "train":  # named when a non-finite loss stops the run
            self.last_loss_terms = {name: value.detach() for name, value in terms.items()}
        logged = {f"{stage}/{name}": value for name, value in terms.items()
                  if not name[-1].isdigit()}  # fmt: skip
        self.log_dict(logged, batch_size=len(targets), sync_dist=stage != "train")
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(targets),
                 sync_dist=stage != "train")  # fmt: skip
        return loss, outputs

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss, _ = self._step(batch, "train", batch_idx)
        return loss
