"""The JSON answer of ``POST /predict`` for one image: the rows ``vistra predict`` writes, made
by the same functions (``vistra.inference.result_json``), and pictures on request."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from vistra.inference.result_json import (
    detection_picture,
    detection_rows,
    instance_rows,
    segment_rows,
    segmentation_picture,
    semantic_image,
    top_classes,
)
from vistra.inference.spec import InferenceSpec

# Classes listed for a classifier when the request does not say how many.
DEFAULT_TOP_K = 5


def answer(spec: InferenceSpec, image: Image.Image, result, options: dict) -> dict:
    """``options``: ``threshold`` (keep detections / instances scoring at least this),
    ``top_k`` (the best k), ``picture`` (add ``picture_png``, drawn as ``vistra predict``
    draws it), ``maps`` (segmentation: add ``semantic_png`` and ``panoptic_png``)."""
    width, height = image.size
    body: dict = {"kind": spec.kind, "width": width, "height": height}
    threshold, top_k = options.get("threshold"), options.get("top_k")
    if spec.kind == "classification":
        best = top_classes(result, spec, top_k or DEFAULT_TOP_K)
        body.update(label=best[0]["label"], name=best[0]["name"], score=best[0]["score"],
                    top=best)  # fmt: skip
    elif spec.kind == "embedding":
        body["embedding"] = np.asarray(result, dtype=np.float32).tolist()
    elif spec.kind == "detection":
        rows = [dict(row, category_name=name)
                for row, name in zip(detection_rows(result), result.names)]  # fmt: skip
        body["detections"] = _best(rows, threshold, top_k)
        if options.get("picture"):
            drawn = spec.thresholds.picture_threshold if threshold is None else threshold
            body["picture_png"] = png_base64(detection_picture(image, result, drawn))
    else:
        body.update(_segmentation(spec, image, result, options))
    return body


def _segmentation(spec: InferenceSpec, image: Image.Image, result, options: dict) -> dict:
    height, width = np.asarray(result.semantic).shape
    body: dict = {}
    if (width, height) != image.size:  # maps of very large images come reduced
        body.update(map_width=width, map_height=height)
    if result.panoptic is not None:
        rows = zip(segment_rows(result), result.segments)
        body["segments_info"] = [dict(row, category_name=s["name"]) for row, s in rows]
    labels = np.asarray(result.instances["labels"]).tolist() if result.instances else []
    instances = [dict(row, category_name=spec.name(label))  # one row per instance, in order
                 for row, label in zip(instance_rows(result, spec), labels)]  # fmt: skip
    for row in instances:
        row.pop("image_id")
    body["instances"] = _best(instances, options.get("threshold"), options.get("top_k"))
    if options.get("maps"):
        body["semantic_png"] = png_base64(semantic_image(result))
        if result.panoptic is not None:
            from vistra.inference.pictures import panoptic_rgb

            body["panoptic_png"] = png_base64(panoptic_rgb(result.panoptic))
    if options.get("picture"):
        body["picture_png"] = png_base64(segmentation_picture(image, result, spec))
    return body


def _best(rows: list[dict], threshold: float | None, top_k: int | None) -> list[dict]:
    """Rows scoring at least ``threshold``, best first, at most ``top_k``."""
    kept = [row for row in rows if threshold is None or row["score"] >= threshold]
    kept.sort(key=lambda row: -row["score"])
    return kept[:top_k] if top_k else kept


def png_base64(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
