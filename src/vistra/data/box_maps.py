"""Per-pixel class maps painted from boxes: the target of box-map backbone pre-training."""

from __future__ import annotations

import torch
from torch import Tensor

IGNORE_INDEX = 255


def box_class_maps(targets: list[dict], pixel_mask: Tensor) -> Tensor:
    """Label every pixel with the class of the smallest box covering it.

    Args:
        targets: per image ``{"labels": [N] in 0..C-1, "boxes": [N, 4] cxcywh normalized by
            the image's own (unpadded) size}`` (the DETR target format).
        pixel_mask: [B, H, W] bool, True = real pixel; real pixels form the top-left corner.

    Returns:
        [B, H, W] long: 0 = background, c + 1 = class c, ``IGNORE_INDEX`` on padding. Boxes
        are painted largest first, so where boxes overlap the smaller one wins.
    """
    batch, height, width = pixel_mask.shape
    maps = torch.zeros(batch, height, width, dtype=torch.long, device=pixel_mask.device)
    for index, target in enumerate(targets):
        real_h = int(pixel_mask[index].any(1).sum())
        real_w = int(pixel_mask[index].any(0).sum())
        scale = torch.tensor([real_w, real_h, real_w, real_h], dtype=torch.float32)
        boxes = target["boxes"].float().cpu() * scale
        x0, y0 = (boxes[:, :2] - boxes[:, 2:] / 2).round().long().unbind(1)
        x1, y1 = (boxes[:, :2] + boxes[:, 2:] / 2).round().long().unbind(1)
        order = (boxes[:, 2] * boxes[:, 3]).argsort(descending=True)
        for k in order.tolist():
            label = int(target["labels"][k]) + 1
            maps[index, max(int(y0[k]), 0) : int(y1[k]), max(int(x0[k]), 0) : int(x1[k])] = label
    maps[~pixel_mask] = IGNORE_INDEX
    return maps
