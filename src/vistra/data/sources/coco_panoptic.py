"""COCO panoptic annotations (JSON ``segments_info`` + PNG segment ids).

Samples follow the detection sources' contract with masks instead of boxes:

    image: tv_tensors.Image [3, H, W] uint8
    target: {"masks": Mask [N, H, W] bool, "labels": [N] int64 in 0..C-1, "image_id": int,
             "orig_size": [2] (H, W)}

``COCOPanopticSource``: one mask per segment (things and stuff; crowd segments are left out
of the targets and kept for evaluation, as in the COCO rules). Labels number the categories
in sorted id order; ``thing_labels`` says which are things. PNG colours encode segment ids as
R + 256 G + 256^2 B; 0 is unlabelled.

(Semantic label PNGs: ``vistra.data.sources.semantic``.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from vistra.data.image_files import open_binary
from vistra.data.json_files import read_json as read_json_file
from vistra.data.segment import Segment
from vistra.data.shard_files import image_folder, outside_folder
from vistra.data.sources.base import (
    AnnotatedFiles,
    DataError,
    ImageLoadError,
    load_image_as_annotated,
)


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; errors name the file (and line / column)."""
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def decode_segment_ids(path: Path) -> np.ndarray:
    """A COCO panoptic PNG -> segment ids [H, W] int64 (R + 256 G + 256^2 B)."""
    try:
        with open_binary(path) as handle, Image.open(handle) as png:
            rgb = np.asarray(png.convert("RGB"), dtype=np.int64)
    except FileNotFoundError:
        raise DataError(f"{path}: panoptic PNG not found") from None
    except OSError as error:
        raise ImageLoadError(f"{path}: cannot decode panoptic PNG ({error})") from None
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def _check_segments(where: str, segments, categories: dict) -> None:
    """Each segment an object with an integer ``id`` (once per image), a known
    ``category_id`` and ``iscrowd`` 0 or 1: a segment listed twice would train twice."""
    if not isinstance(segments, list):
        raise DataError(f"{where}.segments_info: not a list")
    seen: set[int] = set()
    for k, segment in enumerate(segments):
        field = f"{where}.segments_info[{k}]"
        if not isinstance(segment, dict):
            raise DataError(f"{field}: not an object")
        segment_id, crowd = segment.get("id"), segment.get("iscrowd", 0)
        if not isinstance(segment_id, int) or isinstance(segment_id, bool) or segment_id <= 0:
            raise DataError(f"{field}.id: must be a positive integer, got {segment_id!r}")
        if segment_id in seen:
            raise DataError(f"{field}.id: segment {segment_id} is listed twice")
        seen.add(segment_id)
        if segment.get("category_id") not in categories:
            raise DataError(f"{field}.category_id: unknown category "
                            f"{segment.get('category_id')!r}")  # fmt: skip
        if crowd not in (0, 1) or isinstance(crowd, (bool, float)):
            raise DataError(f"{field}.iscrowd: must be 0 or 1, got {crowd!r}")


