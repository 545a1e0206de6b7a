"""Segmentation result files: COCO panoptic and instance results, label maps, pictures."""

from __future__ import annotations

import json
import sys

import numpy as np

from vistra.inference.images import MAX_MAP_PIXELS
from vistra.inference.writers import ResultWriter, output_file


class SegmentationWriter(ResultWriter):
    """panoptic.json + panoptic/*.png (COCO panoptic results), instances.json (COCO segm
    results), semantic/*.png (class index per pixel) and pictures/ (overlays with a legend).
    Maps of images over ``MAX_MAP_PIXELS`` come at a reduced size: images.json gives it as
    width / height and the file's size as original_width / original_height."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.panoptic, self.instances, self.reduced = [], [], 0

    def add(self, record, result) -> None:
        height, width = result.semantic.shape
        entry = {"id": record.image_id, "file_name": record.name.as_posix(), "width": width,
                 "height": height}  # fmt: skip
        if record.image.size != (width, height):
            entry["original_width"], entry["original_height"] = record.image.size
            self.reduced += 1
        self.images.append(entry)
        self.write_kept(record, result)

    def write(self, record, result) -> None:
        from vistra.inference.pictures import write_panoptic_png
        from vistra.inference.result_json import (
            instance_rows,
            segment_rows,
            segmentation_picture,
            semantic_image,
        )

        self.instances += instance_rows(result, self.spec, record.image_id)
        semantic_image(result).save(output_file(self.out / "semantic", record.stem, ".png"))
        if result.panoptic is not None:
            png = output_file(self.out / "panoptic", record.stem, ".png")
            write_panoptic_png(np.asarray(result.panoptic), png)
            self.panoptic.append({"image_id": record.image_id,
                                  "file_name": f"{record.stem.as_posix()}.png",
                                  "segments_info": segment_rows(result)})  # fmt: skip
        segmentation_picture(record.image, result, self.spec).save(
            output_file(self.out / "pictures", record.stem, ".png")
        )

    def close(self) -> None:
        super().close()
        (self.out / "panoptic.json").write_text(json.dumps({"annotations": self.panoptic}))
        (self.out / "instances.json").write_text(json.dumps(self.instances))
        for folder in ("panoptic", "semantic", "pictures"):
            (self.out / folder).mkdir(exist_ok=True)
        if self.reduced:
            print(f"{self.reduced} image(s) over {MAX_MAP_PIXELS / 1e6:.1f} megapixels: their "
                  "maps are at a reduced size (width / height in images.json, original_width "
                  "/ original_height beside them)", file=sys.stderr)  # fmt: skip
