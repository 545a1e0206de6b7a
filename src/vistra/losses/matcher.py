"""Hungarian matching of predicted boxes to ground-truth boxes (DETR, section 3.1)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets by the cheapest total matching cost.

    cost = cost_class * C_cls + cost_bbox * C_L1 + cost_giou * C_giou, where
    C_cls = -p(target class), C_L1 = L1 distance of cxcywh boxes, C_giou = -GIoU. The cost
    matrix is built once for the whole batch, split per image and solved with
    ``scipy.optimize.linear_sum_assignment``. Non-finite costs (a diverged model) are replaced
    by the largest float so that the assignment still exists.

    Args:
        cost_class, cost_bbox, cost_giou: weights (paper: 1, 5, 2); not all zero.
    """

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        if min(cost_class, cost_bbox, cost_giou) < 0 or cost_class == cost_bbox == cost_giou == 0:
            raise ValueError("matching costs must be >= 0 and not all zero")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
        """Match each image's queries to its targets.

        Args:
            outputs: ``{"pred_logits": [B, Q, C+1], "pred_boxes": [B, Q, 4] cxcywh}``.
            targets: per image ``{"labels": [N_i] int64, "boxes": [N_i, 4] cxcywh}``.

        Returns:
            per image ``(query_indices [M_i], target_indices [M_i])`` int64 with
            M_i = min(Q, N_i); an image without targets gets two empty tensors.
        """
        batch, num_queries = outputs["pred_logits"].shape[:2]
        sizes = [len(t["boxes"]) for t in targets]
        if sum(sizes) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in targets]
        probabilities = outputs["pred_logits"].flatten(0, 1).float().softmax(-1)  # [B*Q, C+1]
        boxes = outputs["pred_boxes"].flatten(0, 1).float()  # [B*Q, 4]
        target_labels = torch.cat([t["labels"] for t in targets])
        target_boxes = torch.cat([t["boxes"] for t in targets]).float()

        cost = (
            -self.cost_class * probabilities[:, target_labels]
            + self.cost_bbox * torch.cdist(boxes, target_boxes, p=1)
            - self.cost_giou
            * generalized_box_iou(
                box_convert(boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy")
            )
        )
        largest = torch.finfo(cost.dtype).max
        cost = torch.nan_to_num(cost, nan=largest, posinf=largest, neginf=largest)
        cost = cost.view(batch, num_queries, -1).cpu()
        matches = []
        for image, image_cost in enumerate(cost.split(sizes, dim=-1)):
            rows, cols = linear_sum_assignment(image_cost[image].numpy())
            matches.append((torch.as_tensor(rows, dtype=torch.int64),
                            torch.as_tensor(cols, dtype=torch.int64)))  # fmt: skip
        return matches
