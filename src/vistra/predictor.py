"""``vistra.Predictor``: inference for every vistra checkpoint, without the training stack.

The checkpoint alone says what to build (network class and arguments), how to prepare an
image (resize rule, size, normalisation) and what the outputs mean (category names and ids,
which classes are things). Inputs may be paths, PIL images, HxWx3 uint8 arrays, 3xHxW tensors
(uint8, or float in 0..1) or lists of them; results are typed per task and given at the
original image size (segmentation maps of images over ``MAX_MAP_PIXELS``: at a reduced size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from vistra.checkpoint import (
    NETWORK_KEY,
    PREPROCESS_KEY,
    network_from_checkpoint,
    read_checkpoint,
)
from vistra.data.sources.base import as_rgb, load_image

KIND_OF_NETWORK = {
    "DETR": "detection",
    "Mask2Former": "segmentation",
    "SupConModel": "embedding",
    "MaskedAutoencoder": "embedding",
    "ViTClassifier": "classification",
}
DEFAULT_PREPROCESS = {
    "detection": {"resize": "shorter_side", "size": 800, "max_size": 1333},
    "segmentation": {"resize": "shorter_side", "size": 800, "max_size": 1333},
}
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# Segmentation upsamples every query's mask logits (and every class's score) to the output
# size: memory grows with its pixel count. Larger images are reduced to this many pixels
# before anything else (2048 x 2048: full size for Cityscapes and camera photos up to 4 MP).
MAX_MAP_PIXELS = 2048 * 2048


@dataclass
class ClassScores:
    """Class probabilities of one image: ``scores`` [C], the best ``label`` and its ``name``."""

    scores: Tensor
    label: int
    name: str


@dataclass
class Detections:
    """One image's detections: ``boxes`` [K, 4] xyxy in original pixels, ``scores``,
    ``labels`` (0..C-1), ``names`` and the dataset's ``category_ids``."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    names: list[str]
    category_ids: list[int]


@dataclass
class Segmentation:
    """One image's segmentation at its original size (reduced to ``MAX_MAP_PIXELS`` when
    larger; ``semantic.shape`` gives the size): ``semantic`` [H, W] labels,
    ``panoptic`` [H, W] segment ids (0 = none) with ``segments`` (id, label, name, category_id,
    isthing, score, area), and ``instances`` (``scores``, ``labels``, ``masks`` [K, H, W])."""

    semantic: Tensor
    panoptic: Tensor | None = None
    segments: list[dict] = field(default_factory=list)
    instances: dict | None = None


class InputError(ValueError):
    """An input that cannot be read as an image (the message names it)."""


def to_pil(item, where: str = "input") -> Image.Image:
    """A path, PIL image, HxWx3 array or 3xHxW tensor -> an RGB PIL image."""
    if isinstance(item, (str, Path)):
        return load_image(item)
    if isinstance(item, Image.Image):
        return as_rgb(item)
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3:
            raise InputError(f"{where}: expected an H x W x 3 array, got shape {item.shape}")
        return Image.fromarray(item.astype(np.uint8))
    if isinstance(item, Tensor):
        if item.ndim != 3 or item.shape[0] != 3:
            raise InputError(f"{where}: expected a 3 x H x W tensor, got {tuple(item.shape)}")
        array = item.detach().cpu()
        if array.is_floating_point():
            array = (array.clamp(0, 1) * 255).round()
        return Image.fromarray(array.to(torch.uint8).permute(1, 2, 0).numpy())
    raise InputError(f"{where}: cannot read a {type(item).__name__} as an image")


def prepare(image: Image.Image, spec: dict) -> Tensor:
    """Resize and normalise like the data module's evaluation transform: [3, h, w] float."""
    from torchvision.transforms import v2

    if spec["resize"] == "shorter_side":
        size, max_size = spec["size"], spec.get("max_size")
        if max_size is not None and max_size <= size:  # the longer side decides: fit in a square
            size = None
        steps = [v2.Resize(size, max_size=max_size, antialias=True)]
    else:
        steps = [v2.Resize(spec["size"], antialias=True), v2.CenterCrop(spec["size"])]
    transform = v2.Compose([v2.PILToTensor(), *steps, v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(spec["mean"], spec["std"])])  # fmt: skip
    return transform(image)


def within_pixels(image: Image.Image, limit: int) -> Image.Image:
    """``image`` reduced (aspect kept, antialiased) to at most ``limit`` pixels; as it is when
    it already fits."""
    if image.width * image.height <= limit:
        return image
    scale = (limit / (image.width * image.height)) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)


