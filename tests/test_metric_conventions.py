"""Metric conventions as the papers' tools define them: mask AP bucketed by mask area (as
detectron2 feeds pycocotools), -1 where the ground truth has no such objects, mIoU in
detectron2's and mmseg's conventions, crowd pixels in the semantic map of panoptic data."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vistra.evaluation.coco import STAT_NAMES, COCOEvaluator
from vistra.evaluation.semantic import MeanIoU


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory):
    from vistra.data.shapes import write_shapes

    return write_shapes(tmp_path_factory.mktemp("shapes"), 0, 12, 96, seed=3)["val"]


def mask_results_with_wrong_boxes(annotation_file) -> list[dict]:
    """Each object's own mask, one mask shifted off its object, and a whole-image ``bbox``."""
    ground_truth = COCO(str(annotation_file))
    results = []
    for index, annotation in enumerate(ground_truth.dataset["annotations"]):
        mask = ground_truth.annToMask(annotation)
        if index % 3 == 0:
            mask = np.roll(mask, 6, axis=1)  # a worse mask for some objects
        rle = mask_utils.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode()
        score = 0.5 + 0.01 * (index % 7)
        results.append({"image_id": annotation["image_id"],
                        "category_id": annotation["category_id"], "segmentation": rle,
                        "bbox": [0.0, 0.0, 95.0, 95.0], "score": score})  # fmt: skip
    return results


def pycocotools_stats(annotation_file, results) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(annotation_file))
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), "segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(s) for s in evaluation.stats]


def as_pycocotools(stats: dict) -> list[float]:
    return [-1.0 if math.isnan(stats[name]) else stats[name] for name in STAT_NAMES]


def test_mask_ap_buckets_by_mask_area_like_pycocotools_without_boxes(shapes_val):
    annotations = shapes_val["instances"]
    results = mask_results_with_wrong_boxes(annotations)
    evaluator = COCOEvaluator(annotations, "segm")
    evaluator.update(sorted(COCO(str(annotations)).getImgIds()), results)
    stats, _ = evaluator.compute()

    without_boxes = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    assert as_pycocotools(stats) == pytest.approx(pycocotools_stats(annotations, without_boxes))
    # What the boxes would have done: every detection bucketed by a 95 x 95 box.
    with_boxes = pycocotools_stats(annotations, json.loads(json.dumps(results)))
    assert with_boxes[3] != pytest.approx(as_pycocotools(stats)[3])  # APs moves


def test_no_detections_give_zero_where_there_are_objects_and_none_where_there_are_not(
    shapes_val,
):
    for iou_type in ("bbox", "segm"):
        evaluator = COCOEvaluator(shapes_val["instances"], iou_type)
        evaluator.update(sorted(COCO(str(shapes_val["instances"])).getImgIds()), [])
        stats, _ = evaluator.compute()
        assert stats["AP"] == 0.0 and stats["AP50"] == 0.0 and stats["AR100"] == 0.0
        assert math.isnan(stats["APl"]) and math.isnan(stats["ARl"])  # no large shapes: -1


def detectron2_style_miou(prediction: np.ndarray, target: np.ndarray, classes: int) -> float:
    """Written from detectron2's SemSegEvaluator description: a [pred, truth] matrix; IoU over
    classes with ground-truth pixels."""
    keep = target != 255
    matrix = np.bincount(classes * prediction[keep] + target[keep], minlength=classes**2)
    matrix = matrix.reshape(classes, classes).astype(np.float64)
    tp = np.diag(matrix)
    positive_truth, positive_pred = matrix.sum(0), matrix.sum(1)
    valid = (positive_truth > 0) & (positive_truth + positive_pred - tp > 0)
    return float(np.sum(tp[valid] / (positive_truth + positive_pred - tp)[valid]) / valid.sum())


