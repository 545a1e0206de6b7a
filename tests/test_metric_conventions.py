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

from vistra.evaluation.coco import COCOEvaluator
from vistra.evaluation.semantic import MeanIoU


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory):
    from vistra.data.shapes import write_shapes

    return write_shapes(tmp_path_factory.mktemp("shapes"), 0, 12, 96, seed=3)["val"]


def square(rows: slice, cols: slice, size: int = 128) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[rows, cols] = 1
    return mask


def rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask))
    return {"size": encoded["size"], "counts": encoded["counts"].decode()}


def hand_built_set(folder) -> tuple[str, list[dict]]:
    """One 128 x 128 image with a small object A (20 x 20 = 400 px) and a large object B
    (100 x 100 = 10,000 px > 96 x 96); three detections, each with a whole-image ``bbox``:
    a false 10 x 10 blob (score 0.95), A exactly (0.9), and a 40-row slice of B (IoU 0.4:
    no match at any threshold; 4,000 px)."""
    objects = [square(slice(5, 25), slice(5, 25)), square(slice(27, 127), slice(27, 127))]
    ground_truth = {
        "images": [{"id": 1, "file_name": "a.png", "width": 128, "height": 128}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                         "segmentation": rle(mask), "area": int(mask.sum()),
                         "bbox": [float(x) for x in mask_utils.toBbox(
                             mask_utils.encode(np.asfortranarray(mask)))]}
                        for i, mask in enumerate(objects)],
    }  # fmt: skip
    path = folder / "instances.json"
    path.write_text(json.dumps(ground_truth))
    detections = [(square(slice(100, 110), slice(2, 12)), 0.95), (objects[0], 0.9),
                  (square(slice(87, 127), slice(27, 127)), 0.8)]  # fmt: skip
    results = [{"image_id": 1, "category_id": 1, "segmentation": rle(mask), "score": score,
                "bbox": [0.0, 0.0, 128.0, 128.0]} for mask, score in detections]  # fmt: skip
    return str(path), results


def pycocotools_stats(annotation_file, results) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(annotation_file))
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), "segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(s) for s in evaluation.stats]


def test_mask_ap_buckets_by_mask_area_computed_by_hand(tmp_path):
    """By hand, with areas from the masks: over all areas the detections rank false (0.95),
    A (0.9, IoU 1), B's slice (0.8, IoU 0.4): recall 0.5 at precision 0.5 at every IoU
    threshold, so AP = 51 of COCO's 101 recall points x 0.5. Small objects: A, with the blob
    a false positive -> AP_s 0.5, AR_s 1. Large: B, never found -> 0. Medium: no object -> -1
    (NaN). AR@1 keeps only the blob -> 0."""
    annotations, results = hand_built_set(tmp_path)
    evaluator = COCOEvaluator(annotations, "segm")
    evaluator.update([1], results)
    stats, _ = evaluator.compute()
    nan = float("nan")
    expected = {"AP": 25.5 / 101, "AP50": 25.5 / 101, "AP75": 25.5 / 101, "APs": 0.5,
                "APm": nan, "APl": 0.0, "AR1": 0.0, "AR10": 0.5, "AR100": 0.5, "ARs": 1.0,
                "ARm": nan, "ARl": 0.0}  # fmt: skip
    assert stats == pytest.approx(expected, abs=1e-9, nan_ok=True)
    # The results' whole-image boxes would have put every detection in the large bucket
    # (pycocotools takes a result's area from its bbox): the blob no longer counts as small.
    assert pycocotools_stats(annotations, results)[3] == pytest.approx(1.0)


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
