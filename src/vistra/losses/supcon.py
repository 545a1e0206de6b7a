"""Supervised contrastive loss (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020).

The paper's L^sup_out form. For every anchor i (one augmented view of one image), with P(i) the
other views that share its label and A(i) every view except i itself:

    l_i = -(tau / tau_base) * 1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / tau)
                                                              / sum_{a in A(i)} exp(z_i.z_a / tau) )

and the loss is the mean of l_i over anchors that have at least one positive. Without labels the
only positives are the other views of the same image: this is SimCLR's NT-Xent.

Under DDP (``gather_distributed=True``, a process group initialised) the contrast set is the
global batch: features and labels are gathered from every rank with gradients flowing back to
the local ones, and each rank averages l_i over its own anchors. DDP's gradient averaging then
gives exactly the gradient of the loss on the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

CONTRAST_MODES = ("all", "one")


class SupConLoss(nn.Module):
    """SupCon / SimCLR loss on L2-normalised multi-view features.

    Args:
        temperature: tau in the formula (paper: 0.1 for its CIFAR runs, 0.07 by default).
        base_temperature: tau_base; the loss is scaled by tau / tau_base.
        contrast_mode: "all" uses every view as an anchor; "one" only the first view.
        gather_distributed: contrast against the global batch when running under DDP.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        base_temperature: float = 0.07,
        contrast_mode: str = "all",
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if temperature <= 0 or base_temperature <= 0:
            raise ValueError(
                f"temperature and base_temperature must be > 0, got {temperature}, "
                f"{base_temperature}"
            )
        if contrast_mode not in CONTRAST_MODES:
            raise ValueError(
                f"contrast_mode must be one of {CONTRAST_MODES}, got {contrast_mode!r}"
            )
        self.temperature = temperature
        self.base_temperature = base_temperature
        self.contrast_mode = contrast_mode
        self.gather_distributed = gather_distributed

    def forward(
        self, features: Tensor, labels: Tensor | None = None, mask: Tensor | None = None
    ) -> Tensor:
        """Compute the loss.

        Args:
            features: [B, V, D] L2-normalised embeddings, V >= 1 views per image.
            labels: optional [B] int class labels (SupCon). ``None`` and no mask: SimCLR.
            mask: optional [B, B] bool, ``mask[i, j]`` = image j is a positive for image i.
                Exclusive with ``labels``; not supported together with DDP gathering.

        Returns:
            scalar loss.
        """
        _check_inputs(features, labels, mask)
        batch, views, _ = features.shape

        world, rank = _world_and_rank() if self.gather_distributed else (1, 0)
        if world > 1 and mask is not None:
            raise ValueError("an explicit positive mask cannot be combined with DDP gathering")

        image_ids = torch.arange(batch, device=features.device) + rank * batch
        if world > 1:
            all_features = _GatherWithGrad.apply(features)
            labels_all = _gather_no_grad(labels) if labels is not None else None
            image_ids_all = torch.arange(batch * world, device=features.device)
        else:
            all_features, labels_all, image_ids_all = features, labels, image_ids

        # View-major layout: row v * N + n is view v of image n.
        contrast = all_features.transpose(0, 1).reshape(-1, features.shape[-1])  # [V*N, D]
        anchor_views = views if self.contrast_mode == "all" else 1
        anchor = features[:, :anchor_views].transpose(0, 1).reshape(-1, features.shape[-1])
        total = all_features.shape[0]
        # Column of each anchor's own entry in the contrast set, to leave it out of A(i).
        view_offsets = torch.arange(anchor_views, device=features.device) * total
        self_column = (view_offsets[:, None] + image_ids[None, :]).reshape(-1)  # [Na]

        if mask is not None:
            positive_images = mask.to(torch.bool)  # [B, B]
        elif labels is not None:
            positive_images = labels[:, None] == labels_all[None, :]  # [B, N]
        else:
            positive_images = image_ids[:, None] == image_ids_all[None, :]  # [B, N]
        positives = positive_images.repeat(anchor_views, views)  # [Na, V*N]
        is_self = torch.zeros_like(positives)
        is_self[torch.arange(len(self_column), device=features.device), self_column] = True
        positives &= ~is_self

        logits = anchor @ contrast.T / self.temperature  # [Na, V*N]
        mean_log_prob_pos = _mean_log_prob_of_positives(logits, is_self, positives)
        if mean_log_prob_pos.numel() == 0:
            # No anchor has a positive: contribute zero loss but keep the graph connected.
            return features.sum() * 0.0
        return -(self.temperature / self.base_temperature) * mean_log_prob_pos.mean()


def _check_inputs(features: Tensor, labels: Tensor | None, mask: Tensor | None) -> None:
    if features.ndim != 3:
        raise ValueError(f"features must be [B, V, D], got shape {tuple(features.shape)}")
    if labels is not None and mask is not None:
        raise ValueError("pass labels or mask, not both")
    if labels is not None and labels.shape != (features.shape[0],):
        raise ValueError(f"labels must be [B]={features.shape[0]}, got shape "
                         f"{tuple(labels.shape)}")  # fmt: skip


def _mean_log_prob_of_positives(logits: Tensor, is_self: Tensor, positives: Tensor) -> Tensor:
    """Per anchor with at least one positive: the mean log-probability of its positives among
    all other entries (eq. 2's inner sum). logits, is_self, positives: [Na, V*N]."""
    log_denominator = torch.logsumexp(logits.masked_fill(is_self, float("-inf")), dim=1)
    log_prob = logits - log_denominator[:, None]
    num_positives = positives.sum(dim=1)
    has_positive = num_positives > 0
    return (log_prob * positives).sum(dim=1)[has_positive] / num_positives[has_positive]


def _world_and_rank() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _gather_no_grad(tensor: Tensor) -> Tensor:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward hands each rank the summed gradient of its slice.

    (torch.distributed.nn's all_gather emulates reduce-scatter with all_to_all on gloo, which
    gave wrong gradients in our 2-process test; an all_reduce of the full gradient is simple and
    right on every backend.)
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        ctx.batch, ctx.rank = tensor.shape[0], dist.get_rank()
        return _gather_no_grad(tensor)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]
