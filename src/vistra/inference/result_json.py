"""One image's result as plain data and as a picture: the rows the result files hold
(``vistra predict``) and the answer of ``vistra serve``, made by the same functions."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vistra.inference.spec import InferenceSpec


def detection_rows(result) -> list[dict]:
    """COCO results rows without ``image_id``: ``category_id``, ``bbox`` (x, y, width,
    height in the image's pixels), ``score``; every query, in query order."""
    rows = []
    for box, score, category in zip(result.boxes.tolist(), result.scores.tolist(),
                                    result.category_ids):  # fmt: skip
        rows.append({"category_id": int(category),
                     "bbox": [round(box[0], 2), round(box[1], 2), round(box[2] - box[0], 2),
                              round(box[3] - box[1], 2)],
                     "score": round(float(score), 5)})  # fmt: skip
    return rows


def detection_picture(image: Image.Image, result, threshold: float) -> Image.Image:
    """``image`` with the boxes scoring at least ``threshold``, small images enlarged."""
    from vistra.inference.pictures import draw_detections

    keep = np.asarray(result.scores) >= threshold
    labels = np.asarray(result.labels)[keep].tolist()
    names = [name for name, kept in zip(result.names, keep.tolist()) if kept]
    return draw_detections(image, result.boxes[keep], names, result.scores[keep], labels,
                           scale=max(1.0, 288 / max(image.size)))  # fmt: skip


def top_classes(result, spec: InferenceSpec, count: int) -> list[dict]:
    """The ``count`` best classes, best first: ``label``, ``name``, ``score``."""
    scores = np.asarray(result.scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")[:count]
    return [{"label": int(k), "name": spec.name(int(k)), "score": round(float(scores[k]), 5)}
            for k in order]  # fmt: skip


def segment_rows(result) -> list[dict]:
    """The panoptic ``segments_info`` of one image (COCO panoptic results)."""
    return [{"id": s["id"], "category_id": s["category_id"], "isthing": int(s["isthing"]),
             "score": s["score"], "area": s["area"]} for s in result.segments]  # fmt: skip


def instance_rows(result, spec: InferenceSpec, image_id: int = 0) -> list[dict]:
    """COCO "segm" results rows (RLE masks, their boxes, scores) of one image."""
    from vistra.evaluation.coco import masks_to_coco

    if result.instances is None:
        return []
    ids = spec.category_ids or list(range(int(np.asarray(result.semantic).max()) + 1))
    return masks_to_coco(image_id, result.instances, ids)


def map_image(image: Image.Image, result) -> Image.Image:
    """``image`` at the size of ``result``'s maps (reduced for very large images)."""
    height, width = np.asarray(result.semantic).shape
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)


def segmentation_picture(image: Image.Image, result, spec: InferenceSpec) -> Image.Image:
    """The overlay of segments (or classes) on ``image`` with its legend."""
    from vistra.inference.pictures import segmentation_overlay

    names = spec.names or [str(i) for i in range(256)]
    return segmentation_overlay(map_image(image, result), result, names)


def semantic_image(result) -> Image.Image:
    """The class index of every pixel as an 8-bit image."""
    return Image.fromarray(np.asarray(result.semantic).astype(np.uint8))
