"""A COCO ``segmentation`` checked before pycocotools sees it: pycocotools trusts its input
(an RLE whose counts overrun the image makes it write or loop far past the mask, a NaN
polygon rasterises to garbage), so every reader asks ``segmentation_problem`` first."""

from __future__ import annotations

import math


def segmentation_problem(segmentation, height: int, width: int) -> tuple[str, str] | None:
    """Why ``segmentation`` (polygons, or RLE with counts as a list or COCO's compressed
    string) is not a mask of a ``height x width`` image, as (the sub-field: ``""``, ``"[k]"``,
    ``".size"``, ``".counts"``; the message); ``None`` when it is one."""
    if isinstance(segmentation, list):
        return _polygons_problem(segmentation)
    if not isinstance(segmentation, dict):
        return "", "neither polygons nor RLE"
    size = segmentation.get("size")
    if size != [height, width]:
        return ".size", f"RLE size {size!r} differs from the image's [{height}, {width}]"
    counts = segmentation.get("counts")
    if counts is None:
        return ".counts", "missing"
    if isinstance(counts, str):
        counts = compressed_counts(counts)
        if counts is None:
            return ".counts", "not COCO's compressed RLE string"
    elif not (isinstance(counts, list) and all(_count(c) for c in counts)):
        return ".counts", "must be a list of non-negative integers or a compressed string"
    total = sum(counts)
    if total != height * width:
        return ".counts", f"runs sum to {total}, not height x width = {height * width}"
    return None


def _polygons_problem(polygons: list) -> tuple[str, str] | None:
    if not polygons:
        return "", "empty polygon list"
    for k, polygon in enumerate(polygons):
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            return f"[{k}]", "polygon needs >= 3 (x, y) points"
        if not all(_finite(v) for v in polygon):
            return f"[{k}]", "polygon holds a value that is not a finite number"
    return None


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def compressed_counts(text: str) -> list[int] | None:
    """The run lengths of COCO's compressed RLE string (pycocotools' ``rleFrString``: 5 bits a
    character from ``chr(48)``, 0x20 continues a number, 0x10 signs its last character, and
    from the third run on each number is the difference to the run two before), or ``None``
    if it is malformed (a character out of range, a number left open, a negative run)."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position == len(text):
                return None  # a number left open
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                return None
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        if value < 0:
            return None
        counts.append(value)
    return counts
