"""Reading one image file as a person sees it, without torch (the ONNX route needs only this,
numpy and Pillow)."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# What every reader of image files takes for an image (folders, predict inputs, COCO panoptic).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Pillow's decoders for them, and no others: Pillow identifies a file by its content, and some
# of its plugins (EPS through Ghostscript, among others) hand the file to another program.
IMAGE_FORMATS = tuple(sorted({Image.registered_extensions()[s] for s in IMAGE_SUFFIXES}))


class DataError(ValueError):
    """A data file (image, annotation, label or panoptic PNG, list file) that cannot be used as
    it is; the message names the file and the field. The command prints it as one line."""


class ImageLoadError(DataError, RuntimeError):
    """An image file that is missing, unreadable or corrupt; the message names the file."""


class ImageTooLarge(ImageLoadError):
    """An image whose header claims more pixels than ``max_pixels()``."""


class UnsupportedImage(ImageLoadError):
    """An image in a format that is not one of ``IMAGE_FORMATS``."""


def as_rgb(image: Image.Image, upright: bool = True) -> Image.Image:
    """An RGB image as a person sees the file: turned by its EXIF orientation (``upright``),
    16- and 32-bit grey scaled to 8 bits (not clipped), palette and alpha images converted."""
    if upright:
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode != "F":  # integer grey: 16-bit range (PNG) unless the values say 8-bit
            values = values / 257.0 if values.max(initial=0) > 255 else values
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def open_binary(path) -> BinaryIO:
    """A binary file object for a file, or for anything that opens its own bytes (a shard
    member: ``vistra.data.shard_files.ShardMember``); ``FileNotFoundError`` if absent."""
    opener = getattr(path, "open_binary", None)
    return opener() if opener is not None else open(path, "rb")  # noqa: SIM115 - caller closes


def max_pixels() -> int:
    """The largest image decoded, in pixels: ``VISTRA_MAX_IMAGE_PIXELS``, else 178,956,970
    (Pillow's own refusal, twice its warning level): 3.4 GB of RGB at most, where a 69-byte
    file may claim 100000 x 100000."""
    value = os.environ.get("VISTRA_MAX_IMAGE_PIXELS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 2 * 89_478_485


def load_image(path: str | Path, upright: bool = True) -> Image.Image:
    """Open ``path`` as an RGB PIL image (see ``as_rgb``), raising ``ImageLoadError`` naming
    the file: missing, undecodable, not one of ``IMAGE_FORMATS``, or larger than
    ``max_pixels()`` (checked on the header, before anything is decoded)."""
    try:
        with open_binary(path) as handle:
            return _decode(handle, str(path), upright)
    except FileNotFoundError as error:
        raise ImageLoadError(f"{path}: image file not found") from error
    except OSError as error:  # unreadable (permissions, a folder, an I/O error)
        raise ImageLoadError(f"{path}: cannot read image ({error.strerror or error})") from error


def decode_image(data: bytes, name: str = "image", upright: bool = True) -> Image.Image:
    """``load_image`` for the bytes of an image file (an upload); ``name`` starts messages."""
    return _decode(io.BytesIO(data), name, upright)


def _decode(handle, name: str, upright: bool) -> Image.Image:
    limit = max_pixels()
    over = f"over the limit of {limit} pixels (VISTRA_MAX_IMAGE_PIXELS; a decompression bomb?)"
    try:
        with warnings.catch_warnings():
            # vistra's limit replaces Pillow's (its warning at half of it says nothing here)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(handle, formats=IMAGE_FORMATS) as image:
                if image.width * image.height > limit:
                    raise ImageTooLarge(f"{name}: {image.width} x {image.height}, {over}")
                return as_rgb(image, upright)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError:  # Pillow's own refusal, from the header alone
        raise ImageTooLarge(f"{name}: the header claims more pixels, {over}") from None
    except UnidentifiedImageError as error:
        raise _unidentified(handle, name) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"{name}: cannot read image ({error})") from error


def _unidentified(handle, name: str) -> ImageLoadError:
    """Not an image, or an image in a format vistra does not read (identified from its header
    alone, which decodes nothing)."""
    try:
        handle.seek(0)
        with Image.open(handle) as image:
            found = image.format
    except Exception:  # any failure to identify means the same: not an image
        return ImageLoadError(f"{name}: cannot read image (not an image file)")
    return UnsupportedImage(f"{name}: a {found} image; vistra reads {', '.join(IMAGE_FORMATS)}")


def walk_files(root: Path, follow_symlinks: bool = True):
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
