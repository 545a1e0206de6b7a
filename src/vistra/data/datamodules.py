"""LightningDataModules: one per task family, all built on ``ImageSource``s."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from vistra.data.preprocess import Preprocess
from vistra.data.sampling import (
    ResumableDataLoader,
    SeededAugmentation,
    evaluation_sampler,
    training_sampler,
)
from vistra.data.sources import ImageSource
from vistra.data.transforms import (
    MultiView,
    classification_train_transform,
    contrastive_transform,
)


class TransformedSource(Dataset):
    """``source[index]`` through a fixed (evaluation) transform: ``(transform(image), label)``,
    or ``transform(image, target)`` with ``with_target`` (detection)."""

    def __init__(self, source: Dataset, transform, with_target: bool = False) -> None:
        self.source, self.transform, self.with_target = source, transform, with_target

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        image, label = self.source[index]
        if self.with_target:
            return self.transform(image, label)
        return self.transform(image), label


class ImageDataModule(L.LightningDataModule):
    """Shared loader plumbing: seeded resumable training order, eval loaders, workers.

    Args:
        train: training source.
        val: held-out source (validation and test).
        image_size: side of the square network input.
        batch_size: per-device batch size.
        num_workers: loader processes (0 = in the main process).
        seed: seed of the epoch order and of every augmentation.
        knn_bank: validation yields two loaders for the kNN monitor: the training images
            without augmentation (the memory bank), then the held-out images.
    """

    def __init__(
        self,
        train: ImageSource,
        val: ImageSource | None = None,
        image_size: int = 32,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        knn_bank: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.train_source, self.val_source = train, val
        self.image_size, self.batch_size = image_size, batch_size
        self.num_workers, self.seed, self.knn_bank = num_workers, seed, knn_bank

    @property
    def classes(self) -> list[str]:
        """Class names, index = label (empty for unlabelled data)."""
        return self.train_source.classes

    @property
    def classes_origin(self) -> str:
        """The file or folder the classes come from (for messages)."""
        return self.train_source.origin

    @property
    def preprocess(self) -> Preprocess:
        """The evaluation (and inference) input: shorter side to ``image_size``, centre crop."""
        return Preprocess("center_crop", self.image_size)

    def train_transform(self):
        raise NotImplementedError

    def _loader_options(self) -> dict:
        pin = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return dict(
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=pin,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = SeededAugmentation(self.train_source, self.train_transform(), self.seed)
        sampler = training_sampler(len(dataset), self.seed, self.trainer)
        if len(dataset) < self.batch_size:
            raise ValueError(
                f"{self.train_source.origin}: {len(dataset)} images, fewer than one batch of "
                f"{self.batch_size}"
            )
        return ResumableDataLoader(
            dataset, sampler=sampler, drop_last=True, **self._loader_options()
        )

    def eval_loader(self, source: ImageSource) -> DataLoader:
        dataset = TransformedSource(source, self.preprocess.transform())
        sampler = evaluation_sampler(dataset, self.trainer)
        return DataLoader(dataset, shuffle=False, sampler=sampler, **self._loader_options())

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        if self.val_source is None:
            return []
        if self.knn_bank:
            return [self.eval_loader(self.train_source), self.eval_loader(self.val_source)]
        return self.eval_loader(self.val_source)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        """The held-out images (not the kNN bank)."""
        return [] if self.val_source is None else self.eval_loader(self.val_source)


class ContrastiveDataModule(ImageDataModule):
    """Two (or more) augmented views per image: batches ``(views [B, V, 3, H, W], labels [B])``.

    ``knn_bank`` is on by default: validation feeds the kNN monitor.

    Args:
        views: augmented views per image (paper: 2).
        crop_scale: RandomResizedCrop scale range (SimCLR/SupCon: 0.2..1.0 for CIFAR).
        horizontal_flip: turn off for data where a mirror image is another class.
    """

    def __init__(
        self,
        train: ImageSource,
        val: ImageSource | None = None,
        image_size: int = 32,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        views: int = 2,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        horizontal_flip: bool = True,
        knn_bank: bool = True,
    ) -> None:
        super().__init__(train, val, image_size, batch_size, num_workers, seed, knn_bank)
        self.views, self.crop_scale, self.horizontal_flip = views, crop_scale, horizontal_flip

    def train_transform(self):
        view = contrastive_transform(self.image_size, self.crop_scale, self.horizontal_flip)
        return MultiView(view, self.views)


class ClassificationDataModule(ImageDataModule):
    """Single augmented view per image: batches ``(images [B, 3, H, W], labels [B])``.

    Also the MAE pre-training data: crop_scale (0.2, 1.0), flip, ``knn_bank: true``.

    Args:
        crop_scale: RandomResizedCrop scale range for training.
        horizontal_flip: random horizontal flip for training.
        rand_augment: RandAugment (2 ops, magnitude 9) for fine-tuning.
        random_erasing: probability of random erasing (MAE fine-tuning: 0.25).
    """

    def __init__(
        self,
        train: ImageSource,
        val: ImageSource | None = None,
        image_size: int = 32,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        horizontal_flip: bool = True,
        knn_bank: bool = False,
        rand_augment: bool = False,
        random_erasing: float = 0.0,
    ) -> None:
        super().__init__(train, val, image_size, batch_size, num_workers, seed, knn_bank)
        self.crop_scale, self.horizontal_flip = crop_scale, horizontal_flip
        self.rand_augment, self.random_erasing = rand_augment, random_erasing

    def train_transform(self):
        return classification_train_transform(
            self.image_size,
            self.crop_scale,
            self.horizontal_flip,
            self.rand_augment,
            self.random_erasing,
        )
