"""What every image source shares: (image, label) samples, class names, readable errors."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

UNLABELLED = -1


class ImageLoadError(RuntimeError):
    """An image file that is missing, unreadable or corrupt; the message names the file."""


def load_image(path: str | Path) -> Image.Image:
    """Open ``path`` as an RGB PIL image, raising ``ImageLoadError`` naming the file."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as error:
        raise ImageLoadError(f"{path}: image file not found") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"{path}: cannot read image ({error})") from error


def readable(path: str | Path) -> str | None:
    """``None`` when ``path`` decodes as an image, else the reason it does not."""
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # noqa: BLE001 - any decoder failure means "unreadable"
        return str(error) or type(error).__name__
    return None


class ImageSource(Dataset):
    """A map-style dataset of ``(PIL RGB image, int label)``; label is -1 when unlabelled.

    Subclasses fill ``self.items`` (file paths or HxWx3 uint8 arrays) and ``self.labels`` and
    set ``self.classes`` (class names, index = label) and ``self.origin`` (for messages).
    """

    items: Sequence
    labels: list[int]
    classes: list[str]
    origin: str

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        item = self.items[index]
        image = Image.fromarray(item) if isinstance(item, np.ndarray) else load_image(item)
        return image, self.labels[index]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _check_not_empty(self) -> None:
        if len(self.items) == 0:
            raise ValueError(f"{self.origin}: no images found")

    def _drop_unreadable(self) -> None:
        """Drop files that do not decode, with one warning that counts them."""
        bad = [(i, reason) for i, p in enumerate(self.items) if (reason := readable(p)) is not None]
        if not bad:
            return
        first_index, first_reason = bad[0]
        warnings.warn(
            f"{self.origin}: skipped {len(bad)} unreadable image(s) of {len(self.items)} "
            f"(first: {self.items[first_index]}: {first_reason})",
            stacklevel=3,
        )
        keep = sorted(set(range(len(self.items))) - {i for i, _ in bad})
        self.items = [self.items[i] for i in keep]
        self.labels = [self.labels[i] for i in keep]
