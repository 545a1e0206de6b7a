"""What every image source shares: (image, label) samples, class names, readable errors."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from vistra.data.image_files import DataError, ImageLoadError, as_rgb, load_image, open_binary  # noqa: F401

UNLABELLED = -1


def load_image_as_annotated(path: Path, size: tuple[int, int], where: str) -> Image.Image:
    """``load_image`` for an image whose annotation file gives its ``size`` (width, height).

    Upright by its EXIF orientation, unless the annotations were made on the pixels as stored
    (the stored size matches, the turned one does not): then as stored, with a warning, since
    boxes and masks were drawn on those pixels. Any other size mismatch is an error naming
    both sizes (and the orientation, when there is one)."""
    image = load_image(path)
    if image.size == tuple(size):
        return image
    stored = load_image(path, upright=False)
    if stored.size == tuple(size):
        message = (f"{path}: its EXIF orientation turns it, but {where} gives the size of the "
                   "pixels as stored: used as stored, like its annotations")  # fmt: skip
        warnings.warn(message, stacklevel=2)
        return stored
    turned = f" after its EXIF orientation ({stored.size[0]} x {stored.size[1]} as stored)" if (
        stored.size != image.size) else ""  # fmt: skip
    raise ImageLoadError(f"{path}: image is {image.size[0]} x {image.size[1]}{turned} but {where} "
                         f"says {size[0]} x {size[1]}")  # fmt: skip


def readable(path: str | Path) -> str | None:
    """``None`` when ``path`` decodes as an image, else the reason it does not."""
    try:
        with open_binary(path) as handle, Image.open(handle) as image:
            image.load()
    except Exception as error:  # noqa: BLE001 - any decoder failure means "unreadable"
        return str(error) or type(error).__name__
    return None


class AnnotatedFiles:
    """Mixin for sources of image files under ``image_dir`` with an annotation file: what a
    prediction run names each image by (``image_path(index)`` is the subclass's)."""

    def item_name(self, index: int) -> Path:
        """The image's path relative to the image folder (the annotation's file name)."""
        return Path(self.image_path(index)).relative_to(self.image_dir)

    def item_id(self, index: int) -> int:
        """The annotation file's image id (the position, for files without ids)."""
        ids = getattr(self, "image_ids", None)
        return int(ids[index]) if ids is not None else index

    def picture(self, index: int) -> Image.Image:
        """The image as a person sees it (for drawing results on)."""
        return load_image(self.image_path(index))


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

    def item_name(self, index: int) -> Path:
        """What a prediction run names the image by: its path relative to the source's folder
        (its file name when elsewhere; ``000123.png`` for in-memory images)."""
        item = self.items[index]
        if isinstance(item, np.ndarray):
            return Path(f"{index:06d}.png")
        path, folder = Path(item), Path(self.origin)
        return path.relative_to(folder) if path.is_relative_to(folder) else Path(path.name)

    def item_id(self, index: int) -> int:
        """Images without ids are numbered from 1 in source order."""
        return index + 1

    def picture(self, index: int) -> Image.Image:
        return self[index][0]

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
