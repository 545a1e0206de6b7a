"""Mask2Former's set loss: class cross-entropy for every query, point-sampled mask BCE + dice."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vistra.losses.mask_losses import dice_loss, sigmoid_ce_loss
from vistra.losses.mask_matcher import MaskHungarianMatcher
from vistra.losses.set_criterion import WeightedTerms, class_terms, set_normalisers
from vistra.models.layers.point_sample import point_sample, uncertain_points


class MaskSetCriterion(WeightedTerms, nn.Module):
    """Hungarian-matched mask loss (Cheng et al. 2022, sec. 3.3) on every decoder prediction.

    Terms, unweighted, for the final prediction and with suffix ``_i`` for auxiliary i:
      - ``loss_ce``: cross-entropy over C+1 classes, unmatched queries against "no object"
        (weight ``eos_coef``);
      - ``loss_mask`` / ``loss_dice``: sigmoid cross-entropy / dice of each matched mask on
        ``num_points`` points chosen by uncertainty (``oversample`` x K uniform candidates, the
        ``importance`` x K with logits nearest 0, the rest uniform), the same points reading
        prediction and target bilinearly; summed over masks, divided by the number of target
        masks averaged over ranks;
      - ``class_error`` (final prediction, in %): logged, no gradient.

    Args:
        num_classes: classes C (things + stuff).
        matcher: a ``MaskHungarianMatcher`` (default: costs 2 / 5 / 5 on ``num_points``).
        eos_coef: weight of "no object" (0.1).
        weight_ce, weight_mask, weight_dice: loss weights (2, 5, 5).
        num_points, oversample, importance: point sampling (12544, 3, 0.75).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: MaskHungarianMatcher | None = None,
        eos_coef: float = 0.1,
        weight_ce: float = 2.0,
        weight_mask: float = 5.0,
        weight_dice: float = 5.0,
        num_points: int = 12544,
        oversample: float = 3.0,
        importance: float = 0.75,
    ) -> None:
        super().__init__()
        if num_classes < 1 or not 0 <= eos_coef <= 1:
            raise ValueError(f"need num_classes >= 1 and 0 <= eos_coef <= 1, got {eos_coef}")
        self.num_classes, self.eos_coef = num_classes, eos_coef
        self.matcher = matcher or MaskHungarianMatcher(num_points=num_points)
        self.num_points, self.oversample, self.importance = num_points, oversample, importance
        class_weight = torch.ones(num_classes + 1)
        class_weight[-1] = eos_coef
        self.register_buffer("class_weight", class_weight, persistent=False)
        self.base_weights = {"loss_ce": weight_ce, "loss_mask": weight_mask,
                             "loss_dice": weight_dice}  # fmt: skip

    def forward(
        self,
        outputs: dict,
        targets: list[dict],
        across_ranks: bool = True,
        generators: list[torch.Generator] | None = None,
    ) -> dict[str, Tensor]:
        """outputs: ``{"pred_logits" [B, Q, C+1], "pred_masks" [B, Q, h, w], "aux_outputs"}``;
        targets: per image ``{"labels": [T_i], "masks": [T_i, H, W] bool}`` (H, W: the padded
        batch size, so that 0..1 coordinates mean the same place in prediction and target);
        ``across_ranks``: normalise by the masks averaged over processes (training);
        ``generators``: one per image for its random points (None: torch's global one)."""
        logits = outputs["pred_logits"]
        norms = set_normalisers(targets, logits.shape[1], self.eos_coef, logits.device,
                                across_ranks)  # fmt: skip
        terms = self.layer_terms(outputs, targets, norms, True, generators)
        for index, aux in enumerate(outputs.get("aux_outputs", [])):
            aux_terms = self.layer_terms(aux, targets, norms, False, generators)
            terms.update({f"{name}_{index}": value for name, value in aux_terms.items()})
        return terms

    def layer_terms(
        self,
        outputs: dict,
        targets: list[dict],
        norms: tuple[float, float],
        log_extras: bool,
        generators: list[torch.Generator] | None = None,
    ) -> dict[str, Tensor]:
        """norms: ``set_normalisers`` (target masks, class weight)."""
        num_masks, weight_total = norms
        matches = self.matcher(outputs, targets, generators)
        logits = outputs["pred_logits"].float()
        terms, (batch_index, query_index) = class_terms(
            logits, matches, targets, self.class_weight, log_extras, weight_total
        )
        predicted = outputs["pred_masks"][batch_index, query_index].float()[:, None]  # [M,1,h,w]
        if len(predicted) == 0:  # no objects in the batch: the mask terms are zero, not NaN
            zero = outputs["pred_masks"].sum() * 0.0
            terms["loss_mask"], terms["loss_dice"] = zero, zero
        else:
            matched_masks = torch.cat([t["masks"][j.to(t["masks"].device)]
                                       for t, (_, j) in zip(targets, matches)])  # fmt: skip
            with torch.no_grad():
                counts = [len(rows) for rows, _ in matches]
                points = uncertain_points(predicted, self.num_points, self.oversample,
                                          self.importance, generators, counts)  # fmt: skip
                point_targets = point_sample(matched_masks[:, None].float(), points)[:, 0]
            point_logits = point_sample(predicted, points)[:, 0]
            terms["loss_mask"] = sigmoid_ce_loss(point_logits, point_targets, num_masks)
            terms["loss_dice"] = dice_loss(point_logits, point_targets, num_masks)
        return terms
