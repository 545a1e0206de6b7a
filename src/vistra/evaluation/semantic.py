"""Mean intersection over union of semantic label maps (ignore index excluded)."""

from __future__ import annotations

import torch
from torch import Tensor


class MeanIoU:
    """A confusion matrix accumulated over images; ``compute()`` -> mIoU, pixel accuracy, per class.

    Args:
        num_classes: labels 0..num_classes-1; ``ignore_index`` pixels (255) are left out.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """prediction, target: [H, W] (or any equal shapes) integer labels."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target "
                             f"{tuple(target.shape)} differ")  # fmt: skip
        valid = target != self.ignore_index
        target, prediction = target[valid].long().cpu(), prediction[valid].long().cpu()
        if len(target) and (target.max() >= self.num_classes or target.min() < 0):
            raise ValueError(f"target label {int(target.max())} outside 0..{self.num_classes - 1} "
                             f"(and not the ignore index {self.ignore_index})")  # fmt: skip
        index = target * self.num_classes + prediction.clamp(0, self.num_classes - 1)
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )

    def compute(self) -> dict[str, float | list[float]]:
        """``{"mIoU", "pixel_accuracy", "IoU": per class (NaN for a class never seen)}``:
        classes absent from both prediction and target are left out of the mean."""
        confusion = self.confusion.double()
        true_positive = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - true_positive
        iou = true_positive / union  # NaN where union == 0
        present = union > 0
        return {
            "mIoU": float(iou[present].mean()) if present.any() else float("nan"),
            "pixel_accuracy": float(true_positive.sum() / confusion.sum().clamp_min(1)),
            "IoU": iou.tolist(),
        }
