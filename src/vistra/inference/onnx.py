"""Running a file written by ``vistra export --format onnx`` with onnxruntime, numpy and Pillow
alone (no torch): the session, and the vistra metadata checked against the graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vistra.inference.spec import OUTPUT_NAMES, InferenceSpec

METADATA_KEY = "vistra"


def onnx_session(path: str | Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # the file's own problems are reported in one line below
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxNetwork:
    """An onnxruntime session with ``InferenceNetwork``'s call on arrays: ``(images [B, 3, H,
    W], pixel_mask [B, H, W])`` -> tuple of output arrays (inputs the graph does not take are
    left out). ``fixed_batch`` / ``fixed_size``: the graph's batch and (H, W) when they are
    fixed numbers (an export with ``--static``), else ``None``."""

    def __init__(self, session, kind: str) -> None:
        self.session, self.kind = session, kind
        self.inputs = [i.name for i in session.get_inputs()]
        shape = session.get_inputs()[0].shape
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        fixed = len(shape) == 4 and all(isinstance(d, int) for d in shape[2:])
        self.fixed_size = (shape[2], shape[3]) if fixed else None

    def __call__(self, images, pixel_mask=None) -> tuple[np.ndarray, ...]:
        given = {"images": images, "pixel_mask": pixel_mask}
        feed = {name: np.asarray(given[name]) for name in self.inputs}
        return tuple(self.session.run(None, feed))

    def forward_features(self, images) -> np.ndarray:
        if self.kind != "embedding":
            raise ValueError(f"this ONNX file gives {self.kind} outputs, not features")
        return self(images)[0]


def load_onnx(path: str | Path) -> tuple[OnnxNetwork, InferenceSpec]:
    """The session of an exported file and the inference spec stored in its metadata, checked
    against the graph (its inputs and outputs are the ones of the kind the metadata names).
    A linear probe's head is inside the graph: a classifier's graph returns logits."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX file not found")
    try:
        session = onnx_session(path)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types, many lines
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a usable ONNX file ({reason[:300]})") from None
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ValueError(f"{path}: not exported by vistra (no '{METADATA_KEY}' metadata)")
    try:
        spec = InferenceSpec.from_dict(json.loads(props[METADATA_KEY]))
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ValueError(f"{path}: unusable '{METADATA_KEY}' metadata ({error})") from None
    outputs = tuple(o.name for o in session.get_outputs())
    inputs = {i.name for i in session.get_inputs()}
    wanted = {"images", "pixel_mask"} if spec.kind == "detection" else {"images"}
    if outputs != OUTPUT_NAMES[spec.kind] or not wanted <= inputs <= {"images", "pixel_mask"}:
        raise ValueError(f"{path}: its metadata says {spec.kind} but the graph takes "
                         f"{sorted(inputs)} and gives {list(outputs)} (a {spec.kind} graph gives "
                         f"{list(OUTPUT_NAMES[spec.kind])})")  # fmt: skip
    return OnnxNetwork(session, spec.kind), spec
