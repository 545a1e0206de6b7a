"""Raw network outputs -> the result types, one rule per family.

``vistra.Predictor`` and the training tasks' ``predict_step`` both call ``to_results``; the
sizes they pass say where each image sits in the padded batch and what size its results are
given at.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vistra.inference.results import ClassScores, Detections, Segmentation
from vistra.inference.spec import InferenceSpec


def to_results(
    outputs: dict[str, Tensor],
    spec: InferenceSpec,
    padded_size: tuple[int, int],
    input_sizes: list[tuple[int, int]],
    output_sizes: list[tuple[int, int]],
) -> list:
    """Results for one batch.

    Args:
        outputs: ``named_outputs`` of the batch (float, CPU).
        spec: the model's inference spec (labels, thresholds).
        padded_size: (H, W) of the padded batch the network saw.
        input_sizes: each image's (h, w) inside the padded batch.
        output_sizes: the (h, w) each image's boxes / maps are given at.

    Returns:
        per image a ``Tensor`` [D] (embedding), ``ClassScores``, ``Detections`` or
        ``Segmentation``.
    """
    if spec.kind == "embedding":
        return list(outputs["features"])
    if spec.kind == "classification":
        return class_scores(outputs["logits"], spec)
    if spec.kind == "detection":
        return detections(outputs, spec, output_sizes)
    return segmentations(outputs, spec, padded_size, input_sizes, output_sizes)


def class_scores(logits: Tensor, spec: InferenceSpec) -> list[ClassScores]:
    probabilities = logits.softmax(-1)
    return [ClassScores(p, int(p.argmax()), spec.name(int(p.argmax()))) for p in probabilities]


def detections(outputs: dict, spec: InferenceSpec, sizes: list[tuple[int, int]]) -> list:
    """One detection per query (DETR has no NMS), boxes in ``sizes`` pixels."""
    from vistra.models.detr import detr_postprocess

    results = []
    for found in detr_postprocess(outputs, torch.tensor(sizes)):
        labels = [int(i) for i in found["labels"]]
        results.append(Detections(found["boxes"], found["scores"], found["labels"],
                                  [spec.name(i) for i in labels],
                                  [spec.category(i) for i in labels]))  # fmt: skip
    return results


def segmentations(outputs: dict, spec: InferenceSpec, padded, input_sizes, output_sizes) -> list:
    """Semantic map always; instances with thing classes; panoptic with things and stuff."""
    from vistra.models.mask2former.postprocess import (
        instance_inference,
        panoptic_inference,
        resize_mask_logits,
        semantic_inference,
    )

    thresholds = spec.thresholds
    things = set(spec.thing_labels or [])
    num_classes = outputs["pred_logits"].shape[-1] - 1
    padded = tuple(padded)
    results = []
    for index, (input_size, output_size) in enumerate(zip(input_sizes, output_sizes)):
        logits = outputs["pred_logits"][index]
        masks = resize_mask_logits(outputs["pred_masks"][index], padded, tuple(input_size),
                                   tuple(output_size))  # fmt: skip
        result = Segmentation(semantic_inference(logits, masks).argmax(0))
        if things:
            result.instances = instance_inference(logits, masks, thresholds.top_k, sorted(things))
        if things and len(things) < num_classes:
            ids, segments = panoptic_inference(logits, masks, things,
                                               thresholds.object_mask_threshold,
                                               thresholds.overlap_threshold)  # fmt: skip
            for segment in segments:
                segment["name"] = spec.name(segment["label"])
                segment["category_id"] = spec.category(segment["label"])
            result.panoptic, result.segments = ids, segments
        results.append(result)
    return results
