"""Reproducible, resumable training order and augmentation.

The order of an epoch is a permutation seeded by (seed, epoch), and every sample's augmentation
is seeded by (seed, epoch, index), so a run does not depend on worker count or on the global
random state. A ``ResumableDataLoader`` tells Lightning how far into the epoch it got, so a run
killed mid-epoch and resumed with ``--ckpt_path last`` sees exactly the batches it had left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


class EpochSampler(DistributedSampler):
    """Yields ``(epoch, index)`` keys; shuffled by a permutation seeded from (seed, epoch).

    Under a distributed run each of the ``num_replicas`` ranks takes every ``num_replicas``-th
    key of the same permutation (padded by its first keys to a multiple of the rank count, as
    torch's ``DistributedSampler`` does). Being a ``DistributedSampler``, Lightning uses it as
    it is instead of wrapping it, so a resumed rank skips what it had trained on."""

    def __init__(
        self, size: int, shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0
    ) -> None:
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed)  # fmt: skip
        self._skip = 0  # samples to leave out at the start of the next pass (resume)

    def resume(self, epoch: int, samples_done: int) -> None:
        self.epoch, self._skip = epoch, samples_done

    def __iter__(self) -> Iterator[tuple[int, int]]:
        size = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(size, generator=generator).tolist()
        else:
            order = list(range(size))
        order += order[: self.total_size - size]
        skip, self._skip = self._skip, 0
        for index in order[self.rank :: self.num_replicas][skip:]:
            yield self.epoch, index


def training_sampler(size: int, seed: int, trainer) -> EpochSampler:
    """The shuffled training sampler for this process's rank (one process: all keys)."""
    if trainer is None:
        return EpochSampler(size, shuffle=True, seed=seed)
    return EpochSampler(size, shuffle=True, seed=seed, num_replicas=trainer.world_size,
                        rank=trainer.global_rank)  # fmt: skip


class SeededAugmentation(Dataset):
    """``source[index]`` passed through ``transform`` with randomness seeded by the key.

    ``__getitem__((epoch, index))`` returns ``(transform(image), label)``, or with
    ``with_target`` ``transform(image, target)`` (detection: boxes and masks move too).
    """

    def __init__(
        self, source: Dataset, transform: Callable, seed: int = 0, with_target: bool = False
    ) -> None:
        self.source, self.transform, self.seed = source, transform, seed
        self.with_target = with_target

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        image, label = self.source[index]
        with torch.random.fork_rng(devices=[]):
            # Only the CPU generator: torch.manual_seed also queues a seed for every lazily
            # initialised accelerator backend and records a stack trace for each.
            torch.default_generator.manual_seed(
                (self.seed * 1_000_003 + epoch) * 10_000_019 + index
            )
            if self.with_target:
                return self.transform(image, label)
            return self.transform(image), label


class ResumableDataLoader(DataLoader):
    """A DataLoader over an ``EpochSampler`` with Lightning's ``state_dict`` protocol."""

    def __iter__(self):
        self._batches_yielded = 0
        for batch in super().__iter__():
            self._batches_yielded += 1
            yield batch

    def state_dict(self) -> dict:
        return {
            "epoch": self.sampler.epoch,
            "batches_yielded": getattr(self, "_batches_yielded", 0),
        }

    def load_state_dict(self, state: dict) -> None:
        # Lightning takes this state before fetching the next batch, so every batch handed out
        # has been trained on (tests/test_resume.py pins this down).
        done = state["batches_yielded"]
        if done >= len(self):
            return  # the epoch had finished: start the next one from its beginning
        self.sampler.resume(state["epoch"], done * self.batch_size)


def evaluation_sampler(dataset, trainer) -> Sampler | None:
    """Under a distributed run, each image on exactly one rank (ranks may get one image more
    than others); None on one process. Lightning's default sampler pads the last ranks with
    repeated images, which would count those images twice in AP, PQ, mIoU and top-1."""
    if trainer is None or trainer.world_size <= 1:
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size,
                                        rank=trainer.global_rank, shuffle=False)  # fmt: skip
