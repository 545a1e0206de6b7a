"""Stop a diverging run at the step where it diverges, before a non-finite weight is saved."""

from __future__ import annotations

import math

import lightning as L
import torch


class NonFiniteTrainingError(FloatingPointError):
    """The loss, a gradient or a weight is NaN or infinite; the message names the step, the
    batch and the loss terms."""


class StopOnNonFinite(L.Callback):
    """Raise ``NonFiniteTrainingError`` when the loss (before backward), the gradient norm
    (before the optimizer step) or the weights (after it, before any checkpoint callback runs)
    are not finite. The last checkpoint written stays the last good one.

    The message names the step, the batch (with the image ids its targets carry) and the loss
    terms the task recorded in ``last_loss_terms``."""

    def __init__(self) -> None:
        self._batch: tuple | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._batch = (batch, batch_idx)

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteTrainingError(self._message(trainer, pl_module, f"loss {float(loss)}"))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if "16" in str(trainer.precision) and "bf16" not in str(trainer.precision):
            return  # fp16 loss scaling skips such steps itself
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]  # fmt: skip
        if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            raise NonFiniteTrainingError(
                self._message(trainer, pl_module, "the gradient norm is not finite")
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        weights = [p.detach() for p in pl_module.parameters() if p.requires_grad]
        if weights and not torch.isfinite(torch.nn.utils.get_total_norm(weights)):
            raise NonFiniteTrainingError(
                self._message(trainer, pl_module, "the update made weights non-finite")
            )

    def _message(self, trainer, pl_module, what: str) -> str:
        batch, batch_idx = self._batch or (None, -1)
        terms = getattr(pl_module, "last_loss_terms", None) or {}
        bad = [f"{name} {float(value)}" for name, value in terms.items()
               if not math.isfinite(float(value))]  # fmt: skip
        return (
            f"training diverged at step {trainer.global_step} (epoch {trainer.current_epoch}, "
            f"batch {batch_idx}{image_ids(batch)}): {what}"
            + (f"; non-finite loss terms: {', '.join(bad[:8])}" if bad else "")
            + ". Nothing was saved for this step (the last checkpoint, if any, is the last good "
            "one); try a lower learning rate, or look at these images"
        )


def image_ids(batch) -> str:
    """``, image ids [..]`` when the batch's targets (its last element) carry ``image_id``."""
    if not isinstance(batch, (tuple, list)) or not batch:
        return ""
    targets = batch[-1]
    if isinstance(targets, list) and targets and isinstance(targets[0], dict):
        ids = [int(t["image_id"]) for t in targets if "image_id" in t]
        if ids:
            return f", image ids {ids}"
    return ""
