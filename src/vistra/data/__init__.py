"""Data sources, transforms and LightningDataModules."""

from vistra.data.datamodules import ClassificationDataModule, ContrastiveDataModule, ImageDataModule
from vistra.data.sources import (
    CIFARSource,
    DigitsSource,
    ImageFolderSource,
    ImageLoadError,
    ImageSource,
    ListFileSource,
)

__all__ = [
    "CIFARSource",
    "ClassificationDataModule",
    "ContrastiveDataModule",
    "DigitsSource",
    "ImageDataModule",
    "ImageFolderSource",
    "ImageLoadError",
    "ImageSource",
    "ListFileSource",
]
