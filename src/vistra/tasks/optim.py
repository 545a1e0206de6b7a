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
    layer_decay: float | None = None,
    fused: bool = True,
) -> torch.optim.Optimizer:
    """Norm and bias parameters get no weight decay (``module.no_weight_decay()`` is honoured).

    ``layer_decay``: see ``param_groups_layer_decay``.
    ``fused``: AdamW runs its fused kernel where every parameter's device has one (one kernel
    over all parameters instead of a loop over them; ``benchmarks/mae.py --optimizer``). Pass
    ``fused_allowed(trainer)``: Lightning refuses to clip gradients of a fused optimizer under
    mixed precision.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    if isinstance(module, nn.Module):
        skip = module.no_weight_decay() if hasattr(module, "no_weight_decay") else ()
        if layer_decay is None:
            params = param_groups_weight_decay(module, weight_decay, no_weight_decay_list=skip)
        else:
            params = param_groups_layer_decay(module, lr, weight_decay, layer_decay, skip)
    else:
        params = module
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "lars":
        return Lars(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    fused = fused and _fused_kernel_for(params)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)


def adamw(params: list, trainer, **options) -> torch.optim.AdamW:
    """AdamW over ``params`` (tensors or groups), fused where ``build_optimizer`` would be."""
    fused = fused_allowed(trainer) and _fused_kernel_for(params)
    return torch.optim.AdamW(params, fused=fused, **options)


def fused_allowed(trainer) -> bool:
    """False when ``trainer`` clips gradients under mixed precision: Lightning refuses to
    clip there with a fused optimizer (it cannot unscale fp16 gradients before the step)."""
    if trainer is None or not trainer.gradient_clip_val:
        return True
    return "mixed" not in str(trainer.precision)


def _fused_kernel_for(params: list) -> bool:
    """Whether every tensor in ``params`` (tensors or param groups) can take the fused step."""
    tensors = [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]
    supported = ("cpu", "cuda", "mps", "xpu")
    return bool(tensors) and all(p.device.type in supported and p.is_floating_point()
                                 for p in tensors)  # fmt: skip


def param_groups_layer_decay(
    module: nn.Module, lr: float, weight_decay: float, layer_decay: float, skip=()
) -> list[dict]:
    """Layer-wise lr decay as in MAE / BEiT fine-tuning.

    With L = ``module.num_layers``, parameter layer l = ``module.layer_of(name)`` in 0..L gets
    lr x layer_decay ** (L - l): the embeddings the smallest rate, the head the full rate.
    (timm's version puts the final norm with the last block, which is not the MAE recipe.)
    Norms, biases and ``skip`` names get no weight decay.
    """
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        layer = module.layer_of(name)
        no_decay = param.ndim <= 1 or name in skip
        group = groups.setdefault(
            (layer, no_decay),
            {
                "params": [],
                "lr": lr * layer_decay ** (module.num_layers - layer),
                "weight_decay": 0.0 if no_decay else weight_decay,
            },
        )
        group["params"].append(param)
    return list(groups.values())


def dense_parameter_groups(
    network: nn.Module,
    lr: float,
    backbone_lr: float,
    layer_decay: float | None = None,
    no_decay=lambda name, param: False,
) -> list[dict]:
    """AdamW groups of a detector or segmenter with ``network.backbone``.

    A timm backbone trains at ``backbone_lr``. A ViT backbone (a module with ``layer_of``:
    ``ViTPyramid``) is decayed layer by layer as ViTDet does: its layer l of L = ``num_layers``
    at ``backbone_lr x layer_decay ** (L - l)`` (``layer_decay`` None: the backbone's own), its
    norms, biases and ``no_weight_decay()`` names without weight decay; its feature pyramid,
    new at fine-tuning, trains with the rest. The rest trains at ``lr``, without weight decay
    where ``no_decay(name, param)`` says so. Frozen parameters are left out.
    """
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    vit = next((m for m in network.backbone.modules() if hasattr(m, "layer_of")), None)
    vit_layers: dict[int, tuple[int, bool]] = {}
    if vit is not None:
        decay = vit.layer_decay if layer_decay is None else layer_decay
        skip = vit.no_weight_decay()
        for name, param in vit.named_parameters():
            layer = vit.layer_of(name)
            if layer is not None:
                vit_layers[id(param)] = (layer, param.ndim <= 1 or name in skip)
    backbone_ids = {id(p) for p in network.backbone.parameters()}
    groups: dict[tuple, dict] = {}

    def add(key: tuple, param, group_lr: float, decayed: bool) -> None:
        group = groups.setdefault(key, {"params": [], "lr": group_lr})
        if not decayed:
            group["weight_decay"] = 0.0
        group["params"].append(param)

    for name, param in network.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in vit_layers:
            layer, exempt = vit_layers[id(param)]
            scale = decay ** (vit.num_layers - layer)
            add(("vit", layer, exempt), param, backbone_lr * scale, not exempt)
        elif id(param) in backbone_ids and vit is None:
            add(("backbone",), param, backbone_lr, True)
        else:
            exempt = bool(no_decay(name, param))
            add(("rest", exempt), param, lr, not exempt)
    return list(groups.values())


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

    return planned(torch.optim.lr_scheduler.LambdaLR(optimizer, factor), total_steps)


def poly_with_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, power: float = 0.9
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, times (1 - step / total) ** power (detectron2's
    "WarmupPolyLR", which Mask2Former trains with)."""

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        return warm * max(1 - step / max(total_steps, 1), 0.0) ** power

    return planned(torch.optim.lr_scheduler.LambdaLR(optimizer, factor), total_steps)


def planned(scheduler, total_steps: int):
    """``scheduler`` whose factor is marked with the run length its shape follows
    (``planned_steps``): a run continued to another length cannot follow one schedule
    (``engine.run_length``). On the factor function, not the scheduler, whose attributes its
    saved state would bring back from a checkpoint."""
    for factor in scheduler.lr_lambdas:
        factor.planned_steps = int(total_steps)
    return scheduler


def training_steps(trainer) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) of ``trainer.fit``.

    Counted from the datamodule's loader rather than ``trainer.estimated_stepping_batches``:
    called from ``configure_optimizers`` that sets up the training loader before Lightning
    restores a checkpoint, and the loader's saved position is then never loaded, so a mid-epoch
    resume would replay the epoch from its start. Without a datamodule we fall back to it.
    """
    if trainer.datamodule is None:
        total = int(trainer.estimated_stepping_batches)
        return max(total // max(trainer.max_epochs or 1, 1), 1), total
    batches = len(trainer.datamodule.train_dataloader()) // max(trainer.world_size, 1)
    limit = trainer.limit_train_batches
    batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    per_epoch = max(math.ceil(batches / trainer.accumulate_grad_batches), 1)
    epochs_bounded = trainer.max_epochs is not None and trainer.max_epochs > 0
    total = per_epoch * trainer.max_epochs if epochs_bounded else trainer.max_steps
    if trainer.max_steps is not None and trainer.max_steps > 0:
        total = min(total, trainer.max_steps)
    return per_epoch, max(total, 1)


def with_cosine_schedule(optimizer: torch.optim.Optimizer, trainer, warmup_epochs: float) -> dict:
    """``configure_optimizers``'s answer: the optimizer with per-step warm-up + cosine decay."""
    steps_per_epoch, total = training_steps(trainer)
    scheduler = cosine_with_warmup(optimizer, round(warmup_epochs * steps_per_epoch), total)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def global_batch(trainer) -> int:
    """Images per optimizer step over the whole run: the data module's per-device batch times
    the processes (devices x nodes) times the gradient accumulation."""
    datamodule = getattr(trainer, "datamodule", None)
    batch = getattr(datamodule, "batch_size", None)
    if batch is None:
        raise ValueError("the learning rate scales with the batch: the data module must have "
                         "a batch_size")  # fmt: skip
    return batch * trainer.world_size * trainer.accumulate_grad_batches


def scaled_lr(base_lr: float, trainer) -> float:
    """The linear scaling rule of MAE (and of its fine-tuning and linear probe): the absolute
    learning rate is ``base_lr x global batch / 256``."""
    return base_lr * global_batch(trainer) / 256
