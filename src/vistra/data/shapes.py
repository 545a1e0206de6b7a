"""The built-in **shapes** set: synthetic scenes written in the real COCO formats.

Every image has two or three background regions ("stuff": sky, grass, sand) separated by
slanted boundaries and one to ``max_objects`` "things" (circle, square, triangle) of random
colour, size and position; later things may hide up to half of earlier ones. The
files are the formats real datasets use, so the same loaders read them:

    OUT/images/{split}/{id:06d}.png                 RGB images
    OUT/annotations/instances_{split}.json          COCO instances (things): polygons for
                                                    unoccluded things, RLE for occluded ones
    OUT/annotations/panoptic_{split}.json           COCO panoptic segments_info (things + stuff)
    OUT/annotations/panoptic_{split}/{id:06d}.png   segment ids as R + 256 G + 256^2 B
    OUT/annotations/semantic_{split}/{id:06d}.png   class index per pixel (see ``SEMANTIC``)
    OUT/semantic_classes.txt                        the semantic class names, one per line

Category ids are deliberately not contiguous (things 1, 2, 3; stuff 10, 11, 12). Everything
is deterministic given ``seed``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

THINGS = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 20, 60], "supercategory": "shape"},
    {"id": 2, "name": "square", "isthing": 1, "color": [0, 0, 142], "supercategory": "shape"},
    {"id": 3, "name": "triangle", "isthing": 1, "color": [250, 170, 30], "supercategory": "shape"},
]
STUFF = [
    {"id": 10, "name": "sky", "isthing": 0, "color": [70, 130, 180], "supercategory": "stuff"},
    {"id": 11, "name": "grass", "isthing": 0, "color": [107, 142, 35], "supercategory": "stuff"},
    {"id": 12, "name": "sand", "isthing": 0, "color": [210, 180, 140], "supercategory": "stuff"},
]
# Semantic PNGs hold the index of the category in this list; 255 marks unlabelled pixels.
SEMANTIC = [c["name"] for c in THINGS + STUFF]
IGNORE_INDEX = 255
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def _stuff_layer(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Background: regions separated by slanted lines. Returns image, region map, category ids."""
    count = int(rng.integers(2, 4))
    categories = [STUFF[i]["id"] for i in rng.permutation(len(STUFF))[:count]]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    region = np.zeros((size, size), dtype=np.int64)
    cuts = np.sort(rng.uniform(0.25, 0.75, size=count - 1)) * size
    for k, cut in enumerate(cuts):
        slope = rng.uniform(-0.4, 0.4)
        region[ys > cut + slope * (xs - size / 2)] = k + 1
    image = np.zeros((size, size, 3), dtype=np.float32)
    by_id = {c["id"]: c for c in STUFF}
    for k, category in enumerate(categories):
        base = np.array(by_id[category]["color"], dtype=np.float32) + rng.normal(0, 15, size=3)
        image[region == k] = base
    image += rng.normal(0, 6, size=image.shape)  # texture, so regions are not flat colours
    return image, region, categories


def _thing_polygon(rng: np.random.Generator, kind: str, size: int) -> list[tuple[float, float]]:
    radius = rng.uniform(0.08, 0.2) * size
    cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
    # Upright: squares axis-aligned, triangles pointing up (rotated shapes need far more
    # training than a CPU demo has before a network from scratch tells them apart).
    angle = {"circle": 0.0, "square": math.pi / 4, "triangle": -math.pi / 2}[kind]
    corners = {"circle": 48, "square": 4, "triangle": 3}[kind]
    return [
        (cx + radius * math.cos(angle + 2 * math.pi * k / corners),
         cy + radius * math.sin(angle + 2 * math.pi * k / corners))
        for k in range(corners)
    ]  # fmt: skip


def _polygon_mask(polygon: list[tuple[float, float]], size: int) -> np.ndarray:
    """Rasterised by pycocotools, so the pixels are exactly what a COCO reader decodes."""
    flat = [round(v, 2) for point in polygon for v in point]
    rle = mask_utils.frPyObjects([flat], size, size)
    return mask_utils.decode(rle)[..., 0].astype(bool)


def render_scene(rng: np.random.Generator, size: int, max_objects: int) -> dict:
    """One scene: ``{"image": [S, S, 3] uint8, "things": [{category_id, mask, polygon,
    occluded}], "stuff": [{category_id, mask}]}`` with visible (non-overlapping) masks."""
    image, region, stuff_ids = _stuff_layer(rng, size)
    things: list[dict] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(10):
            category = THINGS[int(rng.integers(len(THINGS)))]
            polygon = _thing_polygon(rng, category["name"], size)
            mask = _polygon_mask(polygon, size)
            hides_too_much = any((t["mask"] & mask).sum() > 0.5 * t["mask"].sum() for t in things)
            if mask.sum() >= 16 and not hides_too_much:
                break
        else:
            continue
        for earlier in things:
            if (earlier["mask"] & mask).any():
                earlier["mask"] = earlier["mask"] & ~mask
                earlier["occluded"] = True
        colour = rng.uniform(0, 255, size=3)
        image[mask] = colour + rng.normal(0, 4, size=(int(mask.sum()), 3))
        things.append({"category_id": category["id"], "mask": mask, "polygon": polygon,
                       "occluded": False})  # fmt: skip
    covered = np.zeros((size, size), dtype=bool)
    for thing in things:
        covered |= thing["mask"]
    stuff = [
        {"category_id": category, "mask": (region == k) & ~covered}
        for k, category in enumerate(stuff_ids)
    ]
    stuff = [s for s in stuff if s["mask"].any()]
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    return {"image": pixels, "things": things, "stuff": stuff}


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1)]  # fmt: skip


