"""Running a file written by ``vistra export --format onnx`` with onnxruntime alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vistra.inference.spec import InferenceSpec

METADATA_KEY = "vistra"


def onnx_session(path: str | Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class OnnxNetwork:
    """An onnxruntime session with ``InferenceNetwork``'s call: ``(images, pixel_mask)`` ->
    tuple of output tensors (inputs the graph does not take are left out)."""

    def __init__(self, session, kind: str) -> None:
        self.session, self.kind = session, kind
        self.inputs = [i.name for i in session.get_inputs()]

    def __call__(self, images: Tensor, pixel_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        given = {"images": images, "pixel_mask": pixel_mask}
        feed = {name: given[name].cpu().numpy() for name in self.inputs}
        return tuple(torch.from_numpy(np.asarray(o)) for o in self.session.run(None, feed))

    def forward_features(self, images: Tensor) -> Tensor:
        if self.kind != "embedding":
            raise ValueError(f"this ONNX file gives {self.kind} outputs, not features")
        return self(images)[0]


def load_onnx(path: str | Path) -> tuple[OnnxNetwork, InferenceSpec]:
    """The session of an exported file and the inference spec stored in its metadata (the file
    is read once). A linear probe's head is inside the graph: a classifier's graph returns
    logits."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX file not found")
    session = onnx_session(path)
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ValueError(f"{path}: not exported by vistra (no '{METADATA_KEY}' metadata)")
    spec = InferenceSpec.from_dict(json.loads(props[METADATA_KEY]))
    return OnnxNetwork(session, spec.kind), spec
