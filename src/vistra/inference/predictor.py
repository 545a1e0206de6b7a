"""``vistra.Predictor``: inference for every vistra checkpoint, without the training stack.

The checkpoint alone says what to build (network class and arguments), how to prepare an
image and what the outputs mean (its ``InferenceSpec``). Inputs may be paths, PIL images,
HxWx3 uint8 arrays, 3xHxW tensors (uint8, or float in 0..1) or lists of them; results are typed
per family and given at the original image size (segmentation maps of images over
``MAX_MAP_PIXELS``: at a reduced size). The ONNX route (``from_onnx``) imports no torch: images
are prepared with numpy and Pillow, outputs decoded by ``vistra.inference.decode``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from vistra.data.preprocess import pad_arrays
from vistra.inference.images import InputError, map_size, to_pil
from vistra.inference.spec import KIND_OF_NETWORK, InferenceSpec

if TYPE_CHECKING:
    from torch import Tensor, nn


class Predictor:
    """Run a trained vistra model on images.

    Build it with ``Predictor.from_checkpoint(path)`` (or ``from_onnx``); call it on one input
    (returns one result) or a list (returns a list). ``embed`` gives encoder features.

    Args:
        network: the model (a torch module), or an ``OnnxNetwork``.
        spec: kind, preprocessing, label meanings and thresholds.
        head: for a linear-probe checkpoint, the classifier on the encoder's features.
        device, precision: where to run; precision "bf16" / "fp16" uses autocast.
    """

    def __init__(
        self,
        network,
        spec: InferenceSpec,
        head: nn.Module | None = None,
        device: str = "cpu",
        precision: str | None = None,
    ) -> None:
        if precision not in (None, "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
        self.spec, self.onnx = spec, hasattr(network, "session")
        self.device = device
        if not self.onnx:
            from vistra.inference.network import InferenceNetwork

            self.device = usable_device(device)
            network = network.to(self.device).eval()
            head = head.to(self.device).eval() if head is not None else None
            self.forward = InferenceNetwork(spec.kind, network, head).eval()
        else:
            self.forward = network
        self.network, self.head = network, head
        self.precision = None if precision == "fp32" else precision

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def preprocess(self):
        return self.spec.preprocess

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        source: str | Path,
        device: str = "cpu",
        precision: str | None = None,
        unsafe_load: bool | None = None,
    ) -> Predictor:
        """Whichever ``source`` is: an ``.onnx`` file (``from_onnx``), a Hugging Face model id
        or ``save_pretrained`` folder (``from_pretrained``), or a vistra checkpoint."""
        from vistra.convert.hub import is_pretrained

        if str(source).endswith(".pt2"):
            raise ValueError(f"{source}: an exported program (.pt2) is for torch.export.load in "
                             "your own code; vistra runs the .ckpt or an .onnx export")  # fmt: skip
        if str(source).endswith(".onnx"):
            return cls.from_onnx(source)
        if is_pretrained(source):
            return cls.from_pretrained(source, device, precision)
        return cls.from_checkpoint(source, device, precision, unsafe_load)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "cpu",
        precision: str | None = None,
        unsafe_load: bool | None = None,
    ) -> Predictor:
        """``unsafe_load``: read a checkpoint that holds more than tensors and plain data (only
        for files you trust; default: refuse them, see ``vistra.convert.safe``)."""
        from vistra.inference.checkpoint import (
            NETWORK_KEY,
            network_from_checkpoint,
            read_checkpoint,
        )
        from vistra.inference.network import probe_head

        checkpoint = read_checkpoint(path, unsafe_load)
        class_path = checkpoint[NETWORK_KEY]["class_path"]
        network = network_from_checkpoint(checkpoint, origin=path)
        kind = KIND_OF_NETWORK.get(class_path.rsplit(".", 1)[-1])
        if kind is None:
            raise ValueError(f"{path}: no predictor for {class_path}")
        head = probe_head(checkpoint["state_dict"])
        if head is not None:
            kind = "classification"
        spec = InferenceSpec.read(checkpoint, kind, str(path))
        return cls(network, spec, head, device, precision)

    @classmethod
    def from_pretrained(
        cls, name: str | Path, device: str = "cpu", precision: str | None = None
    ) -> Predictor:
        """A Hugging Face DETR, Mask2Former or ViTMAE by model id (``facebook/detr-resnet-50``,
        from the local Hugging Face cache only) or ``save_pretrained`` folder; category names
        from its ``id2label``. Mask2Former: the file does not say which classes are things, so
        every class gives instances, and the semantic map; no panoptic merging."""
        from vistra.convert.pretrained import pretrained
        from vistra.data.preprocess import Preprocess

        network, kind, names, preprocess = pretrained(name)
        things = list(range(len(names or []))) if kind == "segmentation" else None
        spec = InferenceSpec(kind, Preprocess.from_dict(preprocess), names, None, things)
        return cls(network, spec, None, device, precision)

    @classmethod
    def from_onnx(cls, path: str | Path) -> Predictor:
        """Run a file written by ``vistra export --format onnx`` with onnxruntime (no torch
        needed: results hold numpy arrays)."""
        from vistra.inference.onnx import load_onnx

        session, spec = load_onnx(path)
        return cls(session, spec)

    # -- inference ------------------------------------------------------------------------------

    def __call__(self, inputs, batch_size: int = 8, progress: bool = False):
        """Results for one input or a list (``ClassScores`` / ``Tensor`` embeddings /
        ``Detections`` / ``Segmentation``)."""
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        results = []
        for start in _batches(len(items), batch_size, progress):
            chunk = items[start : start + batch_size]
            results += self.run([to_pil(x, _name(x, start + k)) for k, x in enumerate(chunk)])
        return results[0] if single else results

    def embed(self, inputs, batch_size: int = 8) -> Tensor:
        """Encoder features [N, D] (MAE: no masking, deterministic; detection / segmentation:
        not available)."""
        if self.kind not in ("classification", "embedding") or not hasattr(
            self.network, "forward_features"
        ):
            raise ValueError(f"embed() is for classification / embedding models, not {self.kind}")
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        features = []
        for start in range(0, len(items), batch_size):
            pictures = [to_pil(x, _name(x, start + k))
                        for k, x in enumerate(items[start : start + batch_size])]  # fmt: skip
            images, _ = pad_arrays([self.preprocess.array(p) for p in pictures])
            features.append(self._features(images))
        if self.onnx:
            import numpy as np

            return np.concatenate(features)
        import torch

        return torch.cat(features)

    def _features(self, images):
        if self.onnx:
            return self.network.forward_features(images)
        import torch

        with torch.no_grad(), self._autocast():
            images = torch.from_numpy(images).to(self.device)
            return self.network.forward_features(images).float().cpu()

    def _autocast(self):
        import torch

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype or torch.bfloat16,
                              enabled=dtype is not None)  # fmt: skip

    def run(self, pictures: list[Image.Image]) -> list:
        """Results of one batch of RGB PIL images."""
        arrays = [self.preprocess.array(p) for p in pictures]
        input_sizes = [tuple(a.shape[-2:]) for a in arrays]
        output_sizes = [(p.height, p.width) for p in pictures]
        if self.kind == "segmentation":  # maps are made at the output size: bound it
            output_sizes = [map_size(*size) for size in output_sizes]
        if self.onnx:
            return self._run_onnx(arrays, input_sizes, output_sizes)
        import torch

        from vistra.inference.network import named_outputs
        from vistra.inference.postprocess import to_results

        images, pixel_mask = pad_arrays(arrays, self.preprocess)
        with torch.no_grad(), self._autocast():
            raw = self.forward(torch.from_numpy(images).to(self.device),
                               torch.from_numpy(pixel_mask).to(self.device))  # fmt: skip
        return to_results(named_outputs(self.kind, raw), self.spec, tuple(images.shape[-2:]),
                          input_sizes, output_sizes)  # fmt: skip

    def _run_onnx(self, arrays, input_sizes, output_sizes) -> list:
        """An ONNX file with a fixed input size takes images padded to it (one that does not
        fit is refused); with a fixed batch, one call per image."""
        from vistra.inference.decode import decode
        from vistra.inference.spec import OUTPUT_NAMES

        size = self.network.fixed_size
        for rows, cols in input_sizes:
            if size and (rows > size[0] or cols > size[1]):
                raise InputError(f"an image prepared to {rows}x{cols} does not fit this ONNX "
                                 f"file's fixed input {size[0]}x{size[1]} (export it without "
                                 "--static for any size)")  # fmt: skip
        step = self.network.fixed_batch or len(arrays)
        results = []
        for start in range(0, len(arrays), step):
            images, pixel_mask = pad_arrays(arrays[start : start + step], self.preprocess, size)
            raw = dict(zip(OUTPUT_NAMES[self.kind], self.network(images, pixel_mask)))
            results += decode(raw, self.spec, images.shape[-2:], input_sizes[start : start + step],
                              output_sizes[start : start + step])  # fmt: skip
        return results


def usable_device(name: str):
    """``torch.device(name)`` if this machine has it (``ValueError`` in one line otherwise)."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}: not a device name (cpu, cuda, cuda:1, mps)") from None
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if device.type in available and not available[device.type]():
        raise ValueError(f"device {name!r}: this machine has no usable {device.type.upper()} "
                         "device (use --device cpu)")  # fmt: skip
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")  # fmt: skip
    return device


def _name(item, index: int) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"input {index}"


def _batches(count: int, batch_size: int, progress: bool):
    starts = range(0, count, max(batch_size, 1))
    if not progress:
        return starts
    from tqdm import tqdm

    return tqdm(starts, total=len(starts), unit="batch", desc="predict")
