"""Training randomness that a checkpoint restores exactly: each step's generators are seeded
from (run seed, epoch, batch, rank).

What a training step draws (dropout, MAE's random masks, Mask2Former's point sampling) then
depends only on where the run is, which the checkpoint records, and not on what
else consumed random numbers before it (a data loader's worker seeds, a sanity check, a resume
that skipped half an epoch). So a run resumed mid-epoch with ``--ckpt_path`` draws exactly
what the uninterrupted run drew. Data augmentation is seeded per sample already
(``vistra.data.sampling``).

What belongs to one image (its MAE mask, the points its masks are scored on) is drawn from
that image's own generator, seeded by the image's place in the epoch's order
(``sample_seeds``). Those draws are then the same whether a global batch of 64 runs on one
process or as 4 x 16 on four, so a run's first step equals the single-process step.
"""

from __future__ import annotations

import os

import lightning as L
import torch

_MODULUS = 2**63 - 1


def run_seed() -> int:
    """The run's seed (the config's ``seed_everything``, which Lightning exports)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int) -> int:
    """A seed for one (epoch, batch, rank): distinct ranks draw distinct dropout masks."""
    return (((seed * 1_000_003 + epoch) * 10_000_019 + batch_idx) * 1_009 + rank) % _MODULUS


def sample_seeds(
    seed: int, epoch: int, batch_idx: int, batch_size: int, count: int, rank: int, world: int
) -> list[int]:
    """Seeds of the ``count`` images of one rank's training batch.

    Rank r's sampler takes every ``world``-th key of the epoch's order, so its j-th image of
    batch k sits at ``world * (k * batch_size + j) + r`` of that order: on one process with a
    ``world`` times larger batch, the same image has the same place and the same seed.
    """
    first = world * batch_idx * batch_size + rank
    return [((seed * 1_000_033 + epoch) * 10_000_079 + first + world * j) % _MODULUS
            for j in range(count)]  # fmt: skip


class StepSeeding(L.Callback):
    """Reseed torch's CPU generator and the model's accelerator generator before every
    training batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        value = step_seed(run_seed(), trainer.current_epoch, batch_idx, trainer.global_rank)
        torch.default_generator.manual_seed(value)
        device = pl_module.device
        if device.type != "cpu":  # torch.cuda / torch.mps / torch.xpu: the current device's
            getattr(torch, device.type).manual_seed(value)
