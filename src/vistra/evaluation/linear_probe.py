"""A linear probe trained on cached features of a frozen encoder.

The encoder is frozen, so its features of the (un-augmented) images can be computed once and
the classifier trained on them for many epochs in a second or two. The Lightning
``LinearProbe`` task is the general route (augmented crops, any dataset size, multi-GPU); this
is the fast one the demos use.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def fit_linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    num_classes: int,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 0.1,
    weight_decay: float = 0.0,
    feature_norm: bool = True,
    seed: int = 0,
) -> nn.Module:
    """Train ``[BatchNorm1d without affine] -> Linear`` with SGD (momentum 0.9, cosine decay).

    Args:
        train_features: [N, D] encoder features; train_labels: [N] in 0..num_classes-1.

    Returns:
        the trained head in eval mode: ``head(features [M, D]) -> logits [M, num_classes]``.
    """
    if train_features.ndim != 2 or len(train_features) != len(train_labels):
        raise ValueError(
            f"need features [N, D] and labels [N], got {tuple(train_features.shape)} and "
            f"{tuple(train_labels.shape)}"
        )
    generator = torch.Generator().manual_seed(seed)
    width = train_features.shape[1]
    norm = nn.BatchNorm1d(width, affine=False) if feature_norm else nn.Identity()
    head = nn.Sequential(norm, nn.Linear(width, num_classes))
    with torch.no_grad():
        head[1].weight.normal_(0, 0.01, generator=generator)
        head[1].bias.zero_()
    optimizer = torch.optim.SGD(head.parameters(), lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_features) / batch_size)
    total_steps = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))
    )
    features, labels = train_features.float(), train_labels.long()
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(features), generator=generator)
        for batch in order.split(batch_size):
            loss = F.cross_entropy(head(features[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return head.eval()


@torch.no_grad()
def top_k_accuracy(logits: Tensor, labels: Tensor, k: int = 1) -> float:
    """Fraction of rows whose label is among the ``k`` highest logits: [N, C], [N] -> float."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(dim=1).float().mean().item()
