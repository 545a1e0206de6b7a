"""Image sources: one file per format, each a Dataset of (PIL image, label)."""

from vistra.data.sources.base import ImageLoadError, ImageSource, load_image
from vistra.data.sources.cifar import CIFARSource
from vistra.data.sources.coco import COCODetectionSource
from vistra.data.sources.digits import DigitsSource
from vistra.data.sources.image_folder import ImageFolderSource
from vistra.data.sources.list_file import ListFileSource
from vistra.data.sources.unlabelled_folder import UnlabelledFolderSource

__all__ = [
    "CIFARSource",
    "COCODetectionSource",
    "DigitsSource",
    "ImageFolderSource",
    "ImageLoadError",
    "ImageSource",
    "ListFileSource",
    "UnlabelledFolderSource",
    "load_image",
]
