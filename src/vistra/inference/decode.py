"""Raw outputs of an exported file -> the result types, with numpy alone.

The ONNX route (``Predictor.from_onnx``, ``vistra predict --ckpt model.onnx``) runs without
torch, so it decodes outputs here; a checkpoint's route and validation use the torch rules in
``postprocess`` (on the accelerator). Both follow the same steps, written down in the README's
"The ONNX file" section, and ``tests/test_onnx_contract.py`` holds them equal.
"""

from __future__ import annotations

import numpy as np

from vistra.inference.results import ClassScores, Detections, Segmentation
from vistra.inference.spec import InferenceSpec


def decode(
    outputs: dict[str, np.ndarray],
    spec: InferenceSpec,
    padded_size: tuple[int, int],
    input_sizes: list[tuple[int, int]],
    output_sizes: list[tuple[int, int]],
) -> list:
    """Results of one batch (see ``postprocess.to_results``; arrays instead of tensors)."""
    outputs = {name: np.asarray(value, dtype=np.float32) for name, value in outputs.items()}
    if spec.kind == "embedding":
        return list(outputs["features"])
    if spec.kind == "classification":
        probabilities = softmax(outputs["logits"])
        return [ClassScores(p, int(p.argmax()), spec.name(int(p.argmax()))) for p in probabilities]
    if spec.kind == "detection":
        return [detections(logits, boxes, spec, size)
                for logits, boxes, size in zip(outputs["pred_logits"], outputs["pred_boxes"],
                                               output_sizes)]  # fmt: skip
    pairs = zip(outputs["pred_logits"], outputs["pred_masks"])
    return [segmentation(logits, masks, spec, padded_size, input_size, output_size)
            for (logits, masks), input_size, output_size in zip(pairs, input_sizes,
                                                                output_sizes)]  # fmt: skip


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)


def detections(logits: np.ndarray, boxes: np.ndarray, spec, size: tuple[int, int]) -> Detections:
    """One image: logits [Q, C+1], boxes [Q, 4] (cx, cy, w, h in 0..1 of the image) -> one
    detection per query, xyxy in the ``size`` (h, w) pixels."""
    probabilities = softmax(logits)[:, :-1]
    scores, labels = probabilities.max(-1), probabilities.argmax(-1)
    cx, cy, w, h = boxes.T
    height, width = size
    xyxy = np.stack([(cx - w / 2) * width, (cy - h / 2) * height,
                     (cx + w / 2) * width, (cy + h / 2) * height], axis=1)  # fmt: skip
    names = [spec.name(int(i)) for i in labels]
    return Detections(xyxy.astype(np.float32), scores, labels, names,
                      [spec.category(int(i)) for i in labels])  # fmt: skip


def resize_matrix(source: int, target: int) -> np.ndarray:
    """[target, source] weights of bilinear resizing along one axis, pixel centres aligned
    (``align_corners=False``): target pixel i samples source position (i + 0.5) * source /
    target - 0.5, clamped at 0, between its two neighbours."""
    position = np.maximum((np.arange(target) + 0.5) * (source / target) - 0.5, 0.0)
    low = np.minimum(np.floor(position).astype(np.int64), source - 1)
    high = np.minimum(low + 1, source - 1)
    weight = (position - low).astype(np.float32)
    matrix = np.zeros((target, source), dtype=np.float32)
    np.add.at(matrix, (np.arange(target), low), 1.0 - weight)
    np.add.at(matrix, (np.arange(target), high), weight)
    return matrix


def resize_mask_logits(masks: np.ndarray, padded, image_size, output_size) -> np.ndarray:
    """[Q, h, w] mask logits of a padded batch -> [Q, *output_size] of the image: bilinear to
    the padded input size, its top-left ``image_size``, bilinear to ``output_size``."""
    (height, width), (rows, cols) = masks.shape[-2:], image_size
    to_rows = resize_matrix(rows, output_size[0]) @ resize_matrix(height, padded[0])[:rows]
    to_cols = resize_matrix(cols, output_size[1]) @ resize_matrix(width, padded[1])[:cols]
    return np.einsum("rh,qhw,cw->qrc", to_rows, masks, to_cols, optimize=True)


