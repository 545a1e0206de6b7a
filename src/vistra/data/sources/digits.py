"""The built-in digits set: the 1,797 real 8x8 handwritten digits that scikit-learn ships.

Upscaled to ``image_size`` and split once, stratified, with a fixed seed, so every demo and
test sees the same train/val images without downloading anything.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from vistra.data.sources.base import ImageSource

SPLITS = ("train", "val")


class DigitsSource(ImageSource):
    """scikit-learn's digits as RGB images; ``val_fraction`` of each class is held out.

    Args:
        split: "train" (1,437 images at the default fraction) or "val" (360).
        image_size: side of the upscaled square image.
        val_fraction: share of each class held out for "val".
        seed: seed of the stratified split.
    """

    def __init__(
        self, split: str = "train", image_size: int = 32, val_fraction: float = 0.2, seed: int = 0
    ) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        digits = load_digits()
        indices = np.arange(len(digits.target))
        train_idx, val_idx = train_test_split(
            indices, test_size=val_fraction, stratify=digits.target, random_state=seed
        )
        chosen = np.sort(train_idx if split == "train" else val_idx)
        self.origin = f"digits[{split}]"
        self.classes = [str(d) for d in range(10)]
        self.labels = [int(digits.target[i]) for i in chosen]
        self.items = [_upscale(digits.images[i], image_size) for i in chosen]


def _upscale(pixels: np.ndarray, size: int) -> np.ndarray:
    """8x8 intensities 0..16 -> size x size x 3 uint8 (white digit on black)."""
    gray = Image.fromarray((pixels * (255.0 / 16.0)).astype(np.uint8), mode="L")
    return np.asarray(gray.resize((size, size), Image.BICUBIC).convert("RGB"))
