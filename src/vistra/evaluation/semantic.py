"""Mean intersection over union of semantic label maps (ignore index excluded).

Two conventions average the per-class IoU differently, and published numbers use one or the
other:

- ``"detectron2"`` (default; detectron2's ``SemSegEvaluator``, which produced Mask2Former's
  ADE20K / Cityscapes / COCO-stuff mIoU): the mean over classes present in the ground truth;
  a class that is only predicted adds its false positives to the classes it covers, nothing
  else.
- ``"mmseg"`` (mmsegmentation's ``IoUMetric``): the mean over classes with a non-empty union,
  so a class predicted but absent from the ground truth counts with IoU 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

CONVENTIONS = ("detectron2", "mmseg")


class MeanIoU:
    """A confusion matrix accumulated over images; ``compute()`` -> mIoU, pixel accuracy, per class.

    Args:
        num_classes: labels 0..num_classes-1; ``ignore_index`` pixels (255) are left out.
        convention: which classes the mean runs over (see the module docstring).
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, convention: str = "detectron2"
    ) -> None:
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.convention = convention
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # [truth, pred]

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """prediction, target: [H, W] (or any equal shapes) integer labels."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target "
                             f"{tuple(target.shape)} differ")  # fmt: skip
        valid = target != self.ignore_index
        target, prediction = target[valid].long().cpu(), prediction[valid].long().cpu()
        for name, labels in (("target", target), ("prediction", prediction)):
            if len(labels) and (labels.max() >= self.num_classes or labels.min() < 0):
                bad = int(labels.max() if labels.max() >= self.num_classes else labels.min())
                raise ValueError(f"{name} label {bad} outside 0..{self.num_classes - 1} "
                                 f"(and not the ignore index {self.ignore_index})")  # fmt: skip
        index = target * self.num_classes + prediction
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )

    def compute(self) -> dict[str, float | list[float]]:
        """``{"mIoU", "pixel_accuracy", "IoU": per class (NaN where the convention leaves the
        class out)}``."""
        confusion = self.confusion.double()
        true_positive = confusion.diag()
        in_truth, in_prediction = confusion.sum(1), confusion.sum(0)
        union = in_truth + in_prediction - true_positive
        counted = in_truth > 0 if self.convention == "detectron2" else union > 0
        iou = torch.full_like(true_positive, float("nan"))
        iou[counted] = true_positive[counted] / union[counted]
        return {
            "mIoU": float(iou[counted].mean()) if counted.any() else float("nan"),
            "pixel_accuracy": float(true_positive.sum() / confusion.sum().clamp_min(1)),
            "IoU": iou.tolist(),
        }
