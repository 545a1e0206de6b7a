"""DETR's set loss: classification of every query, L1 + GIoU on the matched boxes."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

from vistra.losses.matcher import HungarianMatcher


def averaged_over_ranks(values: list[float], device: torch.device, across: bool) -> list[float]:
    """``values`` averaged over the processes (one collective), or as they are."""
    total = torch.tensor([float(v) for v in values], device=device)
    world = 1
    if across and dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        world = dist.get_world_size()
    return (total / world).tolist()


def set_normalisers(
    targets: list[dict], queries: int, eos_coef: float, device: torch.device, across: bool
) -> tuple[float, float]:
    """(targets, summed class weight of every query's target), per rank averaged over ranks.

    Every target is matched (``queries`` >= targets) in every decoder layer, so the class
    weights of a batch sum to matched + ``eos_coef`` x unmatched whatever the matching. Dividing
    the weighted cross-entropy by their average over ranks, rather than by each rank's own sum
    as ``F.cross_entropy`` does, makes a 4-process step equal the 1-process step.
    """
    count = sum(len(t["labels"]) for t in targets)
    matched = sum(min(queries, len(t["labels"])) for t in targets)
    weight = matched + eos_coef * (len(targets) * queries - matched)
    count, weight = averaged_over_ranks([count, weight], device, across)
    return max(count, 1.0), weight


def class_terms(
    logits: Tensor,
    matches: list,
    targets: list[dict],
    class_weight: Tensor,
    log_extras: bool,
    weight_total: float | None = None,
) -> tuple[dict[str, Tensor], tuple[Tensor, Tensor]]:
    """Cross-entropy of every query (matched: its target's class, others: "no object", the
    last class, weighted by ``class_weight``) and, with ``log_extras``, the class error (%) of
    the matched queries. Returns the terms and the matched (batch, query) indices.

    logits [B, Q, C+1] float; matches: per image (query indices, target indices);
    weight_total: the divisor of the weighted sum (``set_normalisers``; None: this batch's
    summed weights, ``F.cross_entropy``'s weighted mean).
    """
    device = logits.device
    batch_index = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(matches)])
    batch_index, query_index = batch_index.to(device), torch.cat([q for q, _ in matches]).to(device)
    matched_labels = torch.cat([t["labels"][j.to(t["labels"].device)]
                                for t, (_, j) in zip(targets, matches)]).to(device)  # fmt: skip
    target_classes = torch.full(logits.shape[:2], logits.shape[-1] - 1, dtype=torch.int64,
                                device=device)  # fmt: skip
    target_classes[batch_index, query_index] = matched_labels
    weighted = F.cross_entropy(logits.transpose(1, 2), target_classes, class_weight,
                               reduction="none")  # fmt: skip
    if weight_total is None:
        weight_total = class_weight[target_classes].sum()
    terms = {"loss_ce": weighted.sum() / weight_total}
    if log_extras:
        with torch.no_grad():
            if len(matched_labels):
                correct = logits[batch_index, query_index].argmax(-1) == matched_labels
                terms["class_error"] = 100 - 100 * correct.float().mean()
            else:
                terms["class_error"] = logits.new_zeros(())
    return terms, (batch_index, query_index)


class WeightedTerms:
    """Weights of named loss terms, auxiliary copies (``loss_dice_3``) included."""

    base_weights: dict[str, float]

    def weight_of(self, name: str) -> float:
        """Weight of a term name such as ``loss_giou_3``; 0 for logged-only terms."""
        for base, weight in self.base_weights.items():
            if name == base or name.startswith(base + "_") and name[len(base) + 1 :].isdigit():
                return weight
        return 0.0

    def total(self, terms: dict[str, Tensor]) -> Tensor:
        return sum(self.weight_of(name) * value for name, value in terms.items()
                   if self.weight_of(name))  # fmt: skip


class SetCriterion(WeightedTerms, nn.Module):
    """Hungarian-matched set loss (Carion et al. 2020, eq. 2) for one or more decoder layers.

    Terms, unweighted, for the final layer and with suffix ``_i`` for auxiliary layer i:
      - ``loss_ce``: cross-entropy over C+1 classes for every query, matched queries against
        their target's class, the rest against "no object" (weight ``eos_coef``);
      - ``loss_bbox``: L1 of matched cxcywh boxes, summed, divided by the number of targets;
      - ``loss_giou``: 1 - GIoU of matched boxes, same normalisation;
      - ``class_error`` (final layer, in %), ``cardinality_error``: logged, no gradient.
    ``weight_dict`` holds the weights; ``total(terms)`` is the weighted sum to optimise.

    Args:
        num_classes: foreground classes C.
        matcher: a ``HungarianMatcher``.
        eos_coef: weight of the "no object" class (paper: 0.1).
        weight_ce, weight_bbox, weight_giou: loss weights (paper: 1, 5, 2).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher | None = None,
        eos_coef: float = 0.1,
        weight_ce: float = 1.0,
        weight_bbox: float = 5.0,
        weight_giou: float = 2.0,
    ) -> None:
        super().__init__()
        if num_classes < 1 or not 0 <= eos_coef <= 1:
            raise ValueError(f"need num_classes >= 1 and 0 <= eos_coef <= 1, got {eos_coef}")
        self.num_classes, self.eos_coef = num_classes, eos_coef
        self.matcher = matcher or HungarianMatcher()
        class_weight = torch.ones(num_classes + 1)
        class_weight[-1] = eos_coef
        self.register_buffer("class_weight", class_weight, persistent=False)
        self.base_weights = {"loss_ce": weight_ce, "loss_bbox": weight_bbox,
                             "loss_giou": weight_giou}  # fmt: skip

    def forward(
        self, outputs: dict, targets: list[dict], across_ranks: bool = True
    ) -> dict[str, Tensor]:
        """outputs: the model's dict (``pred_logits``, ``pred_boxes``, optional ``aux_outputs``);
        targets: per image ``{"labels": [N_i], "boxes": [N_i, 4] cxcywh in 0..1}``;
        ``across_ranks``: normalise by the targets averaged over processes (training)."""
        logits = outputs["pred_logits"]
        norms = set_normalisers(targets, logits.shape[1], self.eos_coef, logits.device,
                                across_ranks)  # fmt: skip
        terms = self.layer_terms(outputs, targets, norms, log_extras=True)
        for index, aux in enumerate(outputs.get("aux_outputs", [])):
            aux_terms = self.layer_terms(aux, targets, norms, log_extras=False)
            terms.update({f"{name}_{index}": value for name, value in aux_terms.items()})
        return terms

    def layer_terms(
        self, outputs: dict, targets: list[dict], norms: tuple[float, float], log_extras: bool
    ) -> dict[str, Tensor]:
        """norms: ``set_normalisers`` (targets, class weight)."""
        num_boxes, weight_total = norms
        matches = self.matcher(outputs, targets)
        logits = outputs["pred_logits"].float()
        terms, (batch_index, query_index) = class_terms(
            logits, matches, targets, self.class_weight, log_extras, weight_total
        )

        predicted = outputs["pred_boxes"][batch_index, query_index].float()
        matched_boxes = torch.cat([t["boxes"][j.to(t["boxes"].device)]
                                   for t, (_, j) in zip(targets, matches)]).float()  # fmt: skip
        terms["loss_bbox"] = F.l1_loss(predicted, matched_boxes, reduction="sum") / num_boxes
        giou = generalized_box_iou(
            box_convert(predicted, "cxcywh", "xyxy"), box_convert(matched_boxes, "cxcywh", "xyxy")
        )
        terms["loss_giou"] = (1 - torch.diag(giou)).sum() / num_boxes
        if log_extras:
            with torch.no_grad():
                predicted_count = (logits.argmax(-1) != self.num_classes).sum(1).float()
                true_count = torch.tensor([float(len(t["labels"])) for t in targets],
                                          device=logits.device)  # fmt: skip
                terms["cardinality_error"] = F.l1_loss(predicted_count, true_count)
        return terms
