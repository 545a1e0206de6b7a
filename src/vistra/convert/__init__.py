"""Checkpoints people already own -> vistra state dicts."""

from vistra.convert.detr import load_detr_weights
from vistra.convert.mae import load_mae_weights, mae_state_dict_from_hf
from vistra.convert.mask2former import load_mask2former_weights

__all__ = [
    "load_detr_weights",
    "load_mae_weights",
    "load_mask2former_weights",
    "mae_state_dict_from_hf",
]
