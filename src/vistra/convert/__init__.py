"""Checkpoints people already own -> vistra state dicts; Hugging Face model ids from the local
cache (``hub``). Importing the package imports no torch (the ONNX route names models too)."""

from __future__ import annotations

_LAZY = {
    "load_detr_weights": "vistra.convert.detr",
    "load_mae_weights": "vistra.convert.mae",
    "mae_state_dict_from_hf": "vistra.convert.mae",
    "load_mask2former_weights": "vistra.convert.mask2former",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vistra.convert' has no attribute {name!r}")


__all__ = list(_LAZY)
