"""The MAE reconstruction loss (He et al., 2021): the mean squared error between predicted and
true pixels of the removed patches only, each patch's pixels normalised by their own mean and
variance (``norm_pix_loss``, the paper's default).

One path: the loss takes the predictions at the removed patches. ``MaskedAutoencoder.loss``
gathers them from a full decoder output; ``pretraining_loss`` decodes only those rows.
"""

from __future__ import annotations

from torch import Tensor

from vistra.models.layers.patches import patchify


def pixel_targets(images: Tensor, patch_size: int, norm_pix_loss: bool) -> Tensor:
    """images [B, C, H, W] -> the reconstruction target [B, L, p*p*C]: the patches, each by its
    own mean and variance (unbiased, + 1e-6) with ``norm_pix_loss``."""
    target = patchify(images, patch_size)
    if not norm_pix_loss:
        return target
    mean = target.mean(dim=-1, keepdim=True)
    variance = target.var(dim=-1, keepdim=True)
    return (target - mean) / (variance + 1e-6) ** 0.5


def removed_patches(mask: Tensor) -> Tensor:
    """mask [B, L] (1 = removed, the same count per image) -> removed patch indices [B, R]."""
    return mask.bool().nonzero()[:, 1].view(mask.shape[0], -1)


def mae_loss(
    predictions: Tensor,
    images: Tensor,
    removed: Tensor,
    patch_size: int,
    norm_pix_loss: bool = True,
) -> Tensor:
    """Mean over the removed patches of each patch's mean squared pixel error.

    Args:
        predictions: [B, R, p*p*C] the decoder's predictions at the removed patches.
        images: [B, C, H, W] the input the patches come from.
        removed: [B, R] indices (0..L-1) of the removed patches.
        norm_pix_loss: the target is each patch normalised by its own mean and variance.

    Returns:
        scalar.
    """
    target = pixel_targets(images, patch_size, norm_pix_loss)
    target = target.gather(1, removed[..., None].expand(-1, -1, target.shape[-1]))
    return ((predictions - target) ** 2).mean(dim=-1).mean()
