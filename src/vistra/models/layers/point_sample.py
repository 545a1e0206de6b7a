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
    generators: list[torch.Generator] | None = None,
    counts: list[int] | None = None,
) -> Tensor:
    """Mask2Former's importance sampling of training points (Kirillov et al. 2020, PointRend).

    Draw ``oversample * num_points`` uniform points, keep the ``importance * num_points`` whose
    logit is closest to 0 (uncertainty = -|logit|), and fill up with uniform random points.

    Args:
        logits: [N, 1, H, W] mask logits (one mask per row).
        generators, counts: rows in groups (an image's masks), group i drawn from
            ``generators[i]`` (its ``counts[i]`` rows); None: torch's global generator.

    Returns:
        [N, num_points, 2] (x, y) in 0..1.
    """
    if oversample < 1 or not 0 <= importance <= 1:
        raise ValueError(f"need oversample >= 1 and 0 <= importance <= 1, got {oversample}, "
                         f"{importance}")  # fmt: skip
    count = logits.shape[0]
    sampled = int(num_points * oversample)
    candidates = uniform_points(count, sampled, logits.device, generators, counts)
    uncertainty = -point_sample(logits.float(), candidates).abs()[:, 0]  # [N, sampled]
    keep = int(importance * num_points)
    chosen = uncertainty.topk(keep, dim=1, sorted=False).indices  # order irrelevant: no sort
    picked = candidates.gather(1, chosen[..., None].expand(-1, -1, 2))
    extra = uniform_points(count, num_points - keep, logits.device, generators, counts)
    return torch.cat([picked, extra], dim=1)


def uniform_points(
    rows: int,
    points: int,
    device: torch.device | str,
    generators: list[torch.Generator] | None = None,
    counts: list[int] | None = None,
) -> Tensor:
    """[rows, points, 2] uniform (x, y); with ``generators``, the ``counts[i]`` rows of group i
    from ``generators[i]``."""
    if generators is None:
        return torch.rand(rows, points, 2, device=device)
    if counts is None or len(counts) != len(generators) or sum(counts) != rows:
        raise ValueError(f"counts {counts} must give the rows ({rows}) of each generator")
    groups = [torch.rand(n, points, 2, device=device, generator=g)
              for g, n in zip(generators, counts) if n]  # fmt: skip
    return torch.cat(groups) if groups else torch.rand(0, points, 2, device=device)
