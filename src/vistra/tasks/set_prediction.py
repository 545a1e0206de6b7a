"""What DETR's and Mask2Former's tasks share: a forward pass, a set loss and its logging."""

from __future__ import annotations

from torch import Tensor


class SetPredictionSteps:
    """Mixin for LightningModules with ``self.network`` and a set ``self.criterion`` (one term
    per name, auxiliary copies suffixed ``_i``; ``criterion.total`` gives the weighted sum)."""

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
