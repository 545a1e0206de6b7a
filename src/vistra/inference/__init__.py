"""Inference from a checkpoint alone: ``Predictor``, the result types, the results files and
the exporters. Nothing here imports Lightning (the training tasks import this, not the
reverse).

- ``spec``: what a checkpoint says about inference (``InferenceSpec``, ``Thresholds``)
- ``checkpoint``: reading a checkpoint safely and rebuilding its network
- ``images``: inputs (files, folders, arrays, tensors) and output names
- ``network``: the forward inference runs and exports (``InferenceNetwork``)
- ``postprocess``: raw outputs -> ``results`` (``Detections``, ``Segmentation``, ...)
- ``predictor``: ``Predictor``
- ``writers``, ``segmentation_writer``, ``files``: the results files
- ``pictures``: drawings of results
- ``export``, ``onnx``: ONNX / ``torch.export`` files and running them
- ``command``: ``vistra predict --ckpt`` and ``vistra export``
"""

from __future__ import annotations

_LAZY = {
    "Predictor": "vistra.inference.predictor",
    "InferenceSpec": "vistra.inference.spec",
    "Thresholds": "vistra.inference.spec",
    "ClassScores": "vistra.inference.results",
    "Detections": "vistra.inference.results",
    "Segmentation": "vistra.inference.results",
}


def __getattr__(name: str):
    # ``from vistra.inference import Predictor`` without importing torch on package import.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vistra.inference' has no attribute {name!r}")


__all__ = list(_LAZY)
