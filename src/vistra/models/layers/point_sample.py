"""Point sampling of mask logits (PointRend; Mask2Former's point-sampled losses)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(maps: Tensor, points: Tensor) -> Tensor:
    """Bilinear values of ``maps`` [N, C, H, W] at ``points`` [N, P, 2] (x, y) in 0..1 of the
    map (``align_corners=False``: 0 and 1 are the outer edges of the border pixels; outside
    reads zeros). Returns [N, C, P]."""
    grid = (2 * points - 1).unsqueeze(2)  # [N, P, 1, 2]
    return F.grid_sample(maps, grid, mode="bilinear", align_corners=False).squeeze(3)


def uncertain_points(
    logits: Tensor,
    num_points: int,
    oversample: float = 3.0,
    importance: float = 0.75,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Mask2Former's importance sampling of training points (Kirillov et al. 2020, PointRend).

    Draw ``oversample * num_points`` uniform points, keep the ``importance * num_points`` whose
    logit is closest to 0 (uncertainty = -|logit|), and fill up with uniform random points.

    Args:
        logits: [N, 1, H, W] mask logits (one mask per row).

    Returns:
        [N, num_points, 2] (x, y) in 0..1.
    """
    if oversample < 1 or not 0 <= importance <= 1:
        raise ValueError(f"need oversample >= 1 and 0 <= importance <= 1, got {oversample}, "
                         f"{importance}")  # fmt: skip
    count = logits.shape[0]
    sampled = int(num_points * oversample)
    candidates = torch.rand(count, sampled, 2, device=logits.device, generator=generator)
    uncertainty = -point_sample(logits.float(), candidates).abs()[:, 0]  # [N, sampled]
    keep = int(importance * num_points)
    chosen = uncertainty.topk(keep, dim=1, sorted=False).indices  # order irrelevant: no sort
    picked = candidates.gather(1, chosen[..., None].expand(-1, -1, 2))
    extra = torch.rand(count, num_points - keep, 2, device=logits.device, generator=generator)
    return torch.cat([picked, extra], dim=1)
