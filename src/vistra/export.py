"""``vistra export``: ONNX or ``torch.export`` programs of every family, checked after writing.

The exported graph takes a normalized image batch (and, for detection, its ``pixel_mask``) and
returns raw outputs: class logits (classification), features (embeddings), ``pred_logits`` +
``pred_boxes`` (DETR) or ``pred_logits`` + ``pred_masks`` (Mask2Former); the same pre- and
post-processing as ``vistra.Predictor`` turns them into results (``Predictor.from_onnx``).
Right after writing, the file is run (onnxruntime, or the loaded program) on a real image and
compared with the PyTorch model; the export fails above the tolerance.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vistra.predictor import Predictor, pad_batch, prepare, to_pil

OUTPUT_NAMES = {
    "classification": ["logits"],
    "embedding": ["features"],
    "detection": ["pred_logits", "pred_boxes"],
    "segmentation": ["pred_logits", "pred_masks"],
}


class ExportedForward(nn.Module):
    """Tensor in, tensors out: the part of a predictor's model that goes into the file."""

    def __init__(self, predictor: Predictor) -> None:
        super().__init__()
        self.kind, self.network, self.head = predictor.kind, predictor.network, predictor.head

    def forward(self, images: Tensor, pixel_mask: Tensor | None = None):
        if self.kind == "embedding":
            return self.network.forward_features(images)
        if self.kind == "classification":
            if self.head is not None:
                return self.head(self.network.forward_features(images))
            return self.network(images)
        if self.kind == "detection":
            outputs = self.network(images, pixel_mask)
            return outputs["pred_logits"], outputs["pred_boxes"]
        outputs = self.network(images)
        return outputs["pred_logits"], outputs["pred_masks"]


@dataclass
class ExportReport:
    path: Path
    max_abs: float
    max_rel: float
    sizes: list[tuple[int, int]]

    def __str__(self) -> str:
        sizes = ", ".join(f"{h}x{w}" for h, w in self.sizes)
        return (f"{self.path}: checked at {sizes}; max |difference| {self.max_abs:.2e}, "
                f"relative {self.max_rel:.2e}")  # fmt: skip


def example_inputs(
    predictor: Predictor, image, height: int | None, width: int | None, batch: int = 1
):
    """A real image prepared like the predictor does (resized to ``height x width`` if given),
    repeated ``batch`` times (a dynamic export traces with 2: a batch of 1 would be fixed)."""
    picture = to_pil(image)
    if height and width:
        picture = picture.resize((width, height))
    spec = dict(predictor.preprocess)
    if height and width and spec["resize"] == "shorter_side":
        spec = {**spec, "size": min(height, width), "max_size": max(height, width)}
    tensor = prepare(picture, spec)
    images, pixel_mask = pad_batch([tensor] * batch)
    if predictor.kind == "detection":
        return images, pixel_mask
    return (images,)