def mmseg_style_miou(prediction: np.ndarray, target: np.ndarray, classes: int) -> float:
    """Written from mmsegmentation's IoUMetric description: areas per class, nanmean."""
    keep = target != 255
    prediction, target = prediction[keep], target[keep]
    intersect = np.bincount(target[prediction == target], minlength=classes).astype(float)
    union = (np.bincount(prediction, minlength=classes) + np.bincount(target, minlength=classes)
             - intersect)  # fmt: skip
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(intersect / union))


def test_miou_conventions_by_hand_with_a_class_predicted_but_absent():
    target = torch.tensor([[0, 0, 1, 1, 2, 2, 255]])
    prediction = torch.tensor([[0, 3, 1, 1, 2, 3, 3]])
    # IoU: class 0 1/2, class 1 1, class 2 1/2, class 3 (never in the truth) 0/2
    detectron2, mmseg = MeanIoU(4), MeanIoU(4, convention="mmseg")
    for metric in (detectron2, mmseg):
        metric.update(prediction, target)
    assert detectron2.compute()["mIoU"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert mmseg.compute()["mIoU"] == pytest.approx((0.5 + 1 + 0.5 + 0) / 4)
    assert math.isnan(detectron2.compute()["IoU"][3]) and mmseg.compute()["IoU"][3] == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_miou_conventions_equal_the_reference_formulas(seed):
    rng = np.random.default_rng(seed)
    classes = 6
    target = rng.integers(0, 4, (3, 20, 24))  # classes 4 and 5 never in the truth
    target[rng.random(target.shape) < 0.1] = 255
    prediction = np.where(
        rng.random(target.shape) < 0.6, target, rng.integers(0, classes, target.shape)
    )
    prediction[prediction == 255] = 5
    detectron2, mmseg = MeanIoU(classes), MeanIoU(classes, convention="mmseg")
    for image in range(3):
        for metric in (detectron2, mmseg):
            metric.update(torch.from_numpy(prediction[image]), torch.from_numpy(target[image]))
    assert detectron2.compute()["mIoU"] == pytest.approx(
        detectron2_style_miou(prediction.ravel(), target.ravel(), classes), rel=1e-12
    )
    assert mmseg.compute()["mIoU"] == pytest.approx(
        mmseg_style_miou(prediction.ravel(), target.ravel(), classes), rel=1e-12)  # fmt: skip


def test_predicted_labels_outside_the_classes_are_rejected():
    metric = MeanIoU(3)
    with pytest.raises(ValueError, match="prediction label 7 outside 0..2"):
        metric.update(torch.tensor([[0, 7]]), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="convention must be one of"):
        MeanIoU(3, convention="voc")


def test_crowd_pixels_are_labelled_in_the_semantic_map_of_panoptic_data(tmp_path):
    from vistra.data import COCOPanopticSource
    from vistra.inference.pictures import write_panoptic_png

    ids = np.zeros((6, 8), dtype=np.int64)
    ids[:, :3], ids[:, 3:6], ids[:4, 6:] = 11, 22, 33  # a person, a crowd of people, sky
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "images" / "1.jpg")
    write_panoptic_png(ids, tmp_path / "panoptic" / "1.png")
    (tmp_path / "panoptic.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.jpg", "width": 8, "height": 6}],
        "annotations": [{"image_id": 1, "file_name": "1.png", "segments_info": [
            {"id": 11, "category_id": 1, "iscrowd": 0}, {"id": 22, "category_id": 1, "iscrowd": 1},
            {"id": 33, "category_id": 40, "iscrowd": 0}]}],
        "categories": [{"id": 1, "name": "person", "isthing": 1},
                       {"id": 40, "name": "sky", "isthing": 0}]}))  # fmt: skip
    source = COCOPanopticSource(tmp_path / "panoptic.json", tmp_path / "images",
                                tmp_path / "panoptic")  # fmt: skip
    labelled = source.semantic_map(0)
    assert (labelled[:, :6] == 0).all() and (labelled[:4, 6:] == 1).all()
    assert (labelled[4:, 6:] == 255).all()  # no segment: ignored
    ignored = source.semantic_map(0, ignore_crowd=True)
    assert (ignored[:, 3:6] == 255).all() and (ignored[:, :3] == 0).all()
