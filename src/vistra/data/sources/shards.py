"""Images from tar shards (``vistra data shard``, or any WebDataset-layout tars).

The shards are read by byte offset, so the source is map-style like a folder: the training
order is the same seeded permutation (split across ranks and loader workers without overlap,
resumable mid-epoch), and a shuffle buffer's approximation is not needed. Each worker keeps
its open shard files; every image costs one seek and one read of its own bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from PIL import Image

from vistra.data.image_files import IMAGE_SUFFIXES
from vistra.data.sources.base import UNLABELLED, DataError, ImageLoadError, ImageSource, as_rgb


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
        index = self.root / "index.json"
        samples, names = self._read_index(index) if index.is_file() else self._scan(classes)
        self.items = [(shard, offset, size) for shard, offset, size, _ in samples]
        self.labels = [label for *_, label in samples]
        self.names = names
        self._check_not_empty()
        self._files: dict[str, object] = {}

    def _read_index(self, index: Path):
        try:
            data = json.loads(index.read_text())
            samples = [(shard["file"], offset, size, label) for shard in data["shards"]
                       for _, offset, size, label in shard["samples"]]  # fmt: skip
            names = [name for shard in data["shards"] for name, *_ in shard["samples"]]
        except (ValueError, KeyError, TypeError) as error:
            raise DataError(f"{index}: not a vistra shard index ({error})") from None
        self.classes = list(data.get("classes") or [])
        return samples, names

    def _scan(self, classes: list[str] | None):
        tars = sorted(self.root.glob("*.tar"))
        if not tars:
            raise FileNotFoundError(f"{self.root}: no index.json and no .tar shards")
        samples, names = [], []
        for tar in tars:
            images, labels = {}, {}
            with tarfile.open(tar) as archive:
                for member in archive:
                    key, suffix = member.name.rsplit(".", 1) if "." in member.name else (
                        member.name, "")  # fmt: skip
                    if f".{suffix.lower()}" in IMAGE_SUFFIXES:
                        images[key] = (member.offset_data, member.size, member.name)
                    elif suffix == "cls":
                        labels[key] = int(archive.extractfile(member).read().decode().strip())
            for key, (offset, size, name) in images.items():
                samples.append((tar.name, offset, size, labels.get(key, UNLABELLED)))
                names.append(name)
        top = max((label for *_, label in samples), default=UNLABELLED)
        self.classes = list(classes) if classes else [f"class_{i}" for i in range(top + 1)]
        return samples, names

    def __getstate__(self) -> dict:
        # Open files stay in the process that opened them (loader workers open their own).
        return {**self.__dict__, "_files": {}}

    def _read(self, index: int) -> bytes:
        shard, offset, size = self.items[index]
        handle = self._files.get(shard)
        if handle is None:
            handle = self._files[shard] = open(self.root / shard, "rb")  # noqa: SIM115
        handle.seek(offset)
        data = handle.read(size)
        if len(data) != size:
            raise ImageLoadError(f"{self.root / shard}: truncated at {self.names[index]}")
        return data

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        try:
            with Image.open(io.BytesIO(self._read(index))) as image:
                return as_rgb(image), self.labels[index]
        except (OSError, SyntaxError, ValueError) as error:
            shard = self.items[index][0]
            raise ImageLoadError(f"{self.root / shard}: cannot read {self.names[index]} "
                                 f"({error})") from None  # fmt: skip

    def item_name(self, index: int) -> Path:
        return Path(self.names[index])
