"""Mask2Former post-processing, PQ and mIoU on hand-built cases with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vistra.evaluation.panoptic import PanopticQuality, Segment
from vistra.evaluation.semantic import MeanIoU
from vistra.models.mask2former.postprocess import (
    instance_inference,
    panoptic_inference,
    resize_mask_logits,
    semantic_inference,
)

BIG = 12.0  # a logit whose sigmoid / softmax is 1 to 6 decimals


def _pq_case(crowd: bool):
    """4 x 6 image. Ground truth: A (thing 1) rows 0-1 cols 0-2, C (thing; 1, or a crowd of 2)
    rows 0-1 cols 3-4, B (stuff 10) rows 2-3, void at rows 0-1 col 5. Prediction: P1 (1)
    rows 0-1 cols 0-1 + (0, 5); P2 (10) rows 2-3 + col 2 of rows 0-1; P3 (2) cols 3-4 + (1, 5)."""
    gt = np.zeros((4, 6), dtype=np.int64)
    gt[0:2, 0:3], gt[0:2, 3:5], gt[2:4, :] = 1, 3, 2
    gt_segments = [Segment(1, 1), Segment(2, 10), Segment(3, 2 if crowd else 1, iscrowd=crowd)]
    pred = np.zeros((4, 6), dtype=np.int64)
    pred[0:2, 0:2], pred[0, 5] = 11, 11
    pred[2:4, :], pred[0:2, 2] = 12, 12
    pred[0:2, 3:5], pred[1, 5] = 13, 13
    pred_segments = [Segment(11, 1), Segment(12, 10), Segment(13, 2)]
    return pred, pred_segments, gt, gt_segments


def test_panoptic_quality_matches_the_hand_computed_case():
    metric = PanopticQuality(things={1, 2}, stuff={10})
    metric.update(*_pq_case(crowd=False))
    # cat 1: P1-A IoU = 4 / (5 + 6 - 4 - 1 void) = 2/3 (TP), C unmatched (FN) -> PQ 2/3 / 1.5
    # cat 10: P2-B IoU = 12 / 14 (TP) -> PQ 6/7; cat 2: P3 is a false positive -> PQ 0
    pq1, pq10 = (2 / 3) / 1.5, 12 / 14
    results = metric.compute()
    assert results["PQ"] == pytest.approx((pq1 + pq10 + 0) / 3)
    assert results["PQ_th"] == pytest.approx(pq1 / 2)
    assert results["PQ_st"] == pytest.approx(pq10)
    assert results["SQ_th"] == pytest.approx((2 / 3 + 0) / 2)
    assert results["RQ"] == pytest.approx((1 / 1.5 + 1 + 0) / 3)
    assert "PQ" in metric.table()


def test_panoptic_quality_ignores_predictions_on_crowd_and_void():
    metric = PanopticQuality(things={1, 2}, stuff={10})
    metric.update(*_pq_case(crowd=True))
    # C is now a crowd region of category 2: no false negative, and P3 lies on crowd (4 px) +
    # void (1 px) = 5 / 5 of its area: not a false positive. Category 2 drops out of the mean.
    results = metric.compute()
    assert results["PQ"] == pytest.approx((2 / 3 + 12 / 14) / 2)
    assert results["PQ_th"] == pytest.approx(2 / 3)


def test_panoptic_quality_rejects_unknown_categories():
    metric = PanopticQuality(things={1}, stuff={10})
    pred, pred_segments, gt, gt_segments = _pq_case(crowd=False)
    with pytest.raises(ValueError, match="unknown category 2"):
        metric.update(pred, pred_segments, gt, gt_segments)


def test_mean_iou_by_hand_with_ignored_pixels():
    metric = MeanIoU(3)
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    prediction = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    metric.update(prediction, target)
    # class 0: TP 1, pred 2, true 2 -> 1/3; class 1: TP 2, pred 3, true 2 -> 2/3;
    # class 2: TP 1, pred 1, true 2 -> 1/2 (ignored pixels left out)
    results = metric.compute()
    assert results["IoU"] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert results["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert results["pixel_accuracy"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="outside"):
        metric.update(torch.zeros(2, 2), torch.full((2, 2), 7))


def _outputs():
    """3 classes (0 thing, 1 and 2 stuff), 6 queries over a 4 x 8 image."""
    logits = torch.full((6, 4), -BIG)
    masks = torch.full((6, 4, 8), -BIG)
    logits[0, 0], masks[0, :, 0:3] = BIG, BIG  # thing, left
    logits[1, 1], masks[1, :, 3:6] = BIG, BIG  # stuff 1, middle
    logits[2, 1], masks[2, :, 6:8] = BIG, BIG  # stuff 1 again, right: merged with query 1
    logits[3, 2], logits[3, 3] = 0.0, 0.5  # class 2 but score < 0.8: dropped
    masks[3] = BIG
    logits[4, 3] = BIG  # "no object": dropped
    masks[4] = BIG
    logits[5, 0], masks[5, :, 0:4] = BIG, BIG - 1  # thing over the left, mostly lost to query 0
    return logits, masks


def test_panoptic_inference_thresholds_overlap_and_merges_stuff():
    logits, masks = _outputs()
    ids, segments = panoptic_inference(logits, masks, thing_classes={0})
    by_label = {s["label"]: s for s in segments}
    assert [s["label"] for s in segments] == [0, 1]  # query 5 keeps 4/16 of its mask < 0.8
    assert by_label[0]["isthing"] and not by_label[1]["isthing"]
    assert torch.equal(ids[:, 0:3], torch.full((4, 3), by_label[0]["id"]))
    assert torch.equal(ids[:, 3:8], torch.full((4, 5), by_label[1]["id"]))  # one stuff segment
    assert by_label[1]["area"] == 20


def test_semantic_and_instance_inference_by_hand():
    logits, masks = _outputs()
    semantic = semantic_inference(logits, masks)
    assert semantic.shape == (3, 4, 8)
    expected = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    assert torch.equal(semantic.argmax(0)[0], expected)
    instances = instance_inference(logits, masks, top_k=4, classes=[0])
    assert set(instances["labels"].tolist()) == {0}
    # query 0: class prob ~1 x mean mask prob ~1; query 5: mask prob sigmoid(11)
    assert instances["scores"][0] == pytest.approx(1.0, abs=1e-4)
    assert instances["masks"][0].sum() == 12
    assert instances["scores"][1] == pytest.approx(1 / (1 + math.exp(-(BIG - 1))), abs=1e-4)


def test_resize_mask_logits_cuts_the_padding_before_resizing():
    masks = torch.zeros(1, 4, 4)
    masks[0, :2, :2] = 1.0  # the image is the top-left 8 x 8 of a 16 x 16 padded batch
    resized = resize_mask_logits(masks, (16, 16), (8, 8), (2, 2))
    assert resized.shape == (1, 2, 2)
    # Cutting first keeps the image's own values (bilinear blur only at its edge); resizing the
    # padded map directly would average the padding in (about 0.25 here).
    assert resized.min() > 0.85
    uncut = torch.nn.functional.interpolate(masks[None], size=(2, 2), mode="bilinear")
    assert uncut.mean() < 0.5


def test_a_query_whose_mask_hides_every_pixel_attends_everywhere():
    from torch import nn

    from vistra.models.mask2former.transformer_decoder import MaskedAttentionDecoder

    decoder = MaskedAttentionDecoder(in_channels=8, num_classes=2, dim=8, heads=2, ffn_dim=16,
                                     num_layers=1, num_queries=2, mask_dim=8)  # fmt: skip
    decoder.decoder_norm, decoder.mask_embed = nn.Identity(), nn.Identity()
    features = torch.zeros(1, 8, 4, 4)
    features[0, 0, :, :2], features[0, 0, :, 2:] = 1.0, -1.0  # channel 0: left half positive
    features[0, 1] = -1.0  # channel 1: negative everywhere
    queries = torch.zeros(1, 2, 8)
    queries[0, 0, 1] = 5.0  # query 0's mask is empty: it would hide every pixel
    queries[0, 1, 0] = 5.0  # query 1's mask is the left half
    _, attend = decoder.predict(queries, features, (4, 4))
    assert attend.shape == (1, 1, 2, 16)
    assert attend[0, 0, 0].all()  # the fallback: attend everywhere
    left = torch.zeros(4, 4, dtype=torch.bool)
    left[:, :2] = True
    assert torch.equal(attend[0, 0, 1], left.flatten())
