"""CIFAR-10 / CIFAR-100 "python version" batches from a local folder; never downloads."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import CIFAR10, CIFAR100

from vistra.data.sources.base import ImageSource

_VARIANTS = {
    "cifar10": (
        CIFAR10,
        "cifar-10-batches-py",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "cifar100": (
        CIFAR100,
        "cifar-100-python",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ),
}


class CIFARSource(ImageSource):
    """The CIFAR python batches under ``root`` (``root/cifar-10-batches-py/data_batch_1``...).

    Args:
        root: folder that holds the extracted ``cifar-10-batches-py`` or ``cifar-100-python``.
        variant: "cifar10" or "cifar100".
        split: "train" or "test".
    """

    def __init__(self, root: str | Path, variant: str = "cifar10", split: str = "train") -> None:
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {sorted(_VARIANTS)}, got {variant!r}")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        dataset_class, folder, url = _VARIANTS[variant]
        self.origin = str(Path(root) / folder)
        if not (Path(root) / folder).is_dir():
            raise FileNotFoundError(
                f"{Path(root) / folder}: CIFAR batches not found. vistra never downloads: fetch "
                f"{url} yourself and extract it into {root}"
            )
        try:
            dataset = dataset_class(str(root), train=split == "train", download=False)
        except RuntimeError as error:
            raise ValueError(
                f"{self.origin}: incomplete or corrupt CIFAR batches ({error})"
            ) from error
        self.items = list(dataset.data)  # HxWx3 uint8 arrays
        self.labels = [int(label) for label in dataset.targets]
        self.classes = list(dataset.classes)
        self._check_not_empty()
