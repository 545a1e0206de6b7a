"""Validation of a COCO instance annotation file before any training starts.

``check_coco(path, images_dir)`` returns a ``CocoReport``: every problem names the file and
the field, annotations by position and id (``annotations[17] (id 9001).bbox``: the id is what
people search their file for), and a summary counts images, objects and categories. Problems
that follow from one cause are reported once with a count (32 annotations of an unknown image
id, of a duplicate image id). ``vistra data check`` prints it, with ``--images`` also comparing
each image file's size with the file (warning when only its EXIF orientation makes them
differ); the detection data refuses a file with problems and shows the same messages.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vistra.data.coco_masks import segmentation_problem
from vistra.data.json_files import JsonFileError, read_json
from vistra.data.shard_files import image_folder, outside_folder

BOX_TOLERANCE = 1.0  # pixels a box may stick out of its image (COCO rounds coordinates)


@dataclass
class Problem:
    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


@dataclass
class CocoReport:
    file: str
    problems: list[Problem] = field(default_factory=list)
    images: int = 0
    annotations: int = 0
    crowd: int = 0
    images_without_objects: int = 0
    objects_per_category: dict[str, int] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)
    # image id -> positions in "images" of every entry with it (the first one kept)
    duplicate_image_ids: dict[int, list[int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, field_name: str, message: str) -> None:
        self.problems.append(Problem(self.file, field_name, message))

    def warn(self, field_name: str, message: str) -> None:
        self.warnings.append(Problem(self.file, field_name, message))

    def table(self) -> str:
        rows = [
            ("images", self.images),
            ("annotations", self.annotations),
            ("  of which crowd", self.crowd),
            ("images without objects", self.images_without_objects),
            ("categories", len(self.objects_per_category)),
        ]
        rows += [(f"  {name}", count) for name, count in self.objects_per_category.items()]
        rows.append(("problems", len(self.problems)))
        rows.append(("warnings", len(self.warnings)))
        width = max(len(label) for label, _ in rows) + 2
        lines = [f"{self.file}", "-" * (width + 10)]
        lines += [f"{label:<{width}}{count:>10}" for label, count in rows]
        return "\n".join(lines)

    def raise_if_bad(self, limit: int = 20) -> None:
        if self.problems:
            shown = "\n  ".join(str(p) for p in self.problems[:limit])
            more = len(self.problems) - limit
            tail = f"\n  ... and {more} more" if more > 0 else ""
            raise ValueError(
                f"{self.file}: {len(self.problems)} problem(s) in the annotations "
                f"(run `vistra data check` for the full list):\n  {shown}{tail}"
            )


def check_coco(
    path: str | Path, images_dir: str | Path | None = None, image_sizes: bool = False
) -> CocoReport:
    """Check a COCO instance file (and, with ``images_dir``, that every image file exists;
    with ``image_sizes`` too, that its size is the file's: reads every image's header)."""
    path = Path(path)
    report = CocoReport(str(path))
    if not path.is_file():
        report.add("file", "not found")
        return report
    try:
        data = read_json(path)
    except JsonFileError as error:
        report.add(error.where, error.reason)
        return report
    if not isinstance(data, dict):
        report.add("top level", "expected a JSON object with images, annotations, categories")
        return report
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            report.add(key, "missing or not a list")
    if not report.ok:
        return report

    categories = _check_categories(report, data["categories"])
    images = _check_images(report, data["images"], images_dir, image_sizes)
    per_image = _check_annotations(report, data["annotations"], images, categories)
    report.images = len(images)
    report.images_without_objects = sum(1 for image_id in images if not per_image[image_id])
    return report


def _duplicate(report: CocoReport, seen: set, value, field_name: str) -> bool:
    if value in seen:
        report.add(field_name, f"duplicate id {value}")
        return True
    seen.add(value)
    return False


def _check_categories(report: CocoReport, categories: list) -> dict[int, str]:
    names: dict[int, str] = {}
    for index, category in enumerate(categories):
        where = f"categories[{index}]"
        if not isinstance(category, dict) or not isinstance(category.get("id"), int):
            report.add(f"{where}.id", "missing or not an integer")
            continue
        if not _duplicate(report, set(names), category["id"], f"{where}.id"):
            names[category["id"]] = str(category.get("name", category["id"]))
    return names


def _check_images(
    report: CocoReport, images: list, images_dir, image_sizes: bool
) -> dict[int, tuple[int, int] | None]:
    sizes: dict[int, tuple[int, int] | None] = {}
    folder = image_folder(images_dir) if images_dir is not None else None
    first_at: dict[int, int] = {}
    for index, image in enumerate(images):
        where = f"images[{index}]"
        if not isinstance(image, dict) or not isinstance(image.get("id"), int):
            report.add(f"{where}.id", "missing or not an integer")
            continue
        if image["id"] in first_at:  # reported once its annotations are counted
            report.duplicate_image_ids.setdefault(image["id"], [first_at[image["id"]]])
            report.duplicate_image_ids[image["id"]].append(index)
            continue
        first_at[image["id"]] = index
        width, height = image.get("width"), image.get("height")
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            report.add(f"{where}.width/height", f"need positive integers, got {width}, {height}")
            sizes[image["id"]] = None  # known, but its boxes cannot be checked
            continue
        sizes[image["id"]] = (height, width)
        name = image.get("file_name")
        if not isinstance(name, str) or not name:
            report.add(f"{where}.file_name", "missing")
        elif outside_folder(name):
            report.add(f"{where}.file_name", outside_folder(name))
        elif folder is not None and not (folder / name).is_file():
            report.add(f"{where}.file_name", f"image file {folder / name} not found")
        elif folder is not None and image_sizes:
            _check_image_size(report, where, folder / name, width, height)
    return sizes


def _check_image_size(report: CocoReport, where: str, path: Path, width: int, height: int):
    from PIL import Image, ImageOps

    from vistra.data.image_files import open_binary

    try:
        with open_binary(path) as handle, Image.open(handle) as opened:
            stored = opened.size
            turned = ImageOps.exif_transpose(opened).size if opened.getexif() else stored
    except Exception as error:  # noqa: BLE001 - any decoder failure: unreadable
        report.add(f"{where}.file_name", f"{path}: cannot read image ({error})")
        return
    if turned == (width, height):
        return
    if stored == (width, height):
        report.warn(f"{where}.width/height", f"{path} is {stored[0]} x {stored[1]} as stored "
                    f"but {turned[0]} x {turned[1]} upright (EXIF orientation): the file gives "
                    "the stored size, so its boxes were drawn on the unturned pixels and are "
                    "used with them")  # fmt: skip
    else:
        report.add(f"{where}.width/height", f"the file says {width} x {height} but {path} is "
                   f"{turned[0]} x {turned[1]}")  # fmt: skip


def _check_annotations(
    report: CocoReport, annotations: list, images: dict, categories: dict[int, str]
) -> dict[int, int]:
    per_image: Counter = Counter({image_id: 0 for image_id in images})
    per_category: Counter = Counter()
    seen: set = set()
    # Problems that follow from one cause: field -> value -> [names of the annotations]
    follow_ons: dict[str, dict] = {"image_id": {}, "category_id": {}, "duplicate": {}}
    for index, annotation in enumerate(annotations):
        where = _annotation_name(index, annotation)
        if not isinstance(annotation, dict):
            report.add(where, "not an object")
            continue
        _duplicate(report, seen, annotation.get("id"), f"{where}.id")
        untyped = [name for name in ("id", "image_id", "category_id")  # bool is an int too
                   if type(annotation.get(name)) is not int]  # fmt: skip
        for name in untyped:
            report.add(f"{where}.{name}", f"must be an integer, got {annotation.get(name)!r}")
        crowd = annotation.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, (bool, float)):
            report.add(f"{where}.iscrowd", f"must be 0 or 1, got {crowd!r}")
        if {"image_id", "category_id"} & set(untyped):
            continue
        image_id, category_id = annotation.get("image_id"), annotation.get("category_id")
        if image_id not in images:
            follow_ons["image_id"].setdefault(_key(image_id), []).append(where)
            continue
        if category_id not in categories:
            follow_ons["category_id"].setdefault(_key(category_id), []).append(where)
            continue
        if image_id in report.duplicate_image_ids:
            follow_ons["duplicate"].setdefault(image_id, []).append(where)
        if images[image_id] is None:
            continue  # its image's size is reported already
        height, width = images[image_id]
        _check_box(report, f"{where}.bbox", annotation.get("bbox"), height, width)
        _check_segmentation(report, f"{where}.segmentation", annotation, height, width)
        per_image[image_id] += 1
        per_category[categories[category_id]] += 1
        report.annotations += 1
        report.crowd += int(bool(annotation.get("iscrowd", 0)))
    for image_id, positions in report.duplicate_image_ids.items():
        refer = follow_ons["duplicate"].get(image_id, [])
        again = ", ".join(f"images[{p}]" for p in positions[1:])
        report.add(f"{again}.id", f"duplicate image id {image_id} (first at "
                   f"images[{positions[0]}]); {len(refer)} annotation(s) refer to it, so which "
                   "image they belong to is ambiguous")  # fmt: skip
    for field_name, what in (("image_id", "image"), ("category_id", "category")):
        for value, names in follow_ons[field_name].items():
            others = f" (and {len(names) - 1} more annotations with it)" if len(names) > 1 else ""
            report.add(f"{names[0]}.{field_name}", f"unknown {what} id {value}{others}")
    report.objects_per_category = {name: per_category[name] for name in categories.values()}
    return per_image


def _annotation_name(index: int, annotation) -> str:
    """``annotations[3] (id 9001)``: the position and the id people search their file for."""
    if isinstance(annotation, dict) and isinstance(annotation.get("id"), (int, str)):
        return f"annotations[{index}] (id {annotation['id']})"
    return f"annotations[{index}]"


def _key(value):
    """A dictionary key for any JSON value (lists and dicts are not hashable)."""
    return value if isinstance(value, (int, float, str, type(None))) else repr(value)


def _check_box(report: CocoReport, where: str, box, height: int, width: int) -> None:
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
        report.add(where, f"need [x, y, width, height], got {box!r}")
        return
    x, y, w, h = box
    if w <= 0 or h <= 0:
        report.add(where, f"non-positive size {w} x {h}")
    elif (
        x < -BOX_TOLERANCE
        or y < -BOX_TOLERANCE
        or x + w > width + BOX_TOLERANCE
        or (y + h > height + BOX_TOLERANCE)
    ):
        report.add(where, f"box {box} outside the {width} x {height} image")


def _check_segmentation(report: CocoReport, where: str, annotation: dict, height, width) -> None:
    segmentation = annotation.get("segmentation")
    if segmentation is None:
        return  # boxes-only datasets are fine for detection
    problem = segmentation_problem(segmentation, height, width)
    if problem:
        report.add(f"{where}{problem[0]}", problem[1])


def _is_number(value) -> bool:
    """A finite int or float (JSON's NaN and Infinity, which Python's reader accepts, are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
