"""Inputs of inference: images from files, folders, arrays and tensors, and their output names."""

from __future__ import annotations

import glob
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from vistra.data.image_files import IMAGE_SUFFIXES, as_rgb, load_image

# Segmentation upsamples every query's mask logits (and every class's score) to the output
# size: memory grows with its pixel count. Maps of larger images are made at a reduced size
# (2048 x 2048: full size for Cityscapes and camera photos up to 4 MP).
MAX_MAP_PIXELS = 2048 * 2048


class InputError(ValueError):
    """An input that cannot be read as an image (the message names it)."""


def to_pil(item, where: str = "input") -> Image.Image:
    """A path, PIL image, HxWx3 array or 3xHxW tensor -> an RGB PIL image."""
    if isinstance(item, (str, Path)):
        return load_image(item)
    if isinstance(item, Image.Image):
        return as_rgb(item)
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3:
            raise InputError(f"{where}: expected an H x W x 3 array, got shape {item.shape}")
        return Image.fromarray(item.astype(np.uint8))
    torch = sys.modules.get("torch")  # a tensor can only come from a program that has torch
    if torch is not None and isinstance(item, torch.Tensor):
        if item.ndim != 3 or item.shape[0] != 3:
            raise InputError(f"{where}: expected a 3 x H x W tensor, got {tuple(item.shape)}")
        array = item.detach().cpu()
        if array.is_floating_point():
            array = (array.clamp(0, 1) * 255).round()
        return Image.fromarray(array.to(torch.uint8).permute(1, 2, 0).numpy())
    raise InputError(f"{where}: cannot read a {type(item).__name__} as an image")


def map_size(height: int, width: int, limit: int = MAX_MAP_PIXELS) -> tuple[int, int]:
    """The size of a segmentation map for a ``height x width`` image: the image's own, or
    reduced (aspect kept) to at most ``limit`` pixels."""
    if height * width <= limit:
        return height, width
    scale = (limit / (height * width)) ** 0.5
    return max(1, int(height * scale)), max(1, int(width * scale))


def find_images(spec: str) -> list[tuple[Path, Path]]:
    """A file, a folder (its images at any depth, sorted) or a glob pattern -> ``(path, name)``
    pairs; ``name`` is the path relative to the folder (the file name otherwise) and names the
    outputs, so sub-folders are kept apart. Only regular files are inputs (a FIFO or a device
    named like an image would block the run): others are named on stderr and left out."""
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        pairs = [(p, p.relative_to(path)) for p in _regular(found)]
        if not pairs:
            raise FileNotFoundError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in folder")
        return pairs
    matches = [path] if path.exists() else sorted(
        Path(p) for p in glob.glob(spec) if Path(p).suffix.lower() in IMAGE_SUFFIXES)  # fmt: skip
    pairs = [(p, Path(p.name)) for p in _regular(matches)]
    if not pairs:
        raise FileNotFoundError(f"{spec}: no such file or folder, and no image matches it")
    return pairs


def _regular(paths: list[Path]) -> list[Path]:
    kept = []
    for p in paths:
        if p.is_file():  # follows a link to a regular file; False for FIFOs, devices, folders
            kept.append(p)
        elif not p.is_dir():
            print(f"skipped {p}: not a regular file", file=sys.stderr)
    return kept


def output_stems(names: list[Path]) -> dict[Path, Path]:
    """The output name (without suffix) of each input: its name without the suffix, or with
    it where two inputs differ only by suffix (``a.jpg`` and ``a.png`` -> ``a.jpg``,
    ``a.png``), so that no output overwrites another."""
    stems = [name.with_suffix("") for name in names]
    counts = Counter(stems)
    return {name: (name if counts[stem] > 1 else stem) for name, stem in zip(names, stems)}
