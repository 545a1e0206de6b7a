"""Mask2Former outputs -> semantic maps, instances and panoptic segments (sec. 3.4 / 4).

Each function takes one image's ``logits`` [Q, C+1] and ``masks`` [Q, H, W] mask logits
already resized to the size wanted (``resize_mask_logits``) and returns plain tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def resize_mask_logits(
    masks: Tensor, padded_size: tuple[int, int], image_size: tuple[int, int],
    output_size: tuple[int, int],
) -> Tensor:  # fmt: skip
    """Mask logits [Q, h, w] of a padded batch -> [Q, *output_size] of the image.

    Upsample to the padded input size, cut the image's own ``image_size`` (its top-left part),
    resize to ``output_size`` (usually the original image size); bilinear throughout.
    """
    masks = F.interpolate(masks[None].float(), size=padded_size, mode="bilinear",
                          align_corners=False)  # fmt: skip
    masks = masks[..., : image_size[0], : image_size[1]]
    return F.interpolate(masks, size=output_size, mode="bilinear", align_corners=False)[0]


def semantic_inference(logits: Tensor, masks: Tensor) -> Tensor:
    """Per-class scores [C, H, W]: class probabilities times mask probabilities, summed over
    queries ("no object" dropped). ``argmax(0)`` gives the semantic map."""
    probabilities = logits.float().softmax(-1)[:, :-1]
    return torch.einsum("qc,qhw->chw", probabilities, masks.float().sigmoid())


def instance_inference(
    logits: Tensor, masks: Tensor, top_k: int = 100, classes: list[int] | None = None
) -> dict[str, Tensor]:
    """The ``top_k`` best (query, class) pairs as instances.

    Score = class probability x mean mask probability inside the binary mask (mask logit > 0).
    ``classes`` restricts the labels (e.g. the thing classes of a panoptic model).

    Returns ``{"scores" [K], "labels" [K], "masks" [K, H, W] bool}`` sorted by score.
    """
    num_queries, num_classes = logits.shape[0], logits.shape[1] - 1
    probabilities = logits.float().softmax(-1)[:, :-1]
    if classes is not None:
        allowed = torch.zeros(num_classes, dtype=torch.bool, device=logits.device)
        allowed[list(classes)] = True
        probabilities = probabilities.masked_fill(~allowed, -1.0)
    k = min(top_k, num_queries * num_classes)
    scores, flat = probabilities.flatten().topk(k)
    keep = scores >= 0  # drops pairs of excluded classes
    scores, flat = scores[keep], flat[keep]
    labels, queries = flat % num_classes, flat // num_classes
    mask_logits = masks[queries].float()
    binary = mask_logits > 0
    mask_scores = (mask_logits.sigmoid() * binary).flatten(1).sum(1) / (
        binary.flatten(1).sum(1) + 1e-6
    )
    scores = scores * mask_scores
    order = scores.argsort(descending=True)
    return {"scores": scores[order], "labels": labels[order], "masks": binary[order]}


def panoptic_inference(
    logits: Tensor,
    masks: Tensor,
    thing_classes: set[int] | list[int],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> tuple[Tensor, list[dict]]:
    """Non-overlapping segments: every pixel goes to the kept query with the highest
    score x mask probability; a query keeps its segment only if that leaves at least
    ``overlap_threshold`` of its own mask; stuff segments of one class merge into one.

    Returns ``(segment_ids [H, W] int64, 0 = no segment, [{"id", "label", "isthing",
    "score", "area"}, ...])``.
    """
    num_classes = logits.shape[1] - 1
    scores, labels = logits.float().softmax(-1).max(-1)
    keep = (labels != num_classes) & (scores > object_mask_threshold)
    scores, labels, probabilities = scores[keep], labels[keep], masks[keep].float().sigmoid()
    height, width = masks.shape[-2:]
    segment_ids = torch.zeros(height, width, dtype=torch.int64, device=masks.device)
    segments: list[dict] = []
    if len(scores) == 0:
        return segment_ids, segments
    owner = (scores[:, None, None] * probabilities).argmax(0)  # [H, W] query index
    thing_classes = set(int(c) for c in thing_classes)
    stuff_segment: dict[int, dict] = {}
    for query, (score, label) in enumerate(zip(scores.tolist(), labels.tolist())):
        own = probabilities[query] >= 0.5
        won = owner == query
        region = won & own
        own_area, won_area, area = int(own.sum()), int(won.sum()), int(region.sum())
        if own_area == 0 or won_area == 0 or area == 0:
            continue
        if won_area / own_area < overlap_threshold:
            continue
        is_thing = label in thing_classes
        if not is_thing and label in stuff_segment:
            segment = stuff_segment[label]
            segment["area"] += area
            segment_ids[region] = segment["id"]
            continue
        segment = {"id": len(segments) + 1, "label": label, "isthing": is_thing,
                   "score": score, "area": area}  # fmt: skip
        segments.append(segment)
        segment_ids[region] = segment["id"]
        if not is_thing:
            stuff_segment[label] = segment
    return segment_ids, segments
