"""``vistra data shard``: files into tar shards (the one format of ``vistra.data.shard_files``).

An image source's samples are ``<key>.<ext>`` (the image file's bytes as they were: no
re-encoding), ``<key>.cls`` (its label, absent for unlabelled images) and ``<key>.json`` (its
name in the source), keys numbered in source order; a COCO set's files keep their relative
names. ``index.json`` beside the shards records where each member's bytes sit.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from vistra.data.shard_files import FORMAT, INDEX, UNLABELLED
from vistra.data.sources.base import ImageSource

# One sample: the members written side by side into one shard, each (name, bytes of it).
Sample = list[tuple[str, Callable[[], bytes]]]


def image_suffix(source: ImageSource, index: int) -> str:
    """The suffix of an image's own file (``png`` for in-memory images)."""
    item = source.items[index]
    if isinstance(item, np.ndarray):
        return "png"
    return Path(item).suffix.lower().lstrip(".") or "jpg"


def image_bytes(source: ImageSource, index: int) -> bytes:
    """The file's own bytes; in-memory images encoded as PNG."""
    item = source.items[index]
    if isinstance(item, np.ndarray):
        buffer = io.BytesIO()
        Image.fromarray(item).save(buffer, format="PNG")
        return buffer.getvalue()
    return Path(item).read_bytes()


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> int:
    """Append ``name`` with ``data``; returns the offset of the data in the tar file."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    header = info.tobuf(archive.format, archive.encoding, archive.errors)
    start = archive.offset
    archive.addfile(info, io.BytesIO(data))
    return start + len(header)


def write_samples(samples: list[Sample], out: str | Path, shard_size: int, index: dict,
                  what: str = "file") -> Path:  # fmt: skip
    """``samples`` into ``out/shard-NNNNNN.tar`` of ``shard_size`` samples each and
    ``out/index.json`` (``index`` plus the format, the shards and the members); returns
    ``out``."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {shard_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries, shards = {}, []
    with tqdm(total=len(samples), desc=f"shard {out.name}", unit=what) as progress:
        for start in range(0, len(samples), shard_size):
            shard = f"shard-{len(shards):06d}.tar"
            with tarfile.open(out / shard, "w") as archive:
                for sample in samples[start : start + shard_size]:
                    for name, content in sample:
                        data = content()
                        entries[name] = [shard, add_member(archive, name, data), len(data)]
                    progress.update(1)
            shards.append(shard)
    (out / INDEX).write_text(json.dumps({"format": FORMAT, **index, "shards": shards,
                                         "files": entries}))  # fmt: skip
    return out


def write_shards(source: ImageSource, out: str | Path, shard_size: int = 1000) -> Path:
    """An image source into shards; returns the index file."""
    samples, listed = [], []
    for position in range(len(source)):
        key, label = f"{position:09d}", source.labels[position]
        name = source.item_name(position).as_posix()
        suffix = image_suffix(source, position)
        sample = [(f"{key}.{suffix}", lambda p=position: image_bytes(source, p))]
        if label != UNLABELLED:
            sample.append((f"{key}.cls", lambda v=label: str(v).encode()))
        sample.append((f"{key}.json", lambda n=name: json.dumps({"name": n}).encode()))
        samples.append(sample)
        listed.append([f"{key}.{suffix}", int(label), name])
    index = {"origin": str(source.origin), "classes": list(source.classes), "samples": listed}
    return write_samples(samples, out, shard_size, index, "image") / INDEX


def write_file_shards(files: list[tuple[str, Path]], out: str | Path, shard_size: int) -> Path:
    """Files by relative name (a COCO set's images, its panoptic PNGs) into shards; returns
    ``out``."""
    samples = [[(name, lambda p=path: Path(p).read_bytes())] for name, path in files]
    return write_samples(samples, out, shard_size, {})
