"""Every image under a folder, at any depth, without labels: the usual input of MAE and
SimCLR pre-training (a photo dump, a camera's output, a crawl)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from vistra.data.image_files import IMAGE_SUFFIXES
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
            for path in _walk(Path(root), follow_symlinks)
            if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
        )
        self.labels = [UNLABELLED] * len(self.items)
        self.classes = []
        if skip_bad_images:
            self._drop_unreadable()
        self._check_not_empty()


def _walk(root: Path, follow_symlinks: bool):
    """The files under ``root``; a folder reached twice (a symlink loop, or two links to one
    folder) is searched once, and what was left out is named in one warning."""
    seen, skipped = set(), []
    for folder, subfolders, files in os.walk(root, followlinks=follow_symlinks):
        try:
            status = os.stat(folder)
        except OSError:
            continue
        if (status.st_dev, status.st_ino) in seen:
            skipped.append(folder)
            subfolders[:] = []
            continue
        seen.add((status.st_dev, status.st_ino))
        for name in files:
            yield Path(folder) / name
    if skipped:
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        warnings.warn(f"{root}: {skipped[0]}{more} leads to a folder already searched (a "
                      "symlink loop or a second link): searched once", stacklevel=2)  # fmt: skip
