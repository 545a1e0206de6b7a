"""``vistra demo detr``: shapes set -> box-map backbone pre-training -> DETR training -> COCO AP
table -> pictures."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from vistra.data.shapes import write_shapes
from vistra.demos.timing import time_rows
from vistra.engine.lightning_cli import VistraCLI

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "detr"
SHAPES = dict(train=2000, val=200, size=64, seed=0, max_objects=3)


def run_detr_demo(out: Path, *extra_args: str) -> dict:
    """Write the shapes set into ``out/shapes``, pre-train the backbone on box maps, train DETR,
    evaluate, draw ``detections.png``; ``extra_args`` override the DETR config.

    Returns ``{"AP", "AP50", ..., "seconds", "backbone_seconds", "checkpoint", "picture"}``.
    """
    started = time.perf_counter()
    shapes = write_shapes(out / "shapes", **SHAPES)
    written = time.perf_counter() - started
    train, val = shapes["train"], shapes["val"]
    data_args = [
        "--data.train_annotations", str(train["instances"]),
        "--data.train_images", str(train["images"]),
        "--data.val_annotations", str(val["instances"]),
        "--data.val_images", str(val["images"]),
    ]  # fmt: skip
    backbone_file = out / "backbone" / "backbone.pt"
    backbone_started = time.perf_counter()
    backbone = VistraCLI(args=["fit", "--config", str(CONFIGS / "shapes_backbone.yaml"),
                    "--trainer.default_root_dir", str(out / "backbone"),
                    "--model.init_args.backbone_out", str(backbone_file), *data_args])  # fmt: skip
    backbone_seconds = time.perf_counter() - backbone_started
    cli = VistraCLI(
        args=[
            "fit", "--config", str(CONFIGS / "shapes.yaml"),
            "--trainer.default_root_dir", str(out / "detr"),
            "--model.init_args.network.init_args.backbone_checkpoint", str(backbone_file),
            *data_args, *extra_args,
        ]
    )  # fmt: skip
    task = cli.model
    stats = dict(getattr(task, "last_coco_stats", {}))
    drawing = time.perf_counter()
    picture = _detection_picture(cli, out / "detections.png")
    timing, parts = time_rows([backbone, cli], written, time.perf_counter() - drawing)
    seconds = time.perf_counter() - started
    results = {**stats, "seconds": seconds, "backbone_seconds": backbone_seconds,
               "picture": str(picture), "time": parts,
               "checkpoint": cli.trainer.checkpoint_callback.last_model_path}  # fmt: skip
    print(f"\nDETR on shapes ({len(cli.datamodule.val_source)} held-out images)")
    for label, value in [
        ("box AP50", f"{stats.get('AP50', float('nan')):.3f}"),
        ("box AP (0.50:0.95)", f"{stats.get('AP', float('nan')):.3f}"),
        *timing,
        ("  of which backbone pre-training", f"{backbone_seconds:.0f} s"),
        ("checkpoint", results["checkpoint"]),
        ("picture", results["picture"]),
    ]:
        print(f"  {label:<31}{value}")
    return results


@torch.no_grad()
def _detection_picture(cli: VistraCLI, path: Path, count: int = 6, threshold: float = 0.5):
    from vistra.data.sources.base import load_image
    from vistra.inference.pictures import detection_grid, draw_detections
    from vistra.models.detr import detr_postprocess

    datamodule, network = cli.datamodule, cli.model.network.eval()
    source = datamodule.val_source
    images, pixel_mask, targets = next(iter(datamodule.eval_loader(source)))
    images, pixel_mask, targets = images[:count], pixel_mask[:count], targets[:count]
    sizes = torch.stack([t["orig_size"] for t in targets])
    detections = detr_postprocess(network(images, pixel_mask), sizes)
    names = datamodule.classes
    tiles = []
    for index, (target, detection) in enumerate(zip(targets, detections)):
        image = load_image(source.image_path(index))
        scale = max(1.0, 288 / max(image.size))
        h, w = target["orig_size"].tolist()
        truth = target["boxes"] * torch.tensor([w, h, w, h])
        truth = torch.cat([truth[:, :2] - truth[:, 2:] / 2, truth[:, :2] + truth[:, 2:] / 2], 1)
        labels = target["labels"].tolist()
        keep = detection["scores"] >= threshold
        predicted = detection["labels"][keep].tolist()
        tiles.append((
            draw_detections(image, truth, [names[i] for i in labels], None, labels, scale),
            draw_detections(image, detection["boxes"][keep], [names[i] for i in predicted],
                            detection["scores"][keep], predicted, scale),
        ))  # fmt: skip
    return detection_grid(tiles, path, ("ground truth", f"DETR, score >= {threshold}"))
