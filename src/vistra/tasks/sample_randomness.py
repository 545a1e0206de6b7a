"""Per-image generators for a training step's random draws (MAE masks, Mask2Former points).

Seeded by ``engine.seeding.sample_seeds``: the draws of an image do not depend on the world
size, the split of the global batch or a resume. Outside a ``Trainer`` fit (a model used on its
own, validation) there are none and the draws come from torch's global generator.
"""

from __future__ import annotations

import torch

from vistra.engine.seeding import run_seed, sample_seeds


def sample_generators(
    module, batch_idx: int, count: int, device: torch.device | str = "cpu"
) -> list[torch.Generator] | None:
    """One generator on ``device`` per image of the current training batch, or None."""
    trainer = getattr(module, "_trainer", None)
    if trainer is None or not trainer.training:
        return None
    loader = trainer.train_dataloader
    batch_size = getattr(loader, "batch_size", None) or count
    seeds = sample_seeds(run_seed(), trainer.current_epoch, batch_idx, batch_size, count,
                         trainer.global_rank, trainer.world_size)  # fmt: skip
    return [torch.Generator(device=device).manual_seed(value) for value in seeds]


def uniform_rows(
    generators: list[torch.Generator], length: int, device: torch.device | str
) -> torch.Tensor:
    """[len(generators), length] uniform noise, row i from generator i (drawn where the
    generators live, then moved)."""
    rows = [torch.rand(length, generator=g, device=g.device) for g in generators]
    return torch.stack(rows).to(device)