def _segmentation(thing: dict) -> list[list[float]] | dict:
    if not thing["occluded"]:
        return [[round(v, 2) for point in thing["polygon"] for v in point]]
    rle = mask_utils.encode(np.asfortranarray(thing["mask"].astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def write_split(out: Path, split: str, count: int, size: int, seed: int, max_objects: int) -> dict:
    """Write ``count`` scenes of ``split``; returns the paths written."""
    image_dir = out / "images" / split
    panoptic_dir = out / "annotations" / f"panoptic_{split}"
    semantic_dir = out / "annotations" / f"semantic_{split}"
    for folder in (image_dir, panoptic_dir, semantic_dir):
        folder.mkdir(parents=True, exist_ok=True)
    semantic_index = {c["id"]: i for i, c in enumerate(THINGS + STUFF)}
    images, instances, panoptic = [], [], []
    annotation_id = 1
    for index in range(count):
        rng = np.random.default_rng([seed, SPLIT_CODES.get(split, 3), index])
        scene = render_scene(rng, size, max_objects)
        image_id = index + 1
        name = f"{image_id:06d}"
        Image.fromarray(scene["image"]).save(image_dir / f"{name}.png")
        images.append({"id": image_id, "file_name": f"{name}.png", "width": size, "height": size})

        segment_ids = np.zeros((size, size), dtype=np.int64)
        semantic = np.full((size, size), IGNORE_INDEX, dtype=np.uint8)
        segments = []
        for k, segment in enumerate(scene["things"] + scene["stuff"]):
            mask = segment["mask"]
            if not mask.any():
                continue
            segment_id = int(segment["category_id"]) * 1000 + k + 1
            segment_ids[mask] = segment_id
            semantic[mask] = semantic_index[segment["category_id"]]
            area, bbox = int(mask.sum()), _bbox(mask)
            segments.append({"id": segment_id, "category_id": segment["category_id"],
                             "area": area, "bbox": bbox, "iscrowd": 0})  # fmt: skip
            if k < len(scene["things"]):
                instances.append({
                    "id": annotation_id, "image_id": image_id,
                    "category_id": segment["category_id"], "segmentation": _segmentation(segment),
                    "area": area, "bbox": bbox, "iscrowd": 0,
                })  # fmt: skip
                annotation_id += 1
        colours = np.stack([segment_ids % 256, segment_ids // 256 % 256, segment_ids // 65536], -1)
        Image.fromarray(colours.astype(np.uint8)).save(panoptic_dir / f"{name}.png")
        Image.fromarray(semantic).save(semantic_dir / f"{name}.png")
        panoptic.append({"image_id": image_id, "file_name": f"{name}.png",
                         "segments_info": segments})  # fmt: skip

    info = {"description": f"vistra shapes, split {split}, seed {seed}, size {size}"}
    instances_path = out / "annotations" / f"instances_{split}.json"
    instances_path.write_text(json.dumps({
        "info": info, "images": images, "annotations": instances, "categories": THINGS,
    }))  # fmt: skip
    panoptic_path = out / "annotations" / f"panoptic_{split}.json"
    panoptic_path.write_text(json.dumps({
        "info": info, "images": images, "annotations": panoptic, "categories": THINGS + STUFF,
    }))  # fmt: skip
    return {"images": image_dir, "instances": instances_path, "panoptic": panoptic_path,
            "panoptic_pngs": panoptic_dir, "semantic_pngs": semantic_dir}  # fmt: skip


def write_shapes(
    out: str | Path,
    train: int = 1000,
    val: int = 200,
    size: int = 128,
    seed: int = 0,
    max_objects: int = 4,
) -> dict[str, dict]:
    """Write the shapes set to ``out`` (see the module docstring); returns the paths per split."""
    if size < 32 or train < 0 or val < 0 or max_objects < 1:
        raise ValueError("need size >= 32, train/val >= 0 and max_objects >= 1")
    out = Path(out)
    written = {}
    for split, count in (("train", train), ("val", val)):
        if count:
            written[split] = write_split(out, split, count, size, seed, max_objects)
    (out / "semantic_classes.json").write_text(
        json.dumps({"classes": SEMANTIC, "ignore_index": IGNORE_INDEX})
    )
    (out / "semantic_classes.txt").write_text("".join(f"{name}\n" for name in SEMANTIC))
    return written
