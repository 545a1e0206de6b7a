"""Data sources, transforms and LightningDataModules."""

from vistra.data.datamodules import ClassificationDataModule, ContrastiveDataModule, ImageDataModule
from vistra.data.detection import DetectionDataModule
from vistra.data.segmentation import SegmentationDataModule
from vistra.data.sources import (
    CIFARSource,
    COCODetectionSource,
    DigitsSource,
    ImageFolderSource,
    ImageLoadError,
    ImageSource,
    ListFileSource,
    UnlabelledFolderSource,
)
from vistra.data.sources.coco_panoptic import COCOPanopticSource, SemanticSource

__all__ = [
    "CIFARSource",
    "COCODetectionSource",
    "COCOPanopticSource",
    "DetectionDataModule",
    "ClassificationDataModule",
    "ContrastiveDataModule",
    "DigitsSource",
    "ImageDataModule",
    "ImageFolderSource",
    "ImageLoadError",
    "ImageSource",
    "ListFileSource",
    "SegmentationDataModule",
    "SemanticSource",
    "UnlabelledFolderSource",
]
