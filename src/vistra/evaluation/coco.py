"""COCO box (and mask) AP with pycocotools' ``COCOeval`` on the real annotation file."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")  # fmt: skip


def detections_to_coco(
    image_id: int, detection: dict, category_ids: list[int], min_score: float = 0.0
) -> list[dict]:
    """One image's ``{"boxes": [K, 4] xyxy pixels, "scores": [K], "labels": [K] 0..C-1}`` as
    COCO result entries ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``."""
    boxes = detection["boxes"].detach().float().cpu()
    scores = detection["scores"].detach().float().cpu()
    labels = detection["labels"].detach().cpu()
    keep = scores >= min_score
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    xywh = boxes.clone()
    xywh[:, 2:] -= xywh[:, :2]
    return [
        {"image_id": int(image_id), "category_id": int(category_ids[int(label)]),
         "bbox": [round(float(v), 2) for v in box], "score": round(float(score), 5)}
        for box, score, label in zip(xywh, scores, labels)
    ]  # fmt: skip


class COCOEvaluator:
    """Collect COCO results and score them against a COCO annotation file.

    Args:
        annotations: the ground-truth instance JSON (crowd regions included: COCOeval ignores
            detections matched to them, as in the published numbers).
        iou_type: "bbox" or "segm".
    """

    def __init__(self, annotations: str | Path, iou_type: str = "bbox") -> None:
        from pycocotools.coco import COCO

        if iou_type not in ("bbox", "segm"):
            raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
        self.annotations, self.iou_type = Path(annotations), iou_type
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(str(self.annotations))
        self.reset()

    def _detections(self):
        """The results as pycocotools' result set. For masks the ``bbox`` is dropped first, as
        detectron2's evaluator does: ``loadRes`` takes the area (and so the small / medium /
        large bucket) from ``bbox`` when there is one, and mask AP is about the mask's area."""
        if not self.results:
            return _empty_results(self.coco)
        results = self.results
        if self.iou_type == "segm":
            results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
        return self.coco.loadRes(results)

    def reset(self) -> None:
        self.results: list[dict] = []
        self.image_ids: set[int] = set()

    def update(self, image_ids: list[int], results: list[dict]) -> None:
        """Add COCO result entries for ``image_ids`` (images with no detection count too)."""
        self.image_ids.update(int(i) for i in image_ids)
        self.results.extend(results)

    def compute(self, output_json: str | Path | None = None) -> tuple[dict[str, float], str]:
        """Returns ``({"AP": ..., "AP50": ..., ...12 numbers}, the printed summary table)``.

        Only the images given to ``update`` are scored. ``output_json`` keeps the results.
        """
        if output_json is not None:
            Path(output_json).parent.mkdir(parents=True, exist_ok=True)
            Path(output_json).write_text(json.dumps(self.results))
        if not self.image_ids:
            raise ValueError("COCOEvaluator.compute: no images were evaluated")
        unknown = self.image_ids - set(self.coco.getImgIds())
        if unknown:
            raise ValueError(f"{self.annotations}: image ids {sorted(unknown)[:5]} not in the file")
        from pycocotools.cocoeval import COCOeval

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            detections = self._detections()
            evaluation = COCOeval(self.coco, detections, self.iou_type)
            evaluation.params.imgIds = sorted(self.image_ids)
            evaluation.evaluate()
            evaluation.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            evaluation.summarize()
        # COCOeval writes -1 where the ground truth has no such objects (e.g. no small ones).
        stats = [float(s) if s >= 0 else float("nan") for s in evaluation.stats]
        return dict(zip(STAT_NAMES, stats)), summary.getvalue().rstrip()


def _empty_results(ground_truth):
    """A result set with no detections: COCOeval then gives 0 where the ground truth has objects
    and -1 where it has none (``loadRes`` cannot take an empty list)."""
    from pycocotools.coco import COCO

    empty = COCO()
    dataset = ground_truth.dataset
    empty.dataset = {"images": dataset["images"], "categories": dataset["categories"],
                     "annotations": []}  # fmt: skip
    empty.createIndex()
    return empty


def tensor_image_ids(targets: list[dict]) -> list[int]:
    return [int(t["image_id"].item() if hasattr(t["image_id"], "item") else t["image_id"])
            for t in targets]  # fmt: skip


def masks_to_coco(image_id: int, instances: dict, category_ids: list[int]) -> list[dict]:
    """Instances ``{"masks" [K, H, W] bool, "scores", "labels"}`` -> COCO "segm" results (RLE)
    with the box of each mask, so the same list scores mask AP and box AP."""
    from pycocotools import mask as mask_utils

    results = []
    masks = np.asfortranarray(
        np.asarray(_cpu(instances["masks"])).transpose(1, 2, 0).astype(np.uint8)
    )
    encoded = mask_utils.encode(masks) if len(instances["scores"]) else []
    boxes = mask_utils.toBbox(encoded) if len(encoded) else []
    for rle, box, score, label in zip(encoded, boxes, instances["scores"].tolist(),
                                      instances["labels"].tolist()):  # fmt: skip
        rle["counts"] = rle["counts"].decode("ascii")
        results.append({"image_id": int(image_id), "category_id": int(category_ids[label]),
                        "segmentation": rle, "bbox": [round(float(v), 2) for v in box],
                        "score": round(float(score), 5)})  # fmt: skip
    return results


def _cpu(array):
    """A torch tensor moved to the CPU; a numpy array as it is."""
    return array.cpu() if hasattr(array, "cpu") else array