def pad_batch(tensors: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Zero-pad [3, h, w] images to the largest -> (images [B, 3, H, W], pixel_mask [B, H, W])."""
    height = max(t.shape[-2] for t in tensors)
    width = max(t.shape[-1] for t in tensors)
    images = tensors[0].new_zeros(len(tensors), 3, height, width)
    pixel_mask = torch.zeros(len(tensors), height, width, dtype=torch.bool)
    for index, tensor in enumerate(tensors):
        images[index, :, : tensor.shape[-2], : tensor.shape[-1]] = tensor
        pixel_mask[index, : tensor.shape[-2], : tensor.shape[-1]] = True
    return images, pixel_mask


class Predictor:
    """Run a trained vistra model on images.

    Build it with ``Predictor.from_checkpoint(path)`` (or ``from_onnx``); call it on one input
    (returns one result) or a list (returns a list). ``embed`` gives encoder features.

    Args:
        network: the model (or an ``OnnxNetwork``), in eval mode.
        kind: "classification", "embedding", "detection" or "segmentation".
        preprocess: the resize / normalisation spec (see ``vistra.checkpoint.preprocess_spec``).
        names, category_ids, thing_labels: what labels mean.
        head: for a linear-probe checkpoint, the classifier on the encoder's features.
        device, precision: where to run; precision "bf16" / "fp16" uses autocast.
    """

    def __init__(
        self,
        network,
        kind: str,
        preprocess: dict,
        names: list[str] | None = None,
        category_ids: list[int] | None = None,
        thing_labels: list[int] | None = None,
        head: nn.Module | None = None,
        device: str | torch.device = "cpu",
        precision: str | None = None,
    ) -> None:
        if kind not in ("classification", "embedding", "detection", "segmentation"):
            raise ValueError(f"unknown predictor kind {kind!r}")
        if precision not in (None, "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
        self.device = torch.device(device)
        self.network = network.to(self.device).eval() if isinstance(network, nn.Module) else network
        self.head = head.to(self.device).eval() if head is not None else None
        self.kind, self.preprocess = kind, {**IMAGENET, **preprocess}
        self.names, self.category_ids = names, category_ids
        self.thing_labels = thing_labels
        self.precision = None if precision == "fp32" else precision

    # -- construction ---------------------------------------------------------------------------

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
        checkpoint = read_checkpoint(path, unsafe_load)
        spec = checkpoint[NETWORK_KEY]
        network = network_from_checkpoint(checkpoint, origin=path)
        state = checkpoint["state_dict"]
        kind = KIND_OF_NETWORK.get(spec["class_path"].rsplit(".", 1)[-1])
        if kind is None:
            raise ValueError(f"{path}: no predictor for {spec['class_path']}")
        head = _probe_head(state)
        if head is not None:
            kind = "classification"
        preprocess = checkpoint.get(PREPROCESS_KEY) or DEFAULT_PREPROCESS.get(kind)
        if preprocess is None:
            size = spec["init_args"].get("image_size")
            if size is None:
                raise ValueError(f"{path}: the checkpoint does not say the input size")
            preprocess = {"resize": "center_crop", "size": int(size)}
        categories = checkpoint.get("vistra_categories") or {}
        names = categories.get("names")
        if names is None and kind == "classification":
            classes = (checkpoint.get("hyper_parameters") or {}).get("num_classes")
            names = [str(i) for i in range(classes)] if classes else None
        return cls(network, kind, preprocess, names, categories.get("ids"),
                   categories.get("thing_labels"), head, device, precision)  # fmt: skip

    @staticmethod
    def from_onnx(path: str | Path) -> Predictor:
        """Run a file written by ``vistra export --format onnx`` with onnxruntime."""
        from vistra.export import predictor_from_onnx

        return predictor_from_onnx(path)

    # -- inference ------------------------------------------------------------------------------

    def __call__(self, inputs, batch_size: int = 8, progress: bool = False):
        """Results for one input or a list (``ClassScores`` / ``Tensor`` embeddings /
        ``Detections`` / ``Segmentation``)."""
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        results = []
        for start in _batches(len(items), batch_size, progress):
            chunk = items[start : start + batch_size]
            results += self._run([to_pil(x, _name(x, start + k)) for k, x in enumerate(chunk)])
        return results[0] if single else results

    def embed(self, inputs, batch_size: int = 8) -> Tensor:
        """Encoder features [N, D] (MAE: no masking, deterministic; detection / segmentation:
        not available)."""
        if self.kind not in ("classification", "embedding"):
            raise ValueError(f"embed() is for classification / embedding models, not {self.kind}")
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        features = []
        for start in range(0, len(items), batch_size):
            pictures = [to_pil(x, _name(x, start + k))
                        for k, x in enumerate(items[start : start + batch_size])]  # fmt: skip
            images = torch.stack([prepare(p, self.preprocess) for p in pictures])
            features.append(self._features(images).float().cpu())
        return torch.cat(features)

    @torch.no_grad()
    def _features(self, images: Tensor) -> Tensor:
        with self._autocast():
            return self.network.forward_features(images.to(self.device))

    def _autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype or torch.bfloat16,
                              enabled=dtype is not None)  # fmt: skip

    @torch.no_grad()
    def _run(self, pictures: list[Image.Image]) -> list:
        if self.kind == "segmentation":  # maps are made at the picture's size: bound it
            pictures = [within_pixels(p, MAX_MAP_PIXELS) for p in pictures]
        sizes = [(p.height, p.width) for p in pictures]
        tensors = [prepare(p, self.preprocess) for p in pictures]
        if self.kind == "embedding":
            return list(self._features(torch.stack(tensors)).float().cpu())
        if self.kind == "classification":
            if self.head is not None:
                logits = self.head(self._features(torch.stack(tensors)).float())
            else:
                with self._autocast():
                    logits = self.network(torch.stack(tensors).to(self.device))
            probabilities = logits.float().softmax(-1).cpu()
            names = self.names or [str(i) for i in range(probabilities.shape[1])]
            return [ClassScores(p, int(p.argmax()), names[int(p.argmax())]) for p in probabilities]
        images, pixel_mask = pad_batch(tensors)
        with self._autocast():
            outputs = self.network(images.to(self.device), pixel_mask.to(self.device))
        outputs = {k: v.float().cpu() for k, v in outputs.items() if isinstance(v, Tensor)}
        if self.kind == "detection":
            return self._detections(outputs, sizes)
        return self._segmentations(outputs, tensors, images.shape[-2:], sizes)

    def _detections(self, outputs: dict, sizes: list[tuple[int, int]]) -> list[Detections]:
        from vistra.models.detr import detr_postprocess

        results = []
        for detection in detr_postprocess(outputs, torch.tensor(sizes)):
            labels = detection["labels"]
            results.append(Detections(
                detection["boxes"], detection["scores"], labels,
                [self._name(int(i)) for i in labels], [self._category(int(i)) for i in labels],
            ))  # fmt: skip
        return results

    def _segmentations(self, outputs, tensors, padded, sizes) -> list[Segmentation]:
        from vistra.models.mask2former.postprocess import (
            instance_inference,
            panoptic_inference,
            resize_mask_logits,
            semantic_inference,
        )

        things = set(self.thing_labels or [])
        num_classes = outputs["pred_logits"].shape[-1] - 1
        results = []
        for index, (tensor, size) in enumerate(zip(tensors, sizes)):
            logits = outputs["pred_logits"][index]
            masks = resize_mask_logits(outputs["pred_masks"][index], tuple(padded),
                                       tuple(tensor.shape[-2:]), size)  # fmt: skip
            result = Segmentation(semantic_inference(logits, masks).argmax(0))
            if things:
                result.instances = instance_inference(logits, masks, 100, sorted(things))
            if things and len(things) < num_classes:
                ids, segments = panoptic_inference(logits, masks, things)
                for segment in segments:
                    segment["name"] = self._name(segment["label"])
                    segment["category_id"] = self._category(segment["label"])
                result.panoptic, result.segments = ids, segments
            results.append(result)
        return results

    def _name(self, label: int) -> str:
        return self.names[label] if self.names and label < len(self.names) else str(label)

    def _category(self, label: int) -> int:
        return self.category_ids[label] if self.category_ids else label


def _probe_head(state: dict) -> nn.Module | None:
    """The linear-probe head (``head.0`` BatchNorm without affine, ``head.1`` Linear) if the
    checkpoint has one."""
    if "head.1.weight" not in state:
        return None
    classes, width = state["head.1.weight"].shape
    norm = nn.BatchNorm1d(width, affine=False) if "head.0.running_mean" in state else nn.Identity()
    head = nn.Sequential(norm, nn.Linear(width, classes))
    head.load_state_dict({k[len("head.") :]: v for k, v in state.items() if k.startswith("head.")})
    return head


def _name(item, index: int) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"input {index}"


def _batches(count: int, batch_size: int, progress: bool):
    starts = range(0, count, max(batch_size, 1))
    if not progress:
        return starts
    from tqdm import tqdm

    return tqdm(starts, total=len(starts), unit="batch", desc="predict")
