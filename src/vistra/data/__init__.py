"""Data sources, transforms and LightningDataModules.

The names below are imported on first use, so that reading images (``vistra.data.sources``)
does not import Lightning, which only the data modules need.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "ClassificationDataModule": "vistra.data.datamodules",
    "ContrastiveDataModule": "vistra.data.datamodules",
    "ImageDataModule": "vistra.data.datamodules",
    "DetectionDataModule": "vistra.data.detection",
    "SegmentationDataModule": "vistra.data.segmentation",
    "CIFARSource": "vistra.data.sources.cifar",
    "COCODetectionSource": "vistra.data.sources.coco",
    "COCOPanopticSource": "vistra.data.sources.coco_panoptic",
    "DigitsSource": "vistra.data.sources.digits",
    "ImageFolderSource": "vistra.data.sources.image_folder",
    "ImageLoadError": "vistra.data.sources.base",
    "ImageSource": "vistra.data.sources.base",
    "ListFileSource": "vistra.data.sources.list_file",
    "SemanticSource": "vistra.data.sources.semantic",
    "ShardSource": "vistra.data.sources.shards",
    "UnlabelledFolderSource": "vistra.data.sources.unlabelled_folder",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vistra.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
