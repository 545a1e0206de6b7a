"""Losses and matchers, one per file."""

from vistra.losses.mask_criterion import MaskSetCriterion
from vistra.losses.mask_matcher import MaskHungarianMatcher
from vistra.losses.matcher import HungarianMatcher
from vistra.losses.set_criterion import SetCriterion
from vistra.losses.supcon import SupConLoss

__all__ = [
    "HungarianMatcher",
    "MaskHungarianMatcher",
    "MaskSetCriterion",
    "SetCriterion",
    "SupConLoss",
]
