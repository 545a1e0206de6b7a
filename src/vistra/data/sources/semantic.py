"""Semantic label PNGs: an image folder and a folder of label PNGs with the same stems.

Samples follow the panoptic source's contract: one mask per class present (labels 0..C-1);
``ignore_index`` (255) pixels belong to no mask. ``reduce_zero_label`` (ADE20K) turns 0 into the
ignore index and shifts the other labels down by one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from vistra.data.image_files import IMAGE_SUFFIXES
from vistra.data.sources.base import AnnotatedFiles, DataError, load_image_as_annotated


class SemanticSource(AnnotatedFiles, Dataset):
    """Images with label PNGs of the same stem (ADE20K, Cityscapes-style trainIds, shapes).

    Args:
        images: image folder; labels: label PNG folder (class index per pixel).
        classes: class names (index = label); ignore_index: unlabelled value (255).
        reduce_zero_label: label 0 means "other" (ADE20K): make it ignored, shift the rest.
    """

    def __init__(
        self,
        images: str | Path,
        labels: str | Path,
        classes: list[str],
        ignore_index: int = 255,
        reduce_zero_label: bool = False,
    ) -> None:
        self.image_dir, self.label_dir = Path(images), Path(labels)
        for folder in (self.image_dir, self.label_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: folder not found")
        self.classes, self.ignore_index = list(classes), ignore_index
        self.reduce_zero_label = reduce_zero_label
        self.paths = sorted(p for p in self.image_dir.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES)  # fmt: skip
        missing = [p.name for p in self.paths if not (self.label_dir / f"{p.stem}.png").is_file()]
        if missing:
            raise FileNotFoundError(f"{self.label_dir}: no label PNG for {len(missing)} image(s), "
                                    f"e.g. {missing[0]}")  # fmt: skip
        if not self.paths:
            raise ValueError(f"{self.image_dir}: no images")
        self.origin = str(self.label_dir)
        self.thing_labels: list[int] = []

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def image_path(self, index: int) -> Path:
        return self.paths[index]

    def label_map(self, index: int) -> np.ndarray:
        """Class index per pixel [H, W] int64 (after ``reduce_zero_label``)."""
        path = self.label_dir / f"{self.paths[index].stem}.png"
        with Image.open(path) as png:
            labels = np.asarray(png, dtype=np.int64)
        if labels.ndim != 2:
            raise DataError(f"{path}: label PNG must have one channel, got shape {labels.shape}")
        if self.reduce_zero_label:
            labels = np.where(labels == 0, 256, labels) - 1
            labels[labels == 255] = self.ignore_index
        valid = labels[labels != self.ignore_index]
        if valid.size and valid.max() >= len(self.classes):
            raise DataError(f"{path}: label {int(valid.max())} but only {len(self.classes)} "
                             f"classes (ignore index {self.ignore_index})")  # fmt: skip
        return labels

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, dict]:
        labels = self.label_map(index)
        pil = load_image_as_annotated(self.paths[index], (labels.shape[1], labels.shape[0]),
                                      "its label PNG")  # fmt: skip
        present = [c for c in np.unique(labels).tolist() if c != self.ignore_index]
        masks = np.stack([labels == c for c in present]) if present else np.zeros(
            (0, *labels.shape), bool)  # fmt: skip
        image = tv_tensors.Image(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1))
        target = {
            "masks": tv_tensors.Mask(torch.from_numpy(masks)),
            "labels": torch.tensor(present, dtype=torch.int64),
            "image_id": index,
            "orig_size": torch.tensor(labels.shape),
        }
        return image, target