class COCOPanopticSource(AnnotatedFiles, Dataset):
    """A COCO panoptic JSON, its PNG folder and the image folder.

    Args:
        annotations: ``panoptic_val2017.json``-style file.
        images: folder of the images (``file_name`` of the ``images`` entries), or a shard
            folder of them (``vistra data shard``).
        panoptic_pngs: folder (or shard folder) of the segment PNGs; default: the JSON path
            without ``.json``.
    """

    def __init__(
        self, annotations: str | Path, images: str | Path, panoptic_pngs: str | Path | None = None
    ) -> None:
        self.annotation_file, self.image_dir = Path(annotations), image_folder(images)
        self.png_dir = image_folder(panoptic_pngs or self.annotation_file.with_suffix(""))
        for folder, what in ((self.image_dir, "image"), (self.png_dir, "panoptic PNG")):
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: {what} folder not found")
        data = read_json(self.annotation_file)
        origin = self.annotation_file
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise ValueError(f"{origin}: field {key!r} missing or not a list")
        categories = {}
        for index, category in enumerate(data["categories"]):
            if not isinstance(category, dict) or "id" not in category or "name" not in category:
                raise ValueError(f"{origin}: categories[{index}] needs 'id' and 'name'")
            categories[int(category["id"])] = category
        self.category_ids = sorted(categories)
        self.classes = [categories[i]["name"] for i in self.category_ids]
        self.label_of = {category: label for label, category in enumerate(self.category_ids)}
        self.thing_labels = [self.label_of[i] for i in self.category_ids
                             if categories[i].get("isthing", 1)]  # fmt: skip
        self.images = {int(image["id"]): image for image in data["images"]}
        self.entries = {}
        for index, entry in enumerate(data["annotations"]):
            where = f"{origin}: annotations[{index}]"
            if not isinstance(entry, dict) or not {"image_id", "file_name", "segments_info"} <= set(
                entry
            ):
                raise ValueError(f"{where} needs image_id, file_name and segments_info")
            if int(entry["image_id"]) not in self.images:
                raise ValueError(f"{where}.image_id: unknown image id {entry['image_id']}")
            _check_segments(where, entry["segments_info"], categories)
            self.entries[int(entry["image_id"])] = entry
        self.image_ids = sorted(self.entries)
        self.origin = str(origin)
        if not self.image_ids:
            raise ValueError(f"{origin}: no annotated images")
        self._check_files_exist()

    def _check_files_exist(self) -> None:
        """Every image and panoptic PNG on disk before training starts, not at the step that
        first reads it (one line: how many are missing, the first by its JSON field)."""
        missing = []
        for index, image_id in enumerate(self.image_ids):
            entry = self.entries[image_id]
            image_name = str(self.images[image_id]["file_name"])
            for field, name in (("annotations", str(entry["file_name"])), ("images", image_name)):
                if outside_folder(name):
                    raise DataError(f"{self.origin}: {field} (image id {image_id}).file_name "
                                    f"{outside_folder(name)}")  # fmt: skip
            if not (self.png_dir / entry["file_name"]).is_file():
                missing.append(f"annotations (image id {image_id}).file_name: panoptic PNG "
                               f"{self.png_dir / entry['file_name']} not found")  # fmt: skip
            if not self.image_path(index).is_file():
                missing.append(f"images (id {image_id}).file_name: image "
                               f"{self.image_path(index)} not found")  # fmt: skip
        if missing:
            more = f" (and {len(missing) - 1} more missing files)" if len(missing) > 1 else ""
            raise DataError(f"{self.origin}: {missing[0]}{more}")

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.images[self.image_ids[index]]["file_name"]

    def ground_truth(self, index: int) -> tuple[np.ndarray, list[Segment]]:
        """Segment-id map [H, W] and segments (category ids, crowd flags) at the file's size."""
        entry = self.entries[self.image_ids[index]]
        png = self.png_dir / entry["file_name"]
        ids = decode_segment_ids(png)
        segments = [Segment(int(s["id"]), int(s["category_id"]), bool(s.get("iscrowd", 0)))
                    for s in entry["segments_info"]]  # fmt: skip
        present = set(np.unique(ids).tolist())
        stray = present - {s.id for s in segments} - {0}
        if stray:
            raise DataError(
                f"{png}: segment id(s) {sorted(stray)[:5]} are not in {self.origin} "
                f"segments_info of image {entry['image_id']}"
            )
        absent = [s.id for s in segments if s.id not in present]
        if absent:  # an empty mask would teach the model that the object is not there
            raise DataError(
                f"{self.origin}: segments_info of image {entry['image_id']} lists segment "
                f"id(s) {absent[:5]} that {png} does not contain"
            )
        return ids, segments

    def semantic_map(self, index: int, ignore_crowd: bool = False, ignore_index: int = 255):
        """The semantic ground truth [H, W] (labels 0..C-1) built from the panoptic PNG as
        Mask2Former builds it: every segment, crowd included, labelled with its category;
        unlabelled pixels ``ignore_index``. ``ignore_crowd`` leaves crowd pixels out instead."""
        ids, segments = self.ground_truth(index)
        labels = np.full(ids.shape, ignore_index, dtype=np.int64)
        for segment in segments:
            if not (ignore_crowd and segment.iscrowd):
                labels[ids == segment.id] = self.label_of[segment.category]
        return labels

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, dict]:
        image_id = self.image_ids[index]
        path = self.image_path(index)
        ids, segments = self.ground_truth(index)
        pil = load_image_as_annotated(path, (ids.shape[1], ids.shape[0]), "its panoptic PNG")
        kept = [s for s in segments if not s.iscrowd]
        masks = np.stack([ids == s.id for s in kept]) if kept else np.zeros((0, *ids.shape), bool)
        image = tv_tensors.Image(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1))
        target = {
            "masks": tv_tensors.Mask(torch.from_numpy(masks)),
            "labels": torch.tensor([self.label_of[s.category] for s in kept], dtype=torch.int64),
            "image_id": image_id,
            "orig_size": torch.tensor(ids.shape),
        }
        return image, target
