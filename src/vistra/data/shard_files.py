"""A folder of files (the images of a COCO set, its panoptic PNGs) kept in tar shards.

``vistra data shard`` writes any file folder that an annotation file points into as
``shard-NNNNNN.tar`` files (each file's bytes as they were, under its relative name) plus an
``index.json`` of where each file's bytes sit. ``image_folder(path)`` gives a ``ShardFolder``
for such a folder and a plain ``Path`` otherwise; the COCO sources use either the same way
(``folder / file_name``, ``is_file()``, ``open_binary``), so every data module that takes an
image folder also takes a shard folder.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import BinaryIO

FILES_FORMAT = "vistra-file-shards-1"
INDEX = "index.json"


def outside_folder(name: str) -> str | None:
    """Why an annotation file's ``file_name`` would reach outside its folder (an absolute path,
    a drive, a ``..`` part), or ``None``: such a name would read, copy into a shard or write
    (``vistra predict``'s pictures) a file elsewhere."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return f"{name!r} is an absolute path; names are relative to the image folder"
    if ".." in parts:
        return f"{name!r} leaves the image folder ('..'); names are relative to it"
    return None


class ShardFolder:
    """The files of a shard folder by their relative names (``folder / name``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        index = self.root / INDEX
        try:
            data = json.loads(index.read_text())
            self.entries = {name: (shard, int(offset), int(size))
                            for name, (shard, offset, size) in data["files"].items()}  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{index}: not a vistra file-shard index ({error})") from None

    def __truediv__(self, name: str) -> ShardMember:
        return ShardMember(self, str(name))

    def __fspath__(self) -> str:
        return str(self.root)

    def __str__(self) -> str:
        return str(self.root)

    def is_dir(self) -> bool:
        return True

    def read(self, name: str) -> bytes:
        shard, offset, size = self.entries[name]
        with open(self.root / shard, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        if len(data) != size:
            raise OSError(f"{self.root / shard}: truncated at {name}")
        return data


class ShardMember(os.PathLike):
    """One file of a ``ShardFolder``: named like the file it was (``folder/name``) in
    messages and relative paths; its bytes come from the shard."""

    def __init__(self, folder: ShardFolder, name: str) -> None:
        self.folder, self.name = folder, name

    def __fspath__(self) -> str:
        return os.path.join(self.folder.root, self.name)

    def __str__(self) -> str:
        return self.__fspath__()

    def is_file(self) -> bool:
        return self.name in self.folder.entries

    def read_bytes(self) -> bytes:
        if not self.is_file():
            raise FileNotFoundError(f"{self}: not in the shards")
        return self.folder.read(self.name)


def is_shard_folder(path: str | Path) -> bool:
    index = Path(path) / INDEX
    if not index.is_file():
        return False
    try:
        return json.loads(index.read_text()).get("format") == FILES_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def image_folder(path: str | Path) -> Path | ShardFolder:
    """``path`` as a ``ShardFolder`` when it holds file shards, else as a ``Path``."""
    return ShardFolder(path) if is_shard_folder(path) else Path(path)


def open_binary(path: str | Path | ShardMember) -> BinaryIO:
    """A binary file object for a real file or a shard member (FileNotFoundError if absent)."""
    if isinstance(path, ShardMember):
        return io.BytesIO(path.read_bytes())
    return open(path, "rb")  # noqa: SIM115 - the caller closes it
