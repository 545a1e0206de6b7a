"""COCO instance annotations (JSON + image folder) through pycocotools.

Samples are ``(image, target)`` with ``torchvision.tv_tensors`` so that v2 transforms move
boxes and masks with the pixels:

    image: tv_tensors.Image [3, H, W] uint8
    target: {"boxes": BoundingBoxes [N, 4] XYXY pixels, "labels": [N] int64 in 0..C-1,
             "masks": Mask [N, H, W] (only with ``with_masks``), "image_id": int,
             "orig_size": [2] (H, W)}

Crowd objects (``iscrowd: 1``) are left out of the targets (the evaluator still sees them in
the annotation file); images without objects are kept: they teach "no object". Category ids
of the file map to contiguous labels in sorted id order (``category_ids[label]``).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from vistra.data.coco_check import check_coco
from vistra.data.shard_files import image_folder
from vistra.data.sources.base import AnnotatedFiles, load_image_as_annotated, readable


class COCODetectionSource(AnnotatedFiles, Dataset):
    """A COCO instance file with its image folder.

    Args:
        annotations: the instance JSON (``instances_val2017.json``-style).
        images: the folder the JSON's ``file_name`` entries are relative to, or a shard
            folder of those files (``vistra data shard``).
        with_masks: also decode instance masks (polygons or RLE) for segmentation.
        skip_bad_images: drop images that do not decode, with one warning and a count,
            instead of failing on the first.
    """

    def __init__(
        self,
        annotations: str | Path,
        images: str | Path,
        with_masks: bool = False,
        skip_bad_images: bool = False,
    ) -> None:
        from pycocotools.coco import COCO

        self.annotation_file, self.image_dir = Path(annotations), image_folder(images)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"{self.image_dir}: image folder not found")
        check_coco(self.annotation_file, self.image_dir).raise_if_bad()
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco = COCO(str(self.annotation_file))
        self.category_ids = sorted(self.coco.getCatIds())
        self.classes = [self.coco.cats[i]["name"] for i in self.category_ids]
        self.label_of = {category: label for label, category in enumerate(self.category_ids)}
        self.image_ids = sorted(self.coco.getImgIds())
        self.with_masks = with_masks
        self.origin = str(self.annotation_file)
        if skip_bad_images:
            self._drop_unreadable()
        if not self.image_ids:
            raise ValueError(f"{self.annotation_file}: no images")

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.coco.imgs[self.image_ids[index]]["file_name"]

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, dict]:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        path = self.image_path(index)
        where = f"{self.annotation_file} (images[id={image_id}])"
        pil = load_image_as_annotated(path, (info["width"], info["height"]), where)
        image = tv_tensors.Image(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1))
        objects = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        height, width = info["height"], info["width"]
        boxes = torch.tensor([a["bbox"] for a in objects], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": torch.tensor(
                [self.label_of[a["category_id"]] for a in objects], dtype=torch.int64
            ),  # fmt: skip
            "image_id": image_id,
            "orig_size": torch.tensor([height, width]),
        }
        if self.with_masks:
            masks = [self.coco.annToMask(a) for a in objects]
            stacked = np.stack(masks) if masks else np.zeros((0, height, width), np.uint8)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(stacked).bool())
        return image, target

    def _drop_unreadable(self) -> None:
        bad = []
        for index in range(len(self.image_ids)):
            reason = readable(self.image_path(index))
            if reason is not None:
                bad.append((index, reason))
        if not bad:
            return
        first, reason = bad[0]
        warnings.warn(
            f"{self.origin}: skipped {len(bad)} unreadable image(s) of {len(self.image_ids)} "
            f"(first: {self.image_path(first)}: {reason})",
            stacklevel=3,
        )
        dropped = {i for i, _ in bad}
        self.image_ids = [x for i, x in enumerate(self.image_ids) if i not in dropped]
