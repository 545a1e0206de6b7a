"""Hungarian matching of predicted masks to target masks on sampled points (Mask2Former).

Cheng et al. 2022, section 3.3 / appendix: the matching cost of query q and target t is
``cost_class * (-p_q(class_t)) + cost_mask * BCE(q, t) + cost_dice * dice(q, t)``, with the
mask terms computed on K points drawn uniformly at random per image and shared by every query
and target of that image (matching on points instead of whole masks saves memory and is worth
+2.7 AP in the paper).
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from vistra.models.layers.point_sample import point_sample


def pairwise_sigmoid_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy of every prediction with every target: [Q, K], [T, K] -> [Q, T].

    With logits x and targets t in [0, 1] (bilinear samples of binary masks),
    BCE(x, t) = softplus(x) - x t, so the [Q, T] matrix is one row sum and one matrix product.
    softplus is written as relu(x) - log(sigmoid(|x|)) because PyTorch's CPU softplus /
    log-sigmoid go through a scalar log1p (measured against two BCE passes in
    benchmarks/mask2former.py --components); the two agree to float precision (the matcher
    needs no gradient, so the kink at 0 is harmless).
    """
    softplus = logits.clamp(min=0) - logits.abs().sigmoid().log()
    return (softplus.sum(-1, keepdim=True) - logits @ targets.T) / logits.shape[1]


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """1 - (2 |p t| + 1) / (|p| + |t| + 1) for every pair: [Q, K], [T, K] -> [Q, T]."""
    probabilities = logits.sigmoid()
    numerator = 2 * probabilities @ targets.T
    denominator = probabilities.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class MaskHungarianMatcher(nn.Module):
    """Per-image assignment of queries to target masks by class, BCE and dice costs on points.

    Args:
        cost_class, cost_mask, cost_dice: weights (paper: 2, 5, 5).
        num_points: K points per image (paper: 12544 = 112 x 112).
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: int = 12544,
    ) -> None:
        super().__init__()
        if min(cost_class, cost_mask, cost_dice) < 0 or cost_class == cost_mask == cost_dice == 0:
            raise ValueError("matching costs must be >= 0 and not all zero")
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def forward(
        self, outputs: dict, targets: list[dict], generators: list[torch.Generator] | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """Match each image's queries to its target masks.

        Args:
            outputs: ``{"pred_logits": [B, Q, C+1], "pred_masks": [B, Q, h, w]}``.
            targets: per image ``{"labels": [T_i], "masks": [T_i, H, W] bool}``.
            generators: one per image for its random points (None: torch's global one).

        Returns:
            per image ``(query_indices [M_i], target_indices [M_i])``, M_i = min(Q, T_i).
        """
        matches = []
        for image, target in enumerate(targets):
            if len(target["labels"]) == 0:
                empty = torch.empty(0, dtype=torch.int64)
                matches.append((empty, empty))
                continue
            generator = generators[image] if generators is not None else None
            cost = self.cost_matrix(outputs, image, target, generator)
            if not torch.isfinite(cost).all():
                raise FloatingPointError(
                    f"mask matching cost of image {image} is not finite: the predicted class or "
                    "mask logits contain NaN or inf (training diverged: lower the learning "
                    "rate or enable gradient clipping)"
                )
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            matches.append((torch.as_tensor(rows, dtype=torch.int64),
                            torch.as_tensor(cols, dtype=torch.int64)))  # fmt: skip
        return matches

    @torch.no_grad()
    def cost_matrix(self, outputs: dict, image: int, target: dict,
                    generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        """[Q, T_i] matching cost of image ``image``'s queries against its targets.

        Always float32, also under autocast: the BCE cost is a difference of two sums over K
        points, which a bfloat16 matrix product would not resolve.
        """
        labels, masks = target["labels"], target["masks"]
        with torch.autocast(outputs["pred_logits"].device.type, enabled=False):
            probabilities = outputs["pred_logits"][image].float().softmax(-1)  # [Q, C+1]
            predicted = outputs["pred_masks"][image].float()[:, None]  # [Q, 1, h, w]
            points = torch.rand(1, self.num_points, 2, device=predicted.device,
                                generator=generator)  # fmt: skip
            target_points = point_sample(masks[:, None].float(),
                                         points.expand(len(masks), -1, -1))[:, 0]  # fmt: skip
            predicted_points = point_sample(predicted, points.expand(len(predicted), -1, -1))[:, 0]
            return (
                -self.cost_class * probabilities[:, labels]
                + self.cost_mask * pairwise_sigmoid_ce(predicted_points, target_points)
                + self.cost_dice * pairwise_dice(predicted_points, target_points)
            )
