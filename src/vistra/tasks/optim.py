"""Optimizer recipes shared by the tasks: weight-decay groups, SGD/LARS/AdamW, cosine + warmup."""

from __future__ import annotations

import math

import torch
from timm.optim import Lars, param_groups_weight_decay
from torch import nn

OPTIMIZERS = ("sgd", "lars", "adamw")


def build_optimizer(
    module: nn.Module | list,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """Norm and bias parameters get no weight decay (``module.no_weight_decay()`` is honoured)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if isinstance(module, nn.Module):
        skip = module.no_weight_decay() if hasattr(module, "no_weight_decay") else ()
        params = param_groups_weight_decay(module, weight_decay, no_weight_decay_list=skip)
    else:
        params = module
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "lars":
        return Lars(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 over ``warmup_steps``, then half-cosine to ``min_ratio`` x lr."""
    total_steps = max(total_steps, 1)
    warmup_steps = min(max(warmup_steps, 0), total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def training_steps(trainer) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) of ``trainer.fit``.

    Not ``trainer.estimated_stepping_batches``: called from ``configure_optimizers`` it sets up
    the training loader before Lightning restores a checkpoint, and the loader's saved position
    is then never loaded, so a mid-epoch resume would replay the epoch from its start.
    """
    batches = len(trainer.datamodule.train_dataloader()) // max(trainer.world_size, 1)
    limit = trainer.limit_train_batches
    batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    per_epoch = max(math.ceil(batches / trainer.accumulate_grad_batches), 1)
    total = per_epoch * max(trainer.max_epochs or 1, 1)
    if trainer.max_steps is not None and trainer.max_steps > 0:
        total = (
            min(total, trainer.max_steps)
            if trainer.max_epochs not in (None, -1)
            else trainer.max_steps
        )
    return per_epoch, total
