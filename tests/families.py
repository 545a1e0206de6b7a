"""What the session's shared trained models are made of: one small data set in every format the
families read, each family's config and arguments on it, and checks on a fitted run."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from command import shapes_data_args
from PIL import Image
from runner import run_vistra

from vistra.data.shapes import write_shapes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NETWORK = "--model.init_args.network.init_args."
BATCH = 4
FAMILIES = ("detr", "mask2former", "mae", "supcon")
# One epoch of the shared data, no validation: a trained checkpoint for tests that need one.
ONE_EPOCH = ["--trainer.max_epochs=1", "--trainer.limit_val_batches=0",
             "--trainer.enable_progress_bar=false"]  # fmt: skip


def write_family_data(root: Path) -> Path:
    """Shapes in COCO files (8 training, 5 held-out 64-pixel scenes) under ``root/shapes``, and
    the same images in class folders (the largest shape's class) under ``root/classes``."""
    write_shapes(root / "shapes", train=8, val=5, size=64, seed=4)
    for split in ("train", "val"):
        annotations = json.loads((root / f"shapes/annotations/instances_{split}.json").read_text())
        for image in annotations["images"]:
            boxes = [a for a in annotations["annotations"] if a["image_id"] == image["id"]]
            label = max(boxes, key=lambda a: a["area"])["category_id"] if boxes else 0
            target = root / "classes" / split / f"class{label}" / image["file_name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.open(root / "shapes/images" / split / image["file_name"]).save(target)
    return root


def folder_source(root: Path, kind: str) -> str:
    return json.dumps({"class_path": f"vistra.data.{kind}", "init_args": {"root": str(root)}})


def family_args(data: Path, family: str) -> tuple[Path, list[str], Path]:
    """(config, data and size arguments, the held-out image folder) of one family."""
    shapes = data / "shapes"
    if family == "detr":
        args = [*shapes_data_args(shapes, "instances"), f"--data.init_args.batch_size={BATCH}"]
        return CONFIGS / "detr/shapes.yaml", args, shapes / "images/val"
    if family == "mask2former":
        tiny = [f"{NETWORK}dim=32", f"{NETWORK}mask_dim=32", f"{NETWORK}num_queries=8",
                f"{NETWORK}decoder_layers=3", f"{NETWORK}pixel_decoder_layers=1"]  # fmt: skip
        args = [*shapes_data_args(shapes, "panoptic"), f"--data.init_args.batch_size={BATCH}"]
        return CONFIGS / "mask2former/shapes.yaml", args + tiny, shapes / "images/val"
    classes = data / "classes"
    if family == "mae":
        kind, config = "UnlabelledFolderSource", CONFIGS / "mae/vit_tiny_digits.yaml"
    else:
        kind, config = "ImageFolderSource", CONFIGS / "supcon/resnet18_digits.yaml"
    args = [f"--data.init_args.train={folder_source(classes / 'train', kind)}",
            f"--data.init_args.val={folder_source(classes / 'val', kind)}",
            f"--data.init_args.batch_size={BATCH}", "--data.init_args.knn_bank=false"]  # fmt: skip
    return config, args, classes / "val"


def top1_by_hand(cli, batches: int) -> float:
    """Top-1 of a fitted classifier (``VistraCLI``) on the first ``batches`` validation
    batches, counted here from its predictions: what its last validation logged."""
    model = cli.model.eval()
    correct = total = 0
    with torch.no_grad():
        for index, (images, labels) in enumerate(cli.datamodule.val_dataloader()):
            if index == batches:
                break
            correct += int((model(images).argmax(1) == labels).sum())
            total += len(labels)
    return correct / total


class TrainedModels:
    """``trained(family) -> last.ckpt`` of ``vistra fit`` on the shared data for one epoch
    (``family_args``), for "detr", "mask2former", "mae" or "supcon", trained on first use;
    ``trained.printed(family)``: what that fit printed. Read the files; copy before changing."""

    def __init__(self, data: Path, folders) -> None:
        self.data, self.folders = data, folders  # folders: pytest's tmp_path_factory
        self.runs: dict[str, tuple[Path, str]] = {}

    def fit(self, family: str) -> tuple[Path, str]:
        if family not in self.runs:
            folder = self.folders.mktemp(f"trained_{family}")
            config, args, _ = family_args(self.data, family)
            done = run_vistra("fit", "--config", config, *args, *ONE_EPOCH, cwd=folder)
            assert done.returncode == 0, done.stderr[-3000:]
            (checkpoint,) = folder.rglob("last.ckpt")
            self.runs[family] = checkpoint, done.stdout
        return self.runs[family]

    def __call__(self, family: str) -> Path:
        return self.fit(family)[0]

    def printed(self, family: str) -> str:
        return self.fit(family)[1]
