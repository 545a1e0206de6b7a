"""How an image becomes a network input at evaluation and inference: one typed spec.

The data modules' evaluation transform, their batch padding, ``vistra.Predictor`` and
``vistra export`` all take it from a ``Preprocess``, and a checkpoint stores it (``to_dict``),
so an image is prepared the same way in validation, in ``vistra predict`` and in an exported
file. The image is resized by Pillow (bilinear, Pillow's antialiasing when it shrinks) in every
route: ``array`` needs only numpy and Pillow (the ONNX route), ``transform`` hands the PIL image
to torchvision's ``Resize`` before it becomes a tensor, which resizes it with Pillow too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RULES = ("shorter_side", "center_crop")
# The largest resize target: 8192 x 8192 is 800 MB of float32 input already; a file asking for
# 100000 would ask for 120 GB.
MAX_SIDE = 8192


@dataclass(frozen=True)
class Preprocess:
    """Resize rule, normalisation and padding of one image.

    Args:
        resize: "shorter_side" (the shorter side to ``size``, the longer at most ``max_size``:
            detection and segmentation keep the aspect ratio) or "center_crop" (the shorter
            side to ``size``, then the central ``size x size``: classification, embeddings).
        size, max_size: see ``resize`` (``max_size`` only for "shorter_side").
        mean, std: per-channel normalisation of 0..1 pixel values.
        pad_multiple: a padded batch's height and width are rounded up to a multiple of it.
    """

    resize: str
    size: int
    max_size: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pad_multiple: int = 1

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"resize must be one of {RESIZE_RULES}, got {self.resize!r}")
        if self.size < 1 or self.pad_multiple < 1:
            raise ValueError(f"size and pad_multiple must be >= 1, got {self.size}, "
                             f"{self.pad_multiple}")  # fmt: skip
        if max(self.size, self.max_size or 0) > MAX_SIDE:
            raise ValueError(f"size and max_size must be at most {MAX_SIDE} pixels, got "
                             f"{self.size}, {self.max_size}")  # fmt: skip
        if self.max_size is not None and self.max_size < self.size:
            raise ValueError(f"max_size {self.max_size} is smaller than size {self.size}")
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != 3 or not all(np.isfinite(values)):
                raise ValueError(f"{name} needs 3 finite numbers (R, G, B), got {values}")
            object.__setattr__(self, name, values)
        if min(self.std) <= 0:  # a division by it: every pixel infinite or NaN
            raise ValueError(f"std must be positive, got {self.std}")

    @classmethod
    def from_dict(cls, values: dict) -> Preprocess:
        """The spec a checkpoint stores (unknown keys are an error naming them)."""
        known = {"resize", "size", "max_size", "mean", "std", "pad_multiple"}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown preprocessing keys {sorted(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict:
        values = asdict(self)
        return {**values, "mean": list(self.mean), "std": list(self.std)}

    def resized(self, height: int, width: int) -> Preprocess:
        """The same rule made to give a ``height x width`` input from an image of that size
        (an export's example input)."""
        if self.resize == "center_crop":
            return self
        return Preprocess("shorter_side", min(height, width), max(height, width), self.mean,
                          self.std, self.pad_multiple)  # fmt: skip

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) an image of ``height x width`` is resized to (before ``center_crop``'s
        crop): the shorter side to ``size`` and the longer in proportion, rounded down; with
        ``max_size``, when the longer side would pass it, the longer side to ``max_size`` and
        the shorter in proportion, rounded down (torchvision's ``Resize`` rule)."""
        short, long = min(height, width), max(height, width)
        new_short, new_long = self.size, int(self.size * long / short)
        if self.resize == "shorter_side" and self.max_size is not None:
            if self.max_size <= self.size:  # the longer side decides
                new_short, new_long = int(self.max_size * short / long), self.max_size
            elif new_long > self.max_size:
                new_short, new_long = int(self.max_size * new_short / new_long), self.max_size
        return (new_short, new_long) if height <= width else (new_long, new_short)

    def array(self, image: Image.Image) -> np.ndarray:
        """One RGB PIL image -> normalized float32 [3, h, w] (numpy and Pillow only)."""
        height, width = self.output_size(image.height, image.width)
        resized = image.convert("RGB").resize((width, height), Image.BILINEAR)
        if self.resize == "center_crop":
            top = int(round((height - self.size) / 2.0))
            left = int(round((width - self.size) / 2.0))
            resized = resized.crop((left, top, left + self.size, top + self.size))
        # times 1/255, then (x - mean) / std: torchvision's order of float operations, so
        # both routes give the same bits
        pixels = np.asarray(resized, dtype=np.float32) * np.float32(1 / 255)
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))

    def transform(self):
        """A torchvision v2 transform for training data: PIL image (with boxes / masks, which
        follow) -> normalized float [3, h, w], equal to ``array``."""
        import torch
        from torchvision.transforms import v2

        if self.resize == "shorter_side":
            size, max_size = self.size, self.max_size
            if max_size is not None and max_size <= size:  # the longer side decides
                size = None
            steps = [v2.Resize(size, max_size=max_size, antialias=True)]
        else:
            steps = [v2.Resize(self.size, antialias=True), v2.CenterCrop(self.size)]
        return v2.Compose([*steps, v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(list(self.mean), list(self.std))])  # fmt: skip

    def __call__(self, image):
        """One RGB PIL image -> normalized float [3, h, w] (a torch tensor)."""
        import torch

        return torch.from_numpy(self.array(image))

    def padded_size(self, sizes: list[tuple[int, int]]) -> tuple[int, int]:
        """The batch size that holds every (h, w) of ``sizes``, rounded up to ``pad_multiple``."""
        step = self.pad_multiple
        height = -(-max(h for h, _ in sizes) // step) * step
        width = -(-max(w for _, w in sizes) // step) * step
        return height, width


def pad_arrays(
    images: list[np.ndarray], preprocess: Preprocess | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Zero-pad [3, h, w] images at the bottom right to one size (the largest, rounded up to
    ``preprocess.pad_multiple``; or ``size``) -> ``(images [B, 3, H, W] float32, pixel_mask
    [B, H, W] bool, True on the image)``."""
    sizes = [tuple(image.shape[-2:]) for image in images]
    height, width = size or (preprocess or Preprocess("shorter_side", 1)).padded_size(sizes)
    batch = np.zeros((len(images), 3, height, width), dtype=np.float32)
    pixel_mask = np.zeros((len(images), height, width), dtype=bool)
    for index, (h, w) in enumerate(sizes):
        batch[index, :, :h, :w] = images[index]
        pixel_mask[index, :h, :w] = True
    return batch, pixel_mask


def pad_images(images: list, preprocess: Preprocess | None = None) -> tuple:
    """``pad_arrays`` of CPU tensors -> ``(images [B, 3, H, W], pixel_mask [B, H, W] bool)``
    tensors."""
    import torch

    batch, pixel_mask = pad_arrays([image.numpy() for image in images], preprocess)
    return torch.from_numpy(batch), torch.from_numpy(pixel_mask)
