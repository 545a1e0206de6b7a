"""Losses and matchers, one per file.

The names below are imported on first use: the matchers need scipy, which the contrastive and
MAE losses do not.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "HungarianMatcher": "vistra.losses.matcher",
    "MaskHungarianMatcher": "vistra.losses.mask_matcher",
    "MaskSetCriterion": "vistra.losses.mask_criterion",
    "SetCriterion": "vistra.losses.set_criterion",
    "SupConLoss": "vistra.losses.supcon",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vistra.losses' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
