"""An image root plus a list file: one ``relative/path.jpg [label]`` per line.

This is the format of the EasyCV MAE tutorial's ``train.txt``; lines without a label are
unlabelled (label -1), which is all MAE and SimCLR need.
"""

from __future__ import annotations

from pathlib import Path

from vistra.data.sources.base import UNLABELLED, ImageSource


class ListFileSource(ImageSource):
    """Images named in a list file, relative to ``root`` (default: the list file's folder).

    Args:
        list_file: text file, one ``path [label]`` per line; blank lines and ``#`` comments skipped.
        root: folder the paths are relative to.
        classes: optional class names; otherwise ``class_0..class_{max label}``.
        skip_bad_images: drop unreadable files with one warning instead of failing on them.
    """

    def __init__(
        self,
        list_file: str | Path,
        root: str | Path | None = None,
        classes: list[str] | None = None,
        skip_bad_images: bool = False,
    ) -> None:
        list_file = Path(list_file)
        self.origin = str(list_file)
        if not list_file.is_file():
            raise FileNotFoundError(f"{list_file}: list file not found")
        base = Path(root) if root is not None else list_file.parent
        self.items, self.labels = [], []
        for line_number, line in enumerate(list_file.read_text().splitlines(), start=1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) > 2:
                raise ValueError(
                    f"{list_file}:{line_number}: expected 'path [label]', got {line!r}"
                )
            path = base / fields[0]
            if not path.is_file():
                raise FileNotFoundError(f"{list_file}:{line_number}: image {path} does not exist")
            try:
                label = int(fields[1]) if len(fields) == 2 else UNLABELLED
            except ValueError as error:
                raise ValueError(
                    f"{list_file}:{line_number}: label must be an integer, got {fields[1]!r}"
                ) from error
            if label < UNLABELLED:
                raise ValueError(f"{list_file}:{line_number}: negative label {label}")
            self.items.append(path)
            self.labels.append(label)
        max_label = max(self.labels, default=UNLABELLED)
        if classes is not None and max_label >= len(classes):
            raise ValueError(
                f"{list_file}: label {max_label} but only {len(classes)} classes named"
            )
        self.classes = list(classes) if classes else [f"class_{i}" for i in range(max_label + 1)]
        if skip_bad_images:
            self._drop_unreadable()
        self._check_not_empty()
