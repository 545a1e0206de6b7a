"""COCO detection data: the shapes writer, the file checker, the loader and the augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from vistra.data import COCODetectionSource, DetectionDataModule
from vistra.data.coco_check import check_coco
from vistra.data.detection import collate_detection, detection_train_transform
from vistra.data.shapes import write_shapes

COCO_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-sample"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict:
    return write_shapes(tmp_path_factory.mktemp("shapes"), train=12, val=4, size=64, seed=3)


def test_shapes_are_deterministic_by_seed(tmp_path, shapes):
    again = write_shapes(tmp_path / "again", train=12, val=4, size=64, seed=3)
    other = write_shapes(tmp_path / "other", train=12, val=4, size=64, seed=4)
    first = Path(shapes["train"]["images"]) / "000005.png"
    assert first.read_bytes() == (Path(again["train"]["images"]) / "000005.png").read_bytes()
    assert first.read_bytes() != (Path(other["train"]["images"]) / "000005.png").read_bytes()
    assert (Path(shapes["train"]["instances"]).read_text()
            == Path(again["train"]["instances"]).read_text())  # fmt: skip


def test_shapes_formats_agree_with_each_other(shapes):
    split = shapes["train"]
    coco = COCO(str(split["instances"]))
    panoptic = json.loads(Path(split["panoptic"]).read_text())
    assert check_coco(split["instances"], split["images"]).ok
    kinds = set()
    for entry in panoptic["annotations"]:
        png = np.asarray(Image.open(Path(split["panoptic_pngs"]) / entry["file_name"]), np.int64)
        ids = png[..., 0] + 256 * png[..., 1] + 65536 * png[..., 2]
        segments = {s["id"]: s for s in entry["segments_info"]}
        assert set(np.unique(ids)) == set(segments)  # every pixel belongs to a listed segment
        for annotation in coco.imgToAnns[entry["image_id"]]:
            kinds.add(type(annotation["segmentation"]).__name__)
            mask = coco.annToMask(annotation).astype(bool)
            matching = [s for s in segments.values() if (ids == s["id"]).sum() == mask.sum()
                        and (ids[mask] == s["id"]).all()]  # fmt: skip
            assert len(matching) == 1 and matching[0]["category_id"] == annotation["category_id"]
        semantic = np.asarray(Image.open(Path(split["semantic_pngs"]) / entry["file_name"]))
        assert semantic.max() < 6
    assert kinds == {"list", "dict"}  # polygons and RLE both occur


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _valid(tmp_path: Path) -> dict:
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [2, 3, 10, 10],
                         "segmentation": [[2, 3, 12, 3, 12, 13]], "area": 50, "iscrowd": 0}],
        "categories": [{"id": 5, "name": "thing"}],
    }  # fmt: skip


def test_coco_sample_crowd_left_out_and_ids_mapped():
    if not COCO_SAMPLE.is_dir():
        pytest.skip("shared coco-sample not present")
    source = COCODetectionSource(COCO_SAMPLE / "instances_from_panoptic.json",
                                 COCO_SAMPLE / "images", with_masks=True)  # fmt: skip
    assert len(source) == 2 and len(source.category_ids) == 133
    assert source.category_ids[-1] == 200 and source.label_of[200] == 132
    objects = [source[i][1] for i in range(len(source))]
    assert sum(len(t["labels"]) for t in objects) == 50 - 3  # the 3 crowd regions are out
    image, target = source[0]
    assert image.shape[-2:] == tuple(target["orig_size"].tolist())
    assert target["masks"].shape[0] == len(target["boxes"])


def test_augmentation_moves_boxes_with_the_pixels():
    image = torch.zeros(3, 60, 80, dtype=torch.uint8)
    image[:, 10:20, 5:25] = 255  # a white box at x 5..25, y 10..20
    from torchvision import tv_tensors

    target = {
        "boxes": tv_tensors.BoundingBoxes([[5, 10, 25, 20]], format="XYXY", canvas_size=(60, 80)),
        "labels": torch.tensor([0]), "image_id": 1, "orig_size": torch.tensor([60, 80]),
    }  # fmt: skip
    transform = detection_train_transform(scales=(30, 45, 90), max_size=200, crop=None)
    for seed in range(8):
        torch.manual_seed(seed)
        out_image, out_target = transform(image, target)
        images, _, targets = collate_detection([(out_image, out_target)])
        h, w = out_image.shape[-2:]
        cx, cy, bw, bh = (targets[0]["boxes"][0] * torch.tensor([w, h, w, h])).tolist()
        bright = images[0, 0] > 0  # normalized white > 0, black < 0
        ys, xs = torch.nonzero(bright, as_tuple=True)
        assert (
            abs((xs.min() + xs.max() + 1) / 2 - cx) <= 1.5
            and abs(xs.max() + 1 - xs.min() - bw) <= 2
        )
        assert (
            abs((ys.min() + ys.max() + 1) / 2 - cy) <= 1.5
            and abs(ys.max() + 1 - ys.min() - bh) <= 2
        )


def test_datamodule_batches_follow_the_contract(shapes):
    train, val = shapes["train"], shapes["val"]
    data = DetectionDataModule(str(train["instances"]), str(train["images"]),
                               str(val["instances"]), str(val["images"]), batch_size=3,
                               scales=(48, 64), max_size=96, crop=(32, 48), crop_scales=(64,),
                               eval_size=64, eval_max_size=96)  # fmt: skip
    images, pixel_mask, targets = next(iter(data.train_dataloader()))
    assert images.shape[0] == 3 and pixel_mask.dtype == torch.bool
    for index, target in enumerate(targets):
        h, w = target["size"].tolist()
        assert pixel_mask[index, :h, :w].all() and pixel_mask[index].sum() == h * w
        boxes = target["boxes"]
        assert ((boxes >= 0) & (boxes <= 1)).all() and (boxes[:, 2:] > 0).all()
    images, pixel_mask, targets = next(iter(data.val_dataloader()))
    assert images.shape[-2:] == (64, 64) and pixel_mask.all()
