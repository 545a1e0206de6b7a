"""``vistra data shard`` of a COCO instance or panoptic set: its image files (and panoptic
PNGs) into file shards, the annotation file copied beside them unchanged.

The result is read by the same data modules and sources as the folders were: the annotation
file as ``*_annotations``, the shard folder as ``*_images`` (the panoptic PNG shards sit where
the sources look by default: the JSON path without ``.json``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from vistra.data.shard_files import outside_folder
from vistra.data.shard_writer import write_file_shards


def is_annotation_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".json"


def shard_annotated_set(
    annotations: str | Path,
    images: str | Path,
    out: str | Path,
    shard_size: int = 1000,
    panoptic_pngs: str | Path | None = None,
) -> dict[str, Path]:
    """Write ``out/<annotation file>``, ``out/images/`` (shards) and, for a panoptic file,
    ``out/<annotation stem>/`` (PNG shards). Returns those paths by role."""
    annotations, images, out = Path(annotations), Path(images), Path(out)
    try:
        data = json.loads(annotations.read_text())
        image_names = [str(entry["file_name"]) for entry in data["images"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{annotations}: not a COCO annotation file with images[].file_name "
                         f"({error})") from None  # fmt: skip
    entries = data.get("annotations") or []
    panoptic = bool(entries) and isinstance(entries[0], dict) and "segments_info" in entries[0]
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: image folder not found")
    written = {"annotations": out / annotations.name}
    written["images"] = write_file_shards(_existing(image_names, images, annotations, "images"),
                                          out / "images", shard_size)  # fmt: skip
    if panoptic:
        png_dir = Path(panoptic_pngs) if panoptic_pngs else annotations.with_suffix("")
        png_names = [str(entry["file_name"]) for entry in entries]
        written["panoptic_pngs"] = write_file_shards(
            _existing(png_names, png_dir, annotations, "annotations"),
            out / annotations.stem, shard_size)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(annotations, written["annotations"])
    return written


def _existing(names: list[str], folder: Path, origin: Path, field: str) -> list[tuple[str, Path]]:
    """(name, path) of each file; a name reaching outside ``folder`` is refused, the first
    missing file named, each with its JSON field."""
    for name in names:
        if outside_folder(name):
            raise ValueError(f"{origin}: {field}[].file_name {outside_folder(name)}")
    files = [(name, folder / name) for name in dict.fromkeys(names)]
    missing = [path for _, path in files if not path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{origin}: {field}[].file_name {missing[0]} not found{more}")
    return files
