"""Hungarian matching of predicted boxes to ground-truth boxes (DETR, section 3.1)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets by the cheapest total matching cost.

    cost = cost_class * C_cls + cost_bbox * C_L1 + cost_giou * C_giou, where
    C_cls = -p(target class), C_L1 = L1 distance of cxcywh boxes, C_giou = -GIoU. The costs
    are built in one batched pass over each image's own queries and targets and solved with
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
        probabilities = outputs["pred_logits"].float().softmax(-1)  # [B, Q, C+1]
        boxes = outputs["pred_boxes"].float()  # [B, Q, 4]
        # Each image's targets padded to the largest count: costs are only ever computed
        # between an image's own queries and targets ([B, Q, N_max], not [B*Q, sum N]).
        most = max(sizes)
        labels = boxes.new_zeros(batch, most, dtype=torch.int64)
        target_boxes = boxes.new_tensor([0.5, 0.5, 1.0, 1.0]).repeat(batch, most, 1)
        for image, target in enumerate(targets):
            labels[image, : sizes[image]] = target["labels"]
            target_boxes[image, : sizes[image]] = target["boxes"].float()

        class_cost = -probabilities.gather(2, labels[:, None, :].expand(-1, num_queries, -1))
        l1_cost = torch.cdist(boxes, target_boxes, p=1)
        giou = pairwise_generalized_box_iou(
            box_convert(boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy")
        )
        cost = self.cost_class * class_cost + self.cost_bbox * l1_cost - self.cost_giou * giou
        largest = torch.finfo(cost.dtype).max
        cost = torch.nan_to_num(cost, nan=largest, posinf=largest, neginf=largest).cpu()
        matches = []
        for image, count in enumerate(sizes):
            rows, cols = linear_sum_assignment(cost[image, :, :count].numpy())
            matches.append((torch.as_tensor(rows, dtype=torch.int64),
                            torch.as_tensor(cols, dtype=torch.int64)))  # fmt: skip
        return matches


def pairwise_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of every box of ``boxes1`` [B, Q, 4] with every box of ``boxes2`` [B, N, 4] (xyxy)
    within each batch entry: [B, Q, N] (``torchvision.ops.generalized_box_iou``, batched)."""
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    a, b = boxes1[:, :, None, :], boxes2[:, None, :, :]
    inner = (torch.min(a[..., 2:], b[..., 2:]) - torch.max(a[..., :2], b[..., :2])).clamp(min=0)
    intersection = inner[..., 0] * inner[..., 1]
    union = area1[:, :, None] + area2[:, None, :] - intersection
    iou = intersection / union
    outer = (torch.max(a[..., 2:], b[..., 2:]) - torch.min(a[..., :2], b[..., :2])).clamp(min=0)
    enclosing = outer[..., 0] * outer[..., 1]
    return iou - (enclosing - union) / enclosing
