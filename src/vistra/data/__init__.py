"""Data sources, transforms and LightningDataModules."""

from vistra.data.datamodules import ClassificationDataModule, ContrastiveDataModule, ImageDataModule
from vistra.data.detection import DetectionDataModule
from vistra.data.sources import (
    CIFARSource,
    COCODetectionSource,
    DigitsSource,
    ImageFolderSource,
    ImageLoadError,
    ImageSource,
    ListFileSource,
)

__all__ = [
    "CIFARSource",
    "COCODetectionSource",
    "DetectionDataModule",
    "ClassificationDataModule",
    "ContrastiveDataModule",
    "DigitsSource",
    "ImageDataModule",
    "ImageFolderSource",
    "ImageLoadError",
    "ImageSource",
    "ListFileSource",
]
