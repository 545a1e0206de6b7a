"""Detection data: DETR augmentation, padded batches and the LightningDataModule.

Batches follow the shared contract: ``images`` [B, 3, H, W] normalized and zero-padded to the
batch maximum, ``pixel_mask`` [B, H, W] bool (True = real pixel), and per image a target dict
``{"labels": [N], "boxes": [N, 4] cxcywh normalized by the image's own (unpadded) size,
"image_id", "orig_size": [2], "size": [2], "masks": [N, h, w] when present}``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.ops import box_convert
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from vistra.data.datamodules import TransformedSource
from vistra.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, pad_images
from vistra.data.sampling import (
    ResumableDataLoader,
    SeededAugmentation,
    evaluation_sampler,
    training_sampler,
)
from vistra.data.sources.coco import COCODetectionSource

PAPER_SCALES = tuple(range(480, 801, 32))


class RandomSizeCrop(v2.Transform):
    """Crop a random ``h x w`` region with each side drawn from [min_size, max_size] (DETR)."""

    def __init__(self, min_size: int, max_size: int) -> None:
        super().__init__()
        if not 0 < min_size <= max_size:
            raise ValueError(f"need 0 < min_size <= max_size, got {min_size}, {max_size}")
        self.min_size, self.max_size = min_size, max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        crop_h = int(torch.randint(min(self.min_size, height), min(self.max_size, height) + 1, ()))
        crop_w = int(torch.randint(min(self.min_size, width), min(self.max_size, width) + 1, ()))
        top = int(torch.randint(0, height - crop_h + 1, ()))
        left = int(torch.randint(0, width - crop_w + 1, ()))
        return dict(top=top, left=left, height=crop_h, width=crop_w)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(TF.crop, inpt, **params)


def _normalize() -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def detection_train_transform(
    scales: tuple[int, ...] = PAPER_SCALES,
    max_size: int = 1333,
    crop: tuple[int, int] | None = (384, 600),
    crop_scales: tuple[int, ...] = (400, 500, 600),
) -> v2.Compose:
    """The DETR recipe: flip; then either multi-scale resize (shorter side from ``scales``,
    longer at most ``max_size``) or resize to ``crop_scales`` -> random crop -> multi-scale
    resize, each with probability 1/2. Boxes follow; boxes left degenerate are dropped."""
    resize = v2.RandomShortestSize(list(scales), max_size=max_size, antialias=True)
    choice = resize
    if crop is not None:
        cropped = v2.Compose(
            [
                v2.RandomShortestSize(list(crop_scales), antialias=True),
                RandomSizeCrop(*crop),
                v2.RandomShortestSize(list(scales), max_size=max_size, antialias=True),
            ]
        )
        choice = v2.RandomChoice([resize, cropped])
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            choice,
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(),
            *_normalize(),
        ]  # fmt: skip
    )


def collate_detection(
    batch: list[tuple[Tensor, dict]], preprocess: Preprocess | None = None
) -> tuple[Tensor, Tensor, list[dict]]:
    """Pad images to the batch maximum (``preprocess.pad_multiple``); boxes -> normalized
    cxcywh of each image's own size.

    Returns ``(images [B, 3, H, W], pixel_mask [B, H, W] bool, targets)``.
    """
    images, pixel_mask = pad_images([image.as_subclass(Tensor) for image, _ in batch], preprocess)
    targets = []
    for image, target in batch:
        h, w = image.shape[-2:]
        boxes = box_convert(target["boxes"].as_subclass(Tensor).float(), "xyxy", "cxcywh")
        boxes = boxes / torch.tensor([w, h, w, h], dtype=torch.float32)
        out = {
            "labels": target["labels"],
            "boxes": boxes,
            "image_id": target["image_id"],
            "orig_size": target["orig_size"],
            "size": torch.tensor([h, w]),
        }
        if "masks" in target:
            out["masks"] = target["masks"].as_subclass(Tensor)
        targets.append(out)
    return images, pixel_mask, targets


class PaddedBatchLoaders:
    """Loaders of a detection / segmentation data module: seeded augmentation and resumable
    order for training, a fixed transform for evaluation, padded batches (``collate``).

    Subclasses set ``collate``, ``train_source`` / ``val_source`` and define
    ``train_transform()``; ``hparams`` holds ``batch_size``, ``num_workers``, ``seed``,
    ``eval_size`` and ``eval_max_size``.
    """

    collate = staticmethod(collate_detection)

    @property
    def classes_origin(self) -> str:
        """The annotation file the categories come from (for messages)."""
        return str(self.train_source.origin)

    @property
    def preprocess(self) -> Preprocess:
        """The evaluation (and inference) input: shorter side to ``eval_size``, the longer at
        most ``eval_max_size``."""
        return Preprocess("shorter_side", self.hparams.eval_size, self.hparams.eval_max_size)

    def _options(self) -> dict:
        hp = self.hparams
        pin = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return dict(batch_size=hp.batch_size, num_workers=hp.num_workers,
                    persistent_workers=hp.num_workers > 0, pin_memory=pin,
                    collate_fn=partial(self.collate, preprocess=self.preprocess))  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        dataset = SeededAugmentation(self.train_source, self.train_transform(), hp.seed,
                                     with_target=True)  # fmt: skip
        sampler = training_sampler(len(dataset), hp.seed, self.trainer)
        return ResumableDataLoader(dataset, sampler=sampler, drop_last=False, **self._options())

    def eval_loader(self, source) -> DataLoader:
        dataset = TransformedSource(source, self.preprocess.transform(), with_target=True)
        sampler = evaluation_sampler(dataset, self.trainer)
        return DataLoader(dataset, shuffle=False, sampler=sampler, **self._options())

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.val_source is None else self.eval_loader(self.val_source)

    def test_dataloader(self) -> DataLoader | list:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader | list:
        return self.val_dataloader()


class DetectionDataModule(PaddedBatchLoaders, L.LightningDataModule):
    """COCO-format detection data for DETR.

    Args:
        train_annotations, train_images: training COCO file and its image folder.
        val_annotations, val_images: validation file and folder (also used for test/predict).
        batch_size: images per device (paper: 4 per GPU, 64 in total).
        num_workers: loader processes.
        scales, max_size, crop, crop_scales: the training augmentation (see
            ``detection_train_transform``); the paper's are the defaults.
        eval_size, eval_max_size: evaluation resize (paper: 800 / 1333).
        with_masks: also load instance masks (segmentation).
        skip_bad_images: skip undecodable images with a warning instead of failing.
        seed: epoch order and augmentation seed.
    """

    def __init__(
        self,
        train_annotations: str,
        train_images: str,
        val_annotations: str | None = None,
        val_images: str | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        scales: tuple[int, ...] = PAPER_SCALES,
        max_size: int = 1333,
        crop: tuple[int, int] | None = (384, 600),
        crop_scales: tuple[int, ...] = (400, 500, 600),
        eval_size: int = 800,
        eval_max_size: int = 1333,
        with_masks: bool = False,
        skip_bad_images: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        self.train_source = COCODetectionSource(
            train_annotations, train_images, with_masks, skip_bad_images
        )
        self.val_source = None
        if val_annotations is not None:
            if val_images is None:
                raise ValueError("val_annotations given without val_images")
            self.val_source = COCODetectionSource(
                val_annotations, val_images, with_masks, skip_bad_images
            )
            if self.val_source.category_ids != self.train_source.category_ids:
                raise ValueError(
                    f"{val_annotations}: categories {self.val_source.category_ids} differ from "
                    f"{train_annotations}: {self.train_source.category_ids}"
                )

    @property
    def classes(self) -> list[str]:
        return self.train_source.classes

    @property
    def category_ids(self) -> list[int]:
        return self.train_source.category_ids

    def train_transform(self):
        hp = self.hparams
        return detection_train_transform(hp.scales, hp.max_size, hp.crop, hp.crop_scales)
