"""``vistra export``: ONNX or ``torch.export`` programs of every family, checked after writing.

The exported graph takes a normalized image batch (and, for detection, its ``pixel_mask``) and
returns raw outputs: class logits (classification), features (embeddings), ``pred_logits`` +
``pred_boxes`` (DETR) or ``pred_logits`` + ``pred_masks`` (Mask2Former); the same pre- and
post-processing as ``vistra.Predictor`` turns them into results (``Predictor.from_onnx``; the
README's "The ONNX file" writes both down). Batch and image size are dynamic unless a fixed
size is asked for; the weights are inside the one ``.onnx`` file (beside it in
``<name>.onnx.data`` only above the exporter's 1.5 GB margin under protobuf's 2 GB limit).
Right after writing, the file is run (onnxruntime, or the loaded program) on a real image and
compared with the PyTorch model; the export fails above the tolerance.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from vistra.data.preprocess import pad_images
from vistra.inference.images import to_pil
from vistra.inference.network import InferenceNetwork
from vistra.inference.onnx import METADATA_KEY, OnnxNetwork, onnx_session
from vistra.inference.predictor import Predictor
from vistra.inference.spec import OUTPUT_NAMES, InferenceSpec


@dataclass
class ExportReport:
    path: Path | None
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
    preprocess = predictor.preprocess
    if height and width:
        picture = picture.resize((width, height))
        preprocess = preprocess.resized(height, width)
    images, pixel_mask = pad_images([preprocess(picture)] * batch, preprocess)
    if predictor.kind == "detection":
        return images, pixel_mask
    return (images,)


SUFFIXES = {"onnx": ".onnx", "exported-program": ".pt2"}


def export(
    predictor: Predictor,
    output: str | Path,
    image,
    format: str = "onnx",
    height: int | None = None,
    width: int | None = None,
    dynamic: bool = True,
    check_sizes: list[tuple[int, int]] | None = None,
    tolerance: float = 1e-4,
) -> ExportReport:
    """Write ``predictor``'s model to ``output`` and check it on ``image``.

    Args:
        format: "onnx" or "exported-program" (``torch.export``, saved with ``torch.export.save``).
        height, width: the example input size (default: the predictor's own resize of ``image``).
        dynamic: dynamic batch and image size (default); ``False``: batch 1 at the example
            size, and the file's preprocessing made to fit it (``Preprocess.resized``).
        check_sizes: extra (height, width) to compare at (dynamic exports), besides the example.
        tolerance: largest allowed relative difference (max |a - b| / max |b|).

    Raises:
        ValueError when the exported file disagrees with the PyTorch model.
    """
    if format not in ("onnx", "exported-program"):
        raise ValueError(f"format must be 'onnx' or 'exported-program', got {format!r}")
    if predictor.precision is not None:
        raise ValueError("export from a float32 predictor (precision=None)")
    if not (tolerance > 0 and math.isfinite(tolerance)):  # NaN would let every export pass
        raise ValueError(f"tolerance must be a positive number, got {tolerance}")
    output = Path(output)
    suffix = SUFFIXES[format]
    if output.suffix != suffix:
        raise ValueError(f"{output}: an {format} file is named *{suffix} (vistra predict and "
                         "the loaders tell files apart by their suffix)")  # fmt: skip
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{output}: cannot create its folder ({error.strerror})") from None
    module = InferenceNetwork(predictor.kind, predictor.network, predictor.head).eval()
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
    metadata = json.dumps(file_spec(predictor.spec, inputs[0], dynamic).to_dict())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if format == "onnx":
            program = torch.onnx.export(
                module, inputs, None, input_names=names, dynamo=True, verbose=False,
                output_names=list(OUTPUT_NAMES[predictor.kind]), dynamic_shapes=shapes,
            )  # fmt: skip
            program.model.metadata_props[METADATA_KEY] = metadata
            save_onnx(program, output)
        else:
            program = torch.export.export(module, inputs, dynamic_shapes=shapes)
            torch.export.save(program, str(output), extra_files={f"{METADATA_KEY}.json": metadata})
    sizes = [tuple(inputs[0].shape[-2:])] + list(check_sizes or [])
    report = compare(module, load_exported(output), predictor, image, inputs, sizes)
    report.path = output
    if report.max_rel > tolerance:
        raise ValueError(f"{report}: above the tolerance {tolerance:g}")
    return report


def compare(module, runner, predictor, image, inputs, sizes) -> ExportReport:
    """The largest absolute and relative differences between ``module`` (PyTorch) and
    ``runner`` (the exported file) on ``inputs`` and on ``image`` at each further size."""
    worst_abs, worst_rel = 0.0, 0.0
    for size in sizes:
        checked = inputs if size == sizes[0] else example_inputs(predictor, image, *size, batch=1)
        with torch.no_grad():
            expected = module(*checked)
        for a, b in zip(runner(*checked), expected):
            difference = (torch.as_tensor(a).float() - b.float()).abs().max().item()
            worst_abs = max(worst_abs, difference)
            worst_rel = max(worst_rel, difference / max(b.abs().max().item(), 1e-12))
    return ExportReport(None, worst_abs, worst_rel, sizes)


def file_spec(spec: InferenceSpec, images, dynamic: bool) -> InferenceSpec:
    """The spec an exported file stores: the predictor's, or for a fixed-size file of
    detection / segmentation, its resize rule made to give that size."""
    if dynamic or spec.kind not in ("detection", "segmentation"):
        return spec
    height, width = images.shape[-2:]
    return replace(spec, preprocess=spec.preprocess.resized(int(height), int(width)))


def save_onnx(program, output: Path) -> None:
    """One ``.onnx`` file with every weight inside. Above 1.5 GB of weights (torch's exporter
    keeps that margin under protobuf's 2 GB limit) they go to ``<name>.onnx.data`` beside it,
    where onnxruntime reads them, and the run says so. A stale ``.data`` file of an earlier
    export is removed."""
    data = output.with_name(output.name + ".data")
    data.unlink(missing_ok=True)
    program.save(str(output))
    if data.exists():
        print(f"{output}: too large for one ONNX file (protobuf's 2 GB limit), the weights are "
              f"in {data.name} beside it (ship both files)")  # fmt: skip


def load_exported(path: str | Path):
    """A callable running an exported file on tensors -> tuple of tensors."""
    path = Path(path)
    if path.suffix == ".onnx":
        return OnnxNetwork(onnx_session(path), "exported")
    program = torch.export.load(str(path)).module()

    def run(*tensors):
        with torch.no_grad():
            out = program(*tensors)
        return out if isinstance(out, tuple) else (out,)

    return run
