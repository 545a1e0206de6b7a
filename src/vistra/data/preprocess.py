"""How an image becomes a network input at evaluation and inference: one typed spec.

The data modules' evaluation transform, their batch padding, ``vistra.Predictor`` and
``vistra export`` all take it from a ``Preprocess``, and a checkpoint stores it (``to_dict``),
so an image is prepared the same way in validation, in ``vistra predict`` and in an exported
file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RULES = ("shorter_side", "center_crop")


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
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

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

    def transform(self) -> v2.Compose:
        """A torchvision v2 transform: PIL image or uint8 tensor (with boxes / masks, which
        follow) -> normalized float [3, h, w]."""
        if self.resize == "shorter_side":
            size, max_size = self.size, self.max_size
            if max_size is not None and max_size <= size:  # the longer side decides
                size = None
            steps = [v2.Resize(size, max_size=max_size, antialias=True)]
        else:
            steps = [v2.Resize(self.size, antialias=True), v2.CenterCrop(self.size)]
        return v2.Compose([v2.ToImage(), *steps, v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(list(self.mean), list(self.std))])  # fmt: skip

    def __call__(self, image) -> Tensor:
        """One image -> normalized float [3, h, w] (a plain tensor)."""
        return self.transform()(image).as_subclass(Tensor)

    def padded_size(self, sizes: list[tuple[int, int]]) -> tuple[int, int]:
        """The batch size that holds every (h, w) of ``sizes``, rounded up to ``pad_multiple``."""
        step = self.pad_multiple
        height = -(-max(h for h, _ in sizes) // step) * step
        width = -(-max(w for _, w in sizes) // step) * step
        return height, width


def pad_images(images: list[Tensor], preprocess: Preprocess | None = None) -> tuple[Tensor, Tensor]:
    """Zero-pad [3, h, w] images at the bottom right to one size (the largest, rounded up to
    ``preprocess.pad_multiple``) -> ``(images [B, 3, H, W], pixel_mask [B, H, W] bool)``."""
    sizes = [tuple(image.shape[-2:]) for image in images]
    height, width = (preprocess or Preprocess("shorter_side", 1)).padded_size(sizes)
    batch = images[0].new_zeros(len(images), 3, height, width)
    pixel_mask = torch.zeros(len(images), height, width, dtype=torch.bool)
    for index, image in enumerate(images):
        h, w = image.shape[-2:]
        batch[index, :, :h, :w] = image
        pixel_mask[index, :h, :w] = True
    return batch, pixel_mask
