"""Pictures a person would rather look at than read, drawn with PIL."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import Tensor

PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


def pca_2d(features: Tensor) -> Tensor:
    """[N, D] -> [N, 2] projection on the two leading principal components."""
    centred = features.float() - features.float().mean(dim=0)
    _, _, basis = torch.pca_lowrank(centred, q=2, center=False)
    return centred @ basis[:, :2]


def embedding_scatter(
    panels: list[tuple[str, Tensor, Tensor]], class_names: list[str], path: str | Path
) -> Path:
    """Side-by-side 2-D PCA scatter plots of embeddings, coloured by class.

    Args:
        panels: (title, features [N, D], labels [N]) per panel.
        class_names: legend text, index = label.
        path: PNG to write.
    """
    side, margin, legend = 360, 24, 18
    canvas = Image.new(
        "RGB",
        (len(panels) * side, side + margin + legend * ((len(class_names) + 9) // 10)),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    for panel, (title, features, labels) in enumerate(panels):
        points = pca_2d(features)
        low, high = points.min(dim=0).values, points.max(dim=0).values
        scaled = (points - low) / (high - low).clamp_min(1e-9) * (side - 2 * margin) + margin
        left = panel * side
        draw.text((left + margin, 4), title, fill="black")
        draw.rectangle([left + 4, margin - 6, left + side - 4, side - 4], outline=(200, 200, 200))
        for (x, y), label in zip(scaled.tolist(), labels.tolist()):
            colour = PALETTE[label % len(PALETTE)]
            draw.ellipse(
                [left + x - 2, margin + y - 2 - 8, left + x + 2, margin + y + 2 - 8], fill=colour
            )
    for index, name in enumerate(class_names):
        x = 8 + (index % 10) * 60
        y = side + margin // 2 + legend * (index // 10)
        draw.rectangle([x, y, x + 10, y + 10], fill=PALETTE[index % len(PALETTE)])
        draw.text((x + 14, y), name, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
