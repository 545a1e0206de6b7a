"""Images from tar shards (``vistra data shard``, or any WebDataset-layout tars).

The shards are read by byte offset (``vistra.data.shard_files.ShardFolder``), so the source is
map-style like a folder: the training order is the same seeded permutation (split across ranks
and loader workers without overlap, resumable mid-epoch), and a shuffle buffer's approximation
is not needed. Each worker keeps its open shard files; every image costs one seek and one read
of its own bytes.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from vistra.data.image_files import decode_image
from vistra.data.shard_files import ShardFolder
from vistra.data.sources.base import DataError, ImageLoadError, ImageSource


class ShardSource(ImageSource):
    """The images of a shard folder: its ``index.json`` (written by ``vistra data shard``), or
    without one, every ``*.tar`` in it scanned once for ``<key>.<image suffix>`` and
    ``<key>.cls`` members.

    Args:
        root: the shard folder.
        classes: class names where the shards have labels but no index (``class_0``, ... by
            default).
    """

    def __init__(self, root: str | Path, classes: list[str] | None = None) -> None:
        self.root, self.origin = Path(root), str(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{root}: shard folder not found")
        self.folder = ShardFolder(self.root)
        if self.folder.samples is None:
            raise DataError(f"{self.root / 'index.json'}: shards of a COCO set's files, not of "
                            "an image source: give the folder as the set's images")  # fmt: skip
        self.items = [member for member, _, _ in self.folder.samples]
        self.labels = [label for _, label, _ in self.folder.samples]
        self.names = [name for _, _, name in self.folder.samples]
        top = max(self.labels, default=-1)
        self.classes = self.folder.classes or list(classes or []) or [
            f"class_{i}" for i in range(top + 1)]  # fmt: skip
        self._check_not_empty()

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        name = f"{self.root}: {self.names[index]}"
        try:
            data = self.folder.read(self.items[index])
        except OSError as error:
            raise ImageLoadError(f"{name}: cannot read ({error})") from None
        return decode_image(data, name), self.labels[index]

    def item_name(self, index: int) -> Path:
        return Path(self.names[index])
