"""Tar shards: the one format ``vistra data shard`` writes, and its one reader.

A shard folder holds ``shard-NNNNNN.tar`` files (each member a file's bytes as they were, in
the WebDataset layout: ``<key>.<ext>`` members of one sample side by side) and an
``index.json`` of where each member's bytes sit, so that reading needs no scan:

    {"format": "vistra-shards-2", "shards": [...], "files": {member: [shard, offset, size]},
     "samples": [[member, label, name], ...], "classes": [...], "origin": "..."}

``samples`` and ``classes`` are there for an image source (``ShardSource``: each image's
member, label and name in the source); a COCO set's folders (images, panoptic PNGs) are
written under their files' relative names, which the annotation file's ``file_name`` gives
(``image_folder(path)`` then reads them like a folder: ``folder / file_name``, ``is_file()``,
``vistra.data.image_files.open_binary``). Tars without an index (any WebDataset-layout
shards) are scanned once.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import BinaryIO

FORMAT = "vistra-shards-2"
OLD_FORMATS = ("vistra-shards-1", "vistra-file-shards-1")
INDEX = "index.json"
UNLABELLED = -1


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
    """The members of a shard folder by name (``folder / name``), read by byte offset.

    ``entries``: member -> (shard, offset, size); ``samples``: [member, label, name] of an
    image source's shards (``None`` for a COCO set's files); ``classes``. Open shard files are
    kept per process (loader workers open their own)."""

    def __init__(self, root: str | Path) -> None:
        from vistra.data.image_files import DataError

        self.root = Path(root)
        self._files: dict[str, BinaryIO] = {}
        index = self.root / INDEX
        if not index.is_file():
            self._scan()
            return
        try:
            data = json.loads(index.read_text())
            version = data.get("format")
        except (OSError, ValueError, AttributeError) as error:
            raise DataError(f"{index}: not a vistra shard index ({error})") from None
        if version in OLD_FORMATS:
            raise DataError(f"{index}: shards of an earlier vistra ({version}); write them "
                            "again with vistra data shard")  # fmt: skip
        try:
            self.entries = {str(name): (str(shard), int(offset), int(size))
                            for name, (shard, offset, size) in data["files"].items()}  # fmt: skip
            listed = data.get("samples")
            self.samples = None if listed is None else [
                (str(member), int(label), str(name)) for member, label, name in listed]  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise DataError(f"{index}: not a vistra shard index ({error})") from None
        self.classes = [str(c) for c in data.get("classes") or []]
        self._check_entries(index, DataError)

    def _check_entries(self, index: Path, error) -> None:
        """Every member inside a shard file of this folder (a read of its size allocates it
        first: an index may not ask for more than the shard holds), every sample a member."""
        sizes: dict[str, int] = {}
        for name, (shard, offset, size) in self.entries.items():
            if shard not in sizes:
                if outside_folder(shard) or "/" in shard or not (self.root / shard).is_file():
                    raise error(f"{index}: shard {shard!r} is not a file of its folder")
                sizes[shard] = (self.root / shard).stat().st_size
            if offset < 0 or size < 0 or offset + size > sizes[shard]:
                raise error(f"{index}: {name!r} lies outside {shard} ({sizes[shard]} bytes)")
        missing = [m for m, _, _ in self.samples or [] if m not in self.entries]
        if missing:
            raise error(f"{index}: sample {missing[0]!r} is not among the shards' files")

    def _scan(self) -> None:
        """Entries and samples of tars without an index: ``<key>.<image suffix>`` members with
        their ``<key>.cls`` labels."""
        from vistra.data.image_files import IMAGE_SUFFIXES

        tars = sorted(self.root.glob("*.tar"))
        if not tars:
            raise FileNotFoundError(f"{self.root}: no index.json and no .tar shards")
        self.entries, self.samples, labels = {}, [], {}
        for tar in tars:
            with tarfile.open(tar) as archive:
                for member in archive:
                    if not member.isfile():
                        continue
                    self.entries[member.name] = (tar.name, member.offset_data, member.size)
                    key, _, suffix = member.name.rpartition(".")
                    if f".{suffix.lower()}" in IMAGE_SUFFIXES:
                        self.samples.append((member.name, key))
                    elif suffix == "cls":
                        labels[key] = int(archive.extractfile(member).read().decode().strip())
        self.samples = [(member, labels.get(key, UNLABELLED), member)
                        for member, key in self.samples]  # fmt: skip
        self.classes = []

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}}

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
        handle = self._files.get(shard)
        if handle is None:
            handle = self._files[shard] = open(self.root / shard, "rb")  # noqa: SIM115
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

    def open_binary(self) -> BinaryIO:
        """Its bytes as a file object (``vistra.data.image_files.open_binary``)."""
        return io.BytesIO(self.read_bytes())


def is_shard_folder(path: str | Path) -> bool:
    index = Path(path) / INDEX
    if not index.is_file():
        return False
    try:
        return json.loads(index.read_text()).get("format") in (FORMAT, *OLD_FORMATS)
    except (OSError, ValueError, AttributeError):
        return False


def image_folder(path: str | Path) -> Path | ShardFolder:
    """``path`` as a ``ShardFolder`` when it holds shards, else as a ``Path``."""
    return ShardFolder(path) if is_shard_folder(path) else Path(path)
