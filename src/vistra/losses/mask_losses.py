"""Per-mask losses on sampled points: sigmoid cross-entropy and dice (Mask2Former, sec. 3.3).

Both take mask logits and binary targets at the same P points of M matched masks and return
the sum over masks divided by ``num_masks`` (the number of target masks averaged over ranks).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def sigmoid_ce_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Binary cross-entropy averaged over points, summed over masks: [M, P], [M, P] -> []."""
    per_point = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype),
                                                   reduction="none")  # fmt: skip
    return per_point.mean(1).sum() / num_masks


def dice_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """1 - (2 |p t| + 1) / (|p| + |t| + 1) per mask with p = sigmoid(logits): [M, P] -> []."""
    probabilities = logits.sigmoid()
    targets = targets.to(probabilities.dtype)
    numerator = 2 * (probabilities * targets).sum(-1)
    denominator = probabilities.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks
