"""``vistra demo mask2former``: shapes set -> Mask2Former -> PQ / mask AP / mIoU -> pictures."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from vistra.data.shapes import write_shapes
from vistra.demos.timing import time_rows
from vistra.engine.lightning_cli import VistraCLI

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mask2former" / "shapes.yaml"
SHAPES = dict(train=2000, val=200, size=96, seed=0, max_objects=3)


def run_mask2former_demo(out: Path, *extra_args: str) -> dict:
    """Write the shapes set into ``out/shapes``, train Mask2Former, evaluate, draw
    ``segmentation.png``. Returns the metrics (``PQ``, ``PQ_th``, ``PQ_st``, ``mIoU``,
    ``mask_AP``, ``mask_AP50``, ...) with ``seconds``, ``checkpoint`` and ``picture``."""
    started = time.perf_counter()
    shapes = write_shapes(out / "shapes", **SHAPES)
    written = time.perf_counter() - started
    train, val = shapes["train"], shapes["val"]
    cli = VistraCLI(
        args=[
            "fit", "--config", str(CONFIG),
            "--trainer.default_root_dir", str(out / "mask2former"),
            "--data.train_annotations", str(train["panoptic"]),
            "--data.train_images", str(train["images"]),
            "--data.val_annotations", str(val["panoptic"]),
            "--data.val_images", str(val["images"]),
            "--data.val_instances", str(val["instances"]),
            *extra_args,
        ]
    )  # fmt: skip
    metrics = dict(getattr(cli.model, "last_metrics", {}))
    drawing = time.perf_counter()
    picture = _segmentation_picture(cli, out / "segmentation.png")
    timing, parts = time_rows([cli], written, time.perf_counter() - drawing)
    seconds = time.perf_counter() - started
    results = {**metrics, "seconds": seconds, "picture": str(picture), "time": parts,
               "checkpoint": cli.trainer.checkpoint_callback.last_model_path}  # fmt: skip
    nan = float("nan")
    print(f"\nMask2Former on shapes ({len(cli.datamodule.val_source)} held-out images)")
    for label, value in [
        ("PQ (all / things / stuff)", f"{metrics.get('PQ', nan):.3f} / "
         f"{metrics.get('PQ_th', nan):.3f} / {metrics.get('PQ_st', nan):.3f}"),
        ("mask AP / AP50", f"{metrics.get('mask_AP', nan):.3f} / "
         f"{metrics.get('mask_AP50', nan):.3f}"),
        ("mIoU", f"{metrics.get('mIoU', nan):.3f}"),
        *timing,
        ("checkpoint", results["checkpoint"]),
        ("picture", results["picture"]),
    ]:  # fmt: skip
        print(f"  {label:<31}{value}")
    return results


@torch.no_grad()
def _segmentation_picture(cli: VistraCLI, path: Path, count: int = 6) -> Path:
    """Rows: image, ground truth, prediction (panoptic segments with a legend)."""
    from PIL import Image, ImageDraw

    from vistra.data.sources.base import load_image
    from vistra.inference.pictures import segmentation_overlay
    from vistra.inference.results import Segmentation

    datamodule, task = cli.datamodule, cli.model
    task.network.eval()
    source = datamodule.val_source
    images, pixel_mask, targets = next(iter(datamodule.eval_loader(source)))
    images, pixel_mask, targets = images[:count], pixel_mask[:count], targets[:count]
    results = task.infer(task.network(images, pixel_mask), images, targets)
    names = datamodule.classes
    columns = []
    for index, result in enumerate(results):
        image = load_image(source.image_path(index))
        ids, segments = source.ground_truth(index)
        truth = Segmentation(torch.from_numpy(source.semantic_map(index)), torch.from_numpy(ids),
                             [{"id": s.id, "label": source.label_of[s.category]}
                              for s in segments])  # fmt: skip
        columns.append([segmentation_overlay(image, truth, names),
                        segmentation_overlay(image, result, names)])  # fmt: skip
    width = max(c[0].width for c in columns)
    heights = [max(c[row].height for c in columns) for row in range(2)]
    canvas = Image.new("RGB", (len(columns) * (width + 4), sum(heights) + 28), "white")
    draw = ImageDraw.Draw(canvas)
    for column, tiles in enumerate(columns):
        y = 0
        for row, (tile, title) in enumerate(zip(tiles, ("ground truth", "Mask2Former"))):
            draw.text((column * (width + 4) + 2, y), title, fill="black")
            canvas.paste(tile, (column * (width + 4), y + 12))
            y += heights[row] + 14
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
