"""Every image under a folder, at any depth, without labels: the usual input of MAE and
SimCLR pre-training (a photo dump, a camera's output, a crawl)."""

from __future__ import annotations

from pathlib import Path

from vistra.data.image_files import IMAGE_SUFFIXES, walk_files
from vistra.data.sources.base import UNLABELLED, ImageSource


class UnlabelledFolderSource(ImageSource):
    """``root/**/<image>`` in sorted path order, label -1, no classes.

    Args:
        root: the folder; sub-folders are searched too, and their names are not classes.
        skip_bad_images: drop unreadable files with one warning instead of failing on them.
        follow_symlinks: also search symlinked sub-folders.
    """

    def __init__(
        self, root: str | Path, skip_bad_images: bool = False, follow_symlinks: bool = True
    ) -> None:
        self.origin = str(root)
        if not Path(root).is_dir():
            raise FileNotFoundError(f"{root}: image folder not found")
        self.items = sorted(
            path
            for path in walk_files(Path(root), follow_symlinks)
            if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
        )
        self.labels = [UNLABELLED] * len(self.items)
        self.classes = []
        if skip_bad_images:
            self._drop_unreadable()
        self._check_not_empty()
