"""Losses and matchers, one per file."""

from vistra.losses.supcon import SupConLoss

__all__ = ["SupConLoss"]
