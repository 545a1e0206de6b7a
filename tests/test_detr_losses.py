"""Hungarian matcher against brute force, the set criterion against a hand-computed case."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou

from vistra.losses import HungarianMatcher, SetCriterion
from vistra.losses.matcher import pairwise_generalized_box_iou


def _random_case(seed: int, queries: int, targets: int, classes: int = 3):
    generator = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(1, queries, classes + 1, generator=generator),
        "pred_boxes": torch.rand(1, queries, 2, generator=generator).repeat(1, 1, 2) * 0.5
        + torch.tensor([0.25, 0.25, 0.1, 0.1]) * torch.rand(1, queries, 4, generator=generator),
    }
    centres = 0.2 + 0.6 * torch.rand(targets, 2, generator=generator)
    sizes = 0.05 + 0.3 * torch.rand(targets, 2, generator=generator)
    target = {"labels": torch.randint(0, classes, (targets,), generator=generator),
              "boxes": torch.cat([centres, sizes], dim=1)}  # fmt: skip
    return outputs, [target]


def _cost_matrix(outputs, target, weights=(1.0, 5.0, 2.0)) -> torch.Tensor:
    probabilities = outputs["pred_logits"][0].softmax(-1)
    boxes = outputs["pred_boxes"][0]
    cost = torch.zeros(len(boxes), len(target["boxes"]))
    for q, t in itertools.product(range(len(boxes)), range(len(target["boxes"]))):
        giou = generalized_box_iou(
            box_convert(boxes[q : q + 1], "cxcywh", "xyxy"),
            box_convert(target["boxes"][t : t + 1], "cxcywh", "xyxy"),
        )[0, 0]
        cost[q, t] = (-weights[0] * probabilities[q, target["labels"][t]]
                      + weights[1] * (boxes[q] - target["boxes"][t]).abs().sum()
                      - weights[2] * giou)  # fmt: skip
    return cost


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("queries,targets", [(4, 1), (5, 3), (6, 4), (3, 3)])
def test_matcher_equals_brute_force(seed, queries, targets):
    outputs, target = _random_case(seed, queries, targets)
    ((rows, cols),) = HungarianMatcher(1, 5, 2)(outputs, target)
    cost = _cost_matrix(outputs, target[0])
    best = min(
        sum(cost[q, t].item() for t, q in enumerate(assignment))
        for assignment in itertools.permutations(range(queries), targets)
    )
    assert len(rows) == len(cols) == targets
    assert sorted(cols.tolist()) == list(range(targets))
    assert sum(cost[q, t].item() for q, t in zip(rows, cols)) == pytest.approx(best, abs=1e-5)


def test_matcher_and_criterion_handle_images_without_targets():
    outputs, target = _random_case(0, 5, 2)
    outputs = {k: v.repeat(2, 1, 1) for k, v in outputs.items()}
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    matches = HungarianMatcher()(outputs, [empty, target[0]])
    assert len(matches[0][0]) == 0 and len(matches[1][0]) == 2
    all_empty = HungarianMatcher()(outputs, [empty, empty])
    assert all(len(q) == 0 for q, _ in all_empty)
    terms = SetCriterion(3)(outputs, [empty, empty])
    assert terms["loss_bbox"].item() == 0.0 and terms["loss_giou"].item() == 0.0
    assert math.isfinite(terms["loss_ce"].item()) and terms["loss_ce"].item() > 0


def test_criterion_hand_computed():
    # Two queries, two classes (+ no object), one target of class 1 at (0.55, 0.5, 0.2, 0.2).
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    boxes = torch.tensor([[[0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2]]])
    target = {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.55, 0.5, 0.2, 0.2]])}
    terms = SetCriterion(2, eos_coef=0.1)({"pred_logits": logits, "pred_boxes": boxes}, [target])
    # Query 1 is matched (close box, class 1 likely); query 0 is "no object" (weight 0.1).
    nll_matched = -torch.log_softmax(logits[0, 1], -1)[1]
    nll_empty = -torch.log_softmax(logits[0, 0], -1)[2]
    expected_ce = (1.0 * nll_matched + 0.1 * nll_empty) / 1.1
    assert terms["loss_ce"].item() == pytest.approx(expected_ce.item(), rel=1e-6)
    assert terms["loss_bbox"].item() == pytest.approx(0.05, rel=1e-5)
    # Boxes [0.4, 0.6]^2 and [0.45, 0.65] x [0.4, 0.6]: IoU 0.03 / 0.05, hull = union -> 0.6.
    assert terms["loss_giou"].item() == pytest.approx(0.4, rel=1e-5)
    assert terms["class_error"].item() == 0.0
    assert terms["cardinality_error"].item() == 1.0  # both queries predict an object
    criterion = SetCriterion(2, weight_ce=1, weight_bbox=5, weight_giou=2)
    total = criterion.total(terms)
    assert total.item() == pytest.approx(expected_ce.item() + 5 * 0.05 + 2 * 0.4, rel=1e-5)


def test_criterion_names_auxiliary_terms_and_weights_them():
    outputs, target = _random_case(1, 5, 2)
    outputs["aux_outputs"] = [dict(outputs), dict(outputs)]
    criterion = SetCriterion(3)
    terms = criterion(outputs, target)
    assert {"loss_ce_0", "loss_bbox_1", "loss_giou_1"} <= set(terms)
    assert criterion.weight_of("loss_giou_1") == 2.0 and criterion.weight_of("class_error") == 0
    single = criterion.total({k: v for k, v in terms.items() if not k[-1].isdigit()})
    assert criterion.total(terms).item() == pytest.approx(3 * single.item(), rel=1e-5)


def test_bad_hyper_parameters_raise():
    with pytest.raises(ValueError):
        HungarianMatcher(0, 0, 0)
    with pytest.raises(ValueError):
        SetCriterion(3, eos_coef=2.0)


def test_batched_generalized_box_iou_equals_torchvision_per_image():
    generator = torch.Generator().manual_seed(3)
    cxcywh = [torch.rand(4, n, 4, generator=generator) * 0.5 + 0.1 for n in (7, 5)]
    first, second = (box_convert(b, "cxcywh", "xyxy") for b in cxcywh)
    batched = pairwise_generalized_box_iou(first, second)
    assert batched.shape == (4, 7, 5)
    for image in range(4):
        expected = generalized_box_iou(first[image], second[image])
        torch.testing.assert_close(batched[image], expected, rtol=0, atol=1e-6)
