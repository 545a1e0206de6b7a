"""Plain ``nn.Module``s: no training engine imported here.

The names below are imported on first use, so that rebuilding one family's network (``vistra
predict --ckpt``) imports that family's module only.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "DETR": "vistra.models.detr",
    "Mask2Former": "vistra.models.mask2former",
    "MaskedAutoencoder": "vistra.models.mae",
    "detr_postprocess": "vistra.models.detr",
    "SupConModel": "vistra.models.supcon",
    "ViTClassifier": "vistra.models.vit_classifier",
    "create_encoder": "vistra.models.backbones",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vistra.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
