"""Augmentation pipelines built from ``torchvision.transforms.v2``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import v2

from vistra.data.preprocess import IMAGENET_MEAN, IMAGENET_STD


def to_normalized_tensor(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def contrastive_transform(
    size: int,
    scale: tuple[float, float] = (0.2, 1.0),
    horizontal_flip: bool = True,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
) -> v2.Compose:
    """The SimCLR / SupCon view: random resized crop, flip, colour jitter p=0.8, grey p=0.2."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=scale, antialias=True),
            v2.RandomHorizontalFlip() if horizontal_flip else v2.Identity(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            *to_normalized_tensor(mean, std),
        ]
    )


def classification_train_transform(
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    horizontal_flip: bool = True,
    rand_augment: bool = False,
    random_erasing: float = 0.0,
) -> v2.Compose:
    """Random resized crop and flip (linear probe); fine-tuning adds RandAugment (2 ops,
    magnitude 9) and random erasing with probability ``random_erasing`` (MAE: 0.25)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=scale, antialias=True),
            v2.RandomHorizontalFlip() if horizontal_flip else v2.Identity(),
            v2.RandAugment(num_ops=2, magnitude=9) if rand_augment else v2.Identity(),
            *to_normalized_tensor(),
            v2.RandomErasing(p=random_erasing) if random_erasing > 0 else v2.Identity(),
        ]
    )


class MultiView:
    """Apply ``transform`` ``views`` times to one image: PIL -> [V, 3, H, W]."""

    def __init__(self, transform: Callable, views: int = 2) -> None:
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        self.transform = transform
        self.views = views

    def __call__(self, image) -> torch.Tensor:
        return torch.stack([self.transform(image) for _ in range(self.views)])
