"""Segmentation data for Mask2Former: large-scale jitter, padded batches, the DataModule.

Batches: ``images`` [B, 3, H, W] normalized and zero-padded to the batch maximum,
``pixel_mask`` [B, H, W] bool, and per image ``{"labels": [N], "masks": [N, H, W] bool padded
to the batch size (so 0..1 coordinates mean the same place in prediction and target),
"image_id", "orig_size": [2], "size": [2] (the image's own size in the batch)}``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torchvision.transforms import v2

from vistra.data.coco_check import check_coco
from vistra.data.detection import PaddedBatchLoaders, _normalize
from vistra.data.preprocess import Preprocess, pad_images
from vistra.data.sources.coco import COCODetectionSource
from vistra.data.sources.coco_panoptic import COCOPanopticSource
from vistra.data.sources.semantic import SemanticSource


class DropEmptyMasks(v2.Transform):
    """Remove masks (and their labels) that a crop left without a pixel."""

    def forward(self, *inputs):
        image, target = inputs if len(inputs) > 1 else inputs[0]
        keep = target["masks"].flatten(1).any(1)
        target = {**target, "masks": target["masks"][keep], "labels": target["labels"][keep]}
        return image, target


def segmentation_train_transform(
    size: int = 1024, scale_range: tuple[float, float] = (0.1, 2.0)
) -> v2.Compose:
    """Large-scale jitter (Mask2Former's COCO recipe): flip, resize the image so that it fits
    ``size x size`` times a factor drawn from ``scale_range``, crop / pad to ``size x size``;
    masks follow and those left empty are dropped."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.ScaleJitter((size, size), scale_range=tuple(scale_range), antialias=True),
            v2.RandomCrop(size, pad_if_needed=True),
            DropEmptyMasks(),
            *_normalize(),
        ]
    )


def collate_segmentation(
    batch: list[tuple[Tensor, dict]], preprocess: Preprocess | None = None
) -> tuple[Tensor, Tensor, list[dict]]:
    """Pad images and masks to the batch maximum -> ``(images, pixel_mask, targets)``."""
    images, pixel_mask = pad_images([image.as_subclass(Tensor) for image, _ in batch], preprocess)
    height, width = images.shape[-2:]
    targets = []
    for image, target in batch:
        h, w = image.shape[-2:]
        source_masks = target["masks"].as_subclass(Tensor)
        masks = torch.zeros(len(source_masks), height, width, dtype=torch.bool)
        masks[:, :h, :w] = source_masks
        targets.append({
            "labels": target["labels"], "masks": masks, "image_id": target["image_id"],
            "orig_size": target["orig_size"], "size": torch.tensor([h, w]),
        })  # fmt: skip
    return images, pixel_mask, targets


class SegmentationDataModule(PaddedBatchLoaders, L.LightningDataModule):
    """COCO panoptic (default), COCO instance or semantic-PNG data for Mask2Former.

    Args:
        train_annotations: panoptic JSON, instance JSON (``format="instances"``: polygons or
            RLE, crowd left out, every class a thing) or the label PNG folder
            (``format="semantic"``).
        train_images: image folder.
        val_annotations, val_images: the same for validation (also test / predict).
        format: ``"panoptic"``, ``"instances"`` or ``"semantic"``.
        train_pngs, val_pngs: panoptic PNG folders (default: the JSON path without ``.json``).
        val_instances: COCO instance JSON of the validation images, for mask / box AP (with
            ``format="instances"`` the validation file itself is used).
        classes, classes_file, ignore_index, reduce_zero_label: semantic format only: the class
            names (a list, or a text file with one name per line) are required.
        batch_size, num_workers, seed: loading.
        size, scale_range: large-scale jitter (paper, COCO: 1024, 0.1-2.0).
        eval_size, eval_max_size: evaluation resize (paper, COCO: 800 / 1333).
    """

    collate = staticmethod(collate_segmentation)

    def __init__(
        self,
        train_annotations: str,
        train_images: str,
        val_annotations: str | None = None,
        val_images: str | None = None,
        format: str = "panoptic",
        train_pngs: str | None = None,
        val_pngs: str | None = None,
        val_instances: str | None = None,
        classes: list[str] | None = None,
        classes_file: str | None = None,
        ignore_index: int = 255,
        reduce_zero_label: bool = False,
        batch_size: int = 2,
        num_workers: int = 0,
        size: int = 1024,
        scale_range: tuple[float, float] = (0.1, 2.0),
        eval_size: int = 800,
        eval_max_size: int = 1333,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if format not in ("panoptic", "semantic", "instances"):
            raise ValueError(
                f"format must be 'panoptic', 'semantic' or 'instances', got {format!r}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if classes_file is not None:
            if not Path(classes_file).is_file():
                raise FileNotFoundError(f"{classes_file}: classes_file not found")
            classes = [line.strip() for line in Path(classes_file).read_text().splitlines()
                       if line.strip()]  # fmt: skip
        if format == "semantic" and not classes:
            raise ValueError("format='semantic' needs the class names (classes or classes_file)")
        if format == "instances":  # the validation file itself holds the instances
            val_instances = val_annotations
        elif val_instances is not None:
            # Checked now: the file is first read after the whole validation pass, by
            # pycocotools, which trusts its masks (an overrunning RLE never ends).
            if not Path(val_instances).is_file():
                raise FileNotFoundError(f"{val_instances}: val_instances file not found")
            check_coco(val_instances).raise_if_bad()
        self.save_hyperparameters()
        self.hparams.classes = classes
        self.hparams.val_instances = val_instances
        self.train_source = self._source(train_annotations, train_images, train_pngs)
        self.val_source = None
        if val_annotations is not None:
            if val_images is None:
                raise ValueError("val_annotations given without val_images")
            self.val_source = self._source(val_annotations, val_images, val_pngs)
            if self.val_source.classes != self.train_source.classes:
                raise ValueError(f"{val_annotations}: categories differ from {train_annotations}")

    def _source(self, annotations: str, images: str, pngs: str | None):
        hp = self.hparams
        if hp.format == "panoptic":
            return COCOPanopticSource(annotations, images, pngs)
        if hp.format == "instances":
            source = COCODetectionSource(annotations, images, with_masks=True)
            source.thing_labels = list(range(source.num_classes))  # instance data: all things
            return source
        return SemanticSource(images, annotations, hp.classes, hp.ignore_index,
                              hp.reduce_zero_label)  # fmt: skip

    @property
    def classes(self) -> list[str]:
        return self.train_source.classes

    @property
    def thing_labels(self) -> list[int]:
        return self.train_source.thing_labels

    @property
    def category_ids(self) -> list[int]:
        return getattr(self.train_source, "category_ids", list(range(len(self.classes))))

    def train_transform(self):
        return segmentation_train_transform(self.hparams.size, self.hparams.scale_range)
