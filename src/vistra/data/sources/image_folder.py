"""Images in one sub-folder per class (``root/<class>/<image>``), the ImageNet layout."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets.folder import find_classes

from vistra.data.image_files import IMAGE_SUFFIXES, walk_files
from vistra.data.sources.base import ImageSource


class ImageFolderSource(ImageSource):
    """``root/<class name>/**/<image>``; classes sorted by name get labels 0..C-1. A class
    folder reached twice through symlinks (a loop) is searched once, with a warning.

    Args:
        root: the folder holding one sub-folder per class.
        skip_bad_images: drop unreadable files with one warning instead of failing on them.
    """

    def __init__(self, root: str | Path, skip_bad_images: bool = False) -> None:
        self.origin = str(root)
        if not Path(root).is_dir():
            raise FileNotFoundError(f"{root}: image folder not found")
        try:
            self.classes, class_to_idx = find_classes(str(root))
        except FileNotFoundError as error:
            raise ValueError(
                f"{root}: expected one sub-folder per class ({error}); for images without "
                "labels use vistra.data.UnlabelledFolderSource"
            ) from error
        self.items, self.labels = [], []
        for name in self.classes:  # torchvision's order: by folder, then by file name
            found = [p for p in walk_files(Path(root) / name) if p.suffix.lower() in IMAGE_SUFFIXES]
            found.sort(key=lambda p: (str(p.parent), p.name))
            self.items += [str(p) for p in found]
            self.labels += [class_to_idx[name]] * len(found)
        if skip_bad_images:
            self._drop_unreadable()
        self._check_not_empty()