def segmentation(logits, masks, spec, padded, input_size, output_size) -> Segmentation:
    """One image: logits [Q, C+1], mask logits [Q, h, w] -> semantic map, instances (with
    thing classes) and panoptic segments (with things and stuff)."""
    masks = resize_mask_logits(masks, padded, input_size, output_size)
    probabilities = softmax(logits)
    mask_probabilities = sigmoid(masks)
    semantic = np.einsum("qc,qhw->chw", probabilities[:, :-1], mask_probabilities, optimize=True)
    result = Segmentation(semantic.argmax(0))
    things = sorted(spec.thing_labels or [])
    num_classes = logits.shape[-1] - 1
    if things:
        result.instances = instances(probabilities[:, :-1], masks, mask_probabilities,
                                     spec.thresholds.top_k, things)  # fmt: skip
    if things and len(things) < num_classes:
        result.panoptic, result.segments = panoptic(probabilities, mask_probabilities, set(things),
                                                    spec)  # fmt: skip
    return result


def instances(probabilities, masks, mask_probabilities, top_k: int, things: list[int]) -> dict:
    """The ``top_k`` best (query, thing class) pairs; score = class probability x mean mask
    probability inside the mask (logit > 0)."""
    num_classes = probabilities.shape[1]
    allowed = np.zeros(num_classes, dtype=bool)
    allowed[things] = True
    flat = np.where(allowed, probabilities, -1.0).ravel()
    order = np.argsort(-flat, kind="stable")[: min(top_k, flat.size)]
    order = order[flat[order] >= 0]
    labels, queries = order % num_classes, order // num_classes
    binary = masks[queries] > 0
    inside = binary.reshape(len(queries), -1)
    mask_scores = (mask_probabilities[queries].reshape(len(queries), -1) * inside).sum(1) / (
        inside.sum(1) + 1e-6
    )
    scores = (flat[order] * mask_scores).astype(np.float32)
    ranked = np.argsort(-scores, kind="stable")
    return {"scores": scores[ranked], "labels": labels[ranked], "masks": binary[ranked]}


def panoptic(probabilities, mask_probabilities, things: set[int], spec) -> tuple:
    """Non-overlapping segments (Mask2Former's panoptic inference; see
    ``vistra.models.mask2former.postprocess.panoptic_inference``)."""
    thresholds = spec.thresholds
    num_classes = probabilities.shape[1] - 1
    scores, labels = probabilities.max(-1), probabilities.argmax(-1)
    keep = (labels != num_classes) & (scores > thresholds.object_mask_threshold)
    scores, labels, kept = scores[keep], labels[keep], mask_probabilities[keep]
    segment_ids = np.zeros(mask_probabilities.shape[-2:], dtype=np.int64)
    segments: list[dict] = []
    if not len(scores):
        return segment_ids, segments
    owner = (scores[:, None, None] * kept).argmax(0)
    stuff: dict[int, dict] = {}
    for query, (score, label) in enumerate(zip(scores.tolist(), labels.tolist())):
        own, won = kept[query] >= 0.5, owner == query
        region = own & won
        own_area, won_area, area = int(own.sum()), int(won.sum()), int(region.sum())
        if (
            not (own_area and won_area and area)
            or won_area / own_area < thresholds.overlap_threshold
        ):
            continue
        if label not in things and label in stuff:
            stuff[label]["area"] += area
            segment_ids[region] = stuff[label]["id"]
            continue
        segment = {"id": len(segments) + 1, "label": label, "isthing": label in things,
                   "score": score, "area": area, "name": spec.name(label),
                   "category_id": spec.category(label)}  # fmt: skip
        segments.append(segment)
        segment_ids[region] = segment["id"]
        if label not in things:
            stuff[label] = segment
    return segment_ids, segments