def export(
    predictor: Predictor,
    output: str | Path,
    image,
    format: str = "onnx",
    height: int | None = None,
    width: int | None = None,
    dynamic: bool = False,
    check_sizes: list[tuple[int, int]] | None = None,
    tolerance: float = 1e-4,
) -> ExportReport:
    """Write ``predictor``'s model to ``output`` and check it on ``image``.

    Args:
        format: "onnx" or "exported-program" (``torch.export``, saved with ``torch.export.save``).
        height, width: the example input size (default: the predictor's own resize of ``image``).
        dynamic: dynamic batch and image size (where the model allows).
        check_sizes: extra (height, width) to compare at (dynamic exports), besides the example.
        tolerance: largest allowed relative difference (max |a - b| / max |b|).

    Raises:
        ValueError when the exported file disagrees with the PyTorch model.
    """
    if format not in ("onnx", "exported-program"):
        raise ValueError(f"format must be 'onnx' or 'exported-program', got {format!r}")
    if predictor.precision is not None:
        raise ValueError("export from a float32 predictor (precision=None)")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    module = ExportedForward(predictor).eval()
    inputs = example_inputs(predictor, image, height, width, batch=2 if dynamic else 1)
    names = ["images", "pixel_mask"][: len(inputs)]
    shapes = None
    if dynamic:
        batch, rows, cols = (
            torch.export.Dim("batch", max=256),
            torch.export.Dim.AUTO,
            torch.export.Dim.AUTO,
        )
        shapes = {"images": {0: batch, 2: rows, 3: cols}}
        if len(inputs) == 2:
            shapes["pixel_mask"] = {0: batch, 1: rows, 2: cols}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if format == "onnx":
            torch.onnx.export(module, inputs, str(output), input_names=names,
                              output_names=OUTPUT_NAMES[predictor.kind],
                              dynamic_shapes=shapes, dynamo=True, verbose=False)  # fmt: skip
            _write_metadata(output, predictor)
        else:
            program = torch.export.export(module, inputs, dynamic_shapes=shapes)
            torch.export.save(program, str(output), extra_files={"vistra.json": json.dumps(
                metadata(predictor))})  # fmt: skip
    sizes = [tuple(inputs[0].shape[-2:])] + list(check_sizes or [])
    worst_abs, worst_rel = 0.0, 0.0
    runner = load_exported(output)
    for size in sizes:
        checked = inputs if size == sizes[0] else example_inputs(predictor, image, *size, batch=1)
        with torch.no_grad():
            expected = module(*checked)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = runner(*checked)
        for a, b in zip(got, expected):
            difference = (torch.as_tensor(a).float() - b.float()).abs().max().item()
            worst_abs = max(worst_abs, difference)
            worst_rel = max(worst_rel, difference / max(b.abs().max().item(), 1e-12))
    report = ExportReport(output, worst_abs, worst_rel, sizes)
    if worst_rel > tolerance:
        raise ValueError(f"{report}: above the tolerance {tolerance:g}")
    return report


def metadata(predictor: Predictor) -> dict:
    return {
        "kind": predictor.kind,
        "preprocess": predictor.preprocess,
        "names": predictor.names,
        "category_ids": predictor.category_ids,
        "thing_labels": predictor.thing_labels,
    }


def _write_metadata(path: Path, predictor: Predictor) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    entry = model.metadata_props.add()
    entry.key, entry.value = "vistra", json.dumps(metadata(predictor))
    onnx.save(model, str(path))


def load_exported(path: str | Path):
    """A callable running an exported file on tensors -> tuple of tensors."""
    path = Path(path)
    if path.suffix == ".onnx":
        return _session_runner(_onnx_session(path))
    program = torch.export.load(str(path)).module()

    def run(*tensors):
        with torch.no_grad():
            out = program(*tensors)
        return out if isinstance(out, tuple) else (out,)

    return run


def _onnx_session(path: Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _session_runner(session):
    inputs = [i.name for i in session.get_inputs()]

    def run(*tensors):
        feed = {name: t.numpy() for name, t in zip(inputs, tensors)}
        return tuple(torch.from_numpy(np.asarray(o)) for o in session.run(None, feed))

    return run


class OnnxNetwork:
    """An onnxruntime session behind the interface ``Predictor`` uses (``forward_features`` /
    call)."""

    def __init__(self, session, kind: str) -> None:
        self.run, self.kind = _session_runner(session), kind

    def forward_features(self, images: Tensor) -> Tensor:
        return self.run(images)[0]

    def __call__(self, images: Tensor, pixel_mask: Tensor | None = None):
        if self.kind == "classification":
            return self.run(images)[0]
        outputs = self.run(images, pixel_mask) if self.kind == "detection" else self.run(images)
        second = "pred_boxes" if self.kind == "detection" else "pred_masks"
        return {"pred_logits": outputs[0], second: outputs[1]}


def predictor_from_onnx(path: str | Path) -> Predictor:
    """A ``Predictor`` running an exported ``.onnx`` file with onnxruntime alone (the file is
    read once; its ``vistra`` metadata says how to prepare images and read the outputs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX file not found")
    session = _onnx_session(path)
    props = session.get_modelmeta().custom_metadata_map
    if "vistra" not in props:
        raise ValueError(f"{path}: not exported by vistra (no 'vistra' metadata)")
    meta = json.loads(props["vistra"])
    kind = meta["kind"]
    network = OnnxNetwork(session, kind)
    # A linear probe's head is inside the graph: a classifier's graph returns logits.
    return Predictor(network, kind, meta["preprocess"], meta["names"], meta["category_ids"],
                     meta["thing_labels"])  # fmt: skip
