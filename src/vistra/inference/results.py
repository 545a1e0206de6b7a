"""What inference returns, per image and per family.

Arrays are torch tensors from a checkpoint (``Predictor.from_checkpoint``) and numpy arrays
from an ONNX file (``Predictor.from_onnx``, which needs no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class ClassScores:
    """Class probabilities of one image: ``scores`` [C], the best ``label`` and its ``name``."""

    scores: Tensor
    label: int
    name: str


@dataclass
class Detections:
    """One image's detections: ``boxes`` [K, 4] xyxy in original pixels, ``scores``,
    ``labels`` (0..C-1), ``names`` and the dataset's ``category_ids``."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    names: list[str]
    category_ids: list[int]


@dataclass
class Segmentation:
    """One image's segmentation at its original size (reduced to ``MAX_MAP_PIXELS`` when
    larger; ``semantic.shape`` gives the size): ``semantic`` [H, W] labels,
    ``panoptic`` [H, W] segment ids (0 = none) with ``segments`` (id, label, name, category_id,
    isthing, score, area), and ``instances`` (``scores``, ``labels``, ``masks`` [K, H, W])."""

    semantic: Tensor
    panoptic: Tensor | None = None
    segments: list[dict] = field(default_factory=list)
    instances: dict | None = None


def finite(result) -> bool:
    """No NaN or infinity in a result's floating-point tensors (JSON has no place for them)."""
    if not hasattr(result, "__dict__"):  # an embedding
        values = [np.asarray(result)]
    else:
        fields = dict(vars(result))
        fields.update(fields.pop("instances", None) or {})
        values = [np.asarray(v) for v in fields.values() if hasattr(v, "shape")]
        values += [np.array([s.get("score", 0.0) for s in fields.get("segments") or []])]
    return all(np.isfinite(v).all() for v in values if np.issubdtype(v.dtype, np.floating))
