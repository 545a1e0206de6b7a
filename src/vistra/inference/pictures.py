"""Pictures a person would rather look at than read, drawn with PIL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from torch import Tensor

PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


def pca_2d(features: Tensor) -> Tensor:
    """[N, D] -> [N, 2] projection on the two leading principal components."""
    import torch

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
            draw.ellipse([left + x - 2, y - 2, left + x + 2, y + 2], fill=colour)
    for index, name in enumerate(class_names):
        x = 8 + (index % 10) * 60
        y = side + margin // 2 + legend * (index // 10)
        draw.rectangle([x, y, x + 10, y + 10], fill=PALETTE[index % len(PALETTE)])
        draw.text((x + 14, y), name, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def mae_reconstruction_grid(network, images: Tensor, outputs: dict, path: str | Path) -> Path:
    """One row per image: original | masked | reconstruction | reconstruction + visible patches.

    Args:
        network: the ``MaskedAutoencoder`` (for patch size, grid and un-normalisation).
        images: [N, 3, H, W] normalised input; outputs: its forward pass ("pred", "mask").
    """
    import torch

    with torch.no_grad():
        return _reconstruction_grid(network, images, outputs, path)


def _reconstruction_grid(network, images: Tensor, outputs: dict, path: str | Path) -> Path:
    import torch
    from torchvision.utils import save_image

    from vistra.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
    from vistra.models.layers.patches import unpatchify

    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    p = network.patch_size
    patch_mask = outputs["mask"].unsqueeze(-1).expand(-1, -1, p * p * images.shape[1])
    pixel_mask = unpatchify(patch_mask.to(images.dtype), p, network.grid)  # 1 = removed
    reconstruction = network.reconstruct(images, outputs)
    grey = (0.5 - mean) / std
    masked = images * (1 - pixel_mask) + grey * pixel_mask
    pasted = images * (1 - pixel_mask) + reconstruction * pixel_mask
    rows = torch.stack([images, masked, reconstruction, pasted], dim=1).flatten(0, 1)
    if rows.shape[-1] < 96:  # small images: enlarge so a person can see the patches
        rows = torch.nn.functional.interpolate(rows, scale_factor=-(-96 // rows.shape[-1]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((rows * std + mean).clamp(0, 1), path, nrow=4, padding=1)
    return path


def draw_detections(
    image: Image.Image,
    boxes: Tensor,
    labels: list[str],
    scores: Tensor | None = None,
    class_index: list[int] | None = None,
    scale: float = 1.0,
) -> Image.Image:
    """``image`` enlarged by ``scale`` with each box [K, 4] xyxy (original pixels) outlined and
    labelled "name score"; colour by ``class_index``."""
    if scale != 1.0:
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.NEAREST)
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    for k, box in enumerate(boxes.tolist()):
        colour = PALETTE[(class_index[k] if class_index else k) % len(PALETTE)]
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=2)
        text = labels[k] if scores is None else f"{labels[k]} {float(scores[k]):.2f}"
        width = draw.textlength(text)
        top = max(y0 - 11, 0)
        draw.rectangle([x0, top, x0 + width + 2, top + 10], fill=colour)
        draw.text((x0 + 1, top - 1), text, fill="white")
    return image


def detection_grid(
    tiles: list[tuple[Image.Image, Image.Image]], path: str | Path, titles=("truth", "predicted")
) -> Path:
    """Pairs (ground truth, prediction) of drawn images as columns of a two-row PNG."""
    width, height = tiles[0][0].size
    canvas = Image.new("RGB", (len(tiles) * (width + 4), 2 * (height + 14)), "white")
    draw = ImageDraw.Draw(canvas)
    for column, pair in enumerate(tiles):
        for row, tile in enumerate(pair):
            x, y = column * (width + 4), row * (height + 14)
            draw.text((x + 2, y), titles[row], fill="black")
            canvas.paste(tile, (x, y + 12))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def panoptic_rgb(segment_ids) -> Image.Image:
    """Segment ids [H, W] as a COCO panoptic PNG image (id = R + 256 G + 256^2 B)."""
    import numpy as np

    ids = np.asarray(segment_ids, dtype=np.int64)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def write_panoptic_png(segment_ids, path: str | Path) -> Path:
    """Segment ids [H, W] -> a COCO panoptic PNG file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    panoptic_rgb(segment_ids).save(path)
    return path


def segmentation_overlay(
    image: Image.Image, result, names: list[str], min_side: int = 288, alpha: float = 0.55
) -> Image.Image:
    """``image`` with each panoptic segment (or, without panoptic output, each semantic class)
    filled in a colour of its class, segment outlines, and a legend of the classes shown.

    ``result``: a ``vistra.inference.results.Segmentation`` (``panoptic`` ids with
    ``segments`` holding "id" and "label", or only the ``semantic`` [H, W] labels).
    """
    import numpy as np

    scale = max(1, round(min_side / min(image.size)))
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    if result.panoptic is not None:
        ids = np.asarray(result.panoptic)
        label_of = {s["id"]: s["label"] for s in result.segments}
        labels = np.full(ids.shape, -1, dtype=np.int64)
        for segment_id, label in label_of.items():
            labels[ids == segment_id] = label
        regions = ids
    else:
        labels = np.asarray(result.semantic).astype(np.int64)
        regions = labels
    colours = np.array([PALETTE[i % len(PALETTE)] for i in range(max(len(names), 1))],
                       dtype=np.float32)  # fmt: skip
    painted = base.copy()
    shown = labels >= 0
    painted[shown] = (1 - alpha) * base[shown] + alpha * colours[labels[shown]]
    painted[~shown] = 0.35 * base[~shown]  # pixels no segment claims: darkened
    edges = np.zeros(regions.shape, dtype=bool)
    edges[:-1] |= regions[:-1] != regions[1:]
    edges[:, :-1] |= regions[:, :-1] != regions[:, 1:]
    painted[edges] = 255
    picture = Image.fromarray(painted.astype(np.uint8))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    present = sorted(set(labels[shown].tolist())) + ([-1] if (~shown).any() else [])
    legend_height = 12 * max(len(present), 1) + 4
    canvas = Image.new("RGB", (picture.width, picture.height + legend_height), "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, label in enumerate(present):
        y = picture.height + 2 + 12 * row
        if label < 0:
            draw.rectangle([2, y, 12, y + 9], fill=(40, 40, 40))
            draw.text((16, y - 1), "no segment (darkened)", fill="black")
            continue
        draw.rectangle([2, y, 12, y + 9], fill=tuple(int(c) for c in colours[label]))
        draw.text((16, y - 1), names[label] if label < len(names) else str(label), fill="black")
    return canvas
