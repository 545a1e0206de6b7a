"""``vistra data shard``: an image source written into tar shards (the WebDataset layout).

Each sample is ``<key>.<ext>`` (the image file's bytes as they were: no re-encoding),
``<key>.cls`` (its label, absent for unlabelled images) and ``<key>.json`` (its name in the
source); the shards are ``shard-000000.tar``, ... with ``index.json`` beside them, which
records the classes and where each image's bytes sit in its shard (so reading needs no scan).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from vistra.data.shard_files import FILES_FORMAT, INDEX
from vistra.data.sources.base import UNLABELLED, ImageSource

FORMAT = "vistra-shards-1"


def image_bytes(source: ImageSource, index: int) -> tuple[bytes, str]:
    """The file's own bytes and suffix; in-memory images encoded as PNG."""
    item = source.items[index]
    if isinstance(item, np.ndarray):
        buffer = io.BytesIO()
        Image.fromarray(item).save(buffer, format="PNG")
        return buffer.getvalue(), "png"
    path = Path(item)
    return path.read_bytes(), path.suffix.lower().lstrip(".") or "jpg"


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> int:
    """Append ``name`` with ``data``; returns the offset of the data in the tar file."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    header = info.tobuf(archive.format, archive.encoding, archive.errors)
    start = archive.offset
    archive.addfile(info, io.BytesIO(data))
    return start + len(header)


def write_shards(source: ImageSource, out: str | Path, shard_size: int = 1000) -> Path:
    """Write ``source`` into ``out/shard-NNNNNN.tar`` of ``shard_size`` images; returns the
    index file."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {shard_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    with tqdm(total=len(source), desc="shard", unit="image") as progress:
        for start in range(0, len(source), shard_size):
            name = f"shard-{len(shards):06d}.tar"
            with tarfile.open(out / name, "w") as archive:
                stop = min(start + shard_size, len(source))
                samples = [add_sample(archive, source, index) for index in range(start, stop)]
            shards.append({"file": name, "samples": samples})
            progress.update(len(samples))
    index = {"format": FORMAT, "origin": str(source.origin), "classes": list(source.classes),
             "shards": shards}  # fmt: skip
    (out / INDEX).write_text(json.dumps(index))
    return out / INDEX


def add_sample(archive: tarfile.TarFile, source: ImageSource, index: int) -> list:
    """Image, label and name of ``source[index]`` -> ``[name, offset, size, label]``."""
    key = f"{index:09d}"
    data, suffix = image_bytes(source, index)
    label = source.labels[index]
    offset = add_member(archive, f"{key}.{suffix}", data)
    if label != UNLABELLED:
        add_member(archive, f"{key}.cls", str(label).encode())
    name = source.item_name(index).as_posix()
    add_member(archive, f"{key}.json", json.dumps({"name": name}).encode())
    return [name, offset, len(data), label]


def write_file_shards(files: list[tuple[str, Path]], out: str | Path, shard_size: int) -> Path:
    """Files by relative name -> ``out/shard-NNNNNN.tar`` of ``shard_size`` files each, and
    ``out/index.json`` (``vistra.data.shard_files``); returns ``out``."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {shard_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries, shard_names = {}, []
    with tqdm(total=len(files), desc=f"shard {out.name}", unit="file") as progress:
        for start in range(0, len(files), shard_size):
            shard = f"shard-{len(shard_names):06d}.tar"
            with tarfile.open(out / shard, "w") as archive:
                for name, path in files[start : start + shard_size]:
                    data = Path(path).read_bytes()
                    entries[name] = [shard, add_member(archive, name, data), len(data)]
                    progress.update(1)
            shard_names.append(shard)
    index = {"format": FILES_FORMAT, "shards": shard_names, "files": entries}
    (out / INDEX).write_text(json.dumps(index))
    return out
