"""Both forms of ``vistra predict`` write the same files for the same checkpoint.

For one checkpoint per family, trained by ``vistra fit`` on a folder or COCO files the test
writes: ``vistra predict --config ... --ckpt_path`` (Lightning, the config's held-out data) and
``vistra predict --ckpt ... --input <the same images>`` (no Lightning) must give the same set of
files, JSON / CSV / text byte-identical, PNG pixels and ``.npy`` arrays equal. The batch size is
the same in both (the data module's, ``--batch-size``), so every forward sees the same batch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from command import shapes_data_args
from PIL import Image

from vistra.data.shapes import write_shapes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NETWORK = "--model.init_args.network.init_args."
BATCH = 4


def vistra(*args, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "vistra.cli", *map(str, args)],
                            capture_output=True, text=True, cwd=cwd)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def folder_source(root: Path, kind: str) -> str:
    return json.dumps({"class_path": f"vistra.data.{kind}", "init_args": {"root": str(root)}})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Shapes in COCO files, and the same images in class folders (the largest shape's class)."""
    root = tmp_path_factory.mktemp("routes")
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


def assert_same_files(ours: Path, theirs: Path) -> list[str]:
    """Every file of one folder equals the other's (PNG: pixels; .npy: arrays; others: bytes)."""
    files = sorted(p.relative_to(ours).as_posix() for p in ours.rglob("*") if p.is_file())
    other = sorted(p.relative_to(theirs).as_posix() for p in theirs.rglob("*") if p.is_file())
    assert files == other
    for name in files:
        a, b = ours / name, theirs / name
        if name.endswith(".png"):
            assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))), name
        elif name.endswith(".npy"):
            assert np.array_equal(np.load(a), np.load(b)), name
        else:
            assert a.read_bytes() == b.read_bytes(), name
    return files


EXPECTED = {
    "detr": {"detections.json", "images.json"},
    "mask2former": {"panoptic.json", "instances.json", "images.json"},
    "mae": {"embeddings.npy", "embeddings.txt", "images.json", "reconstructions.png"},
    "supcon": {"embeddings.npy", "embeddings.txt", "images.json"},
}


@pytest.mark.parametrize("family", ["detr", "mask2former", "mae", "supcon"])
def test_both_predict_commands_write_the_same_files(family, data, tmp_path):
    config, args, held_out = family_args(data, family)
    vistra("fit", "--config", config, *args, "--trainer.max_epochs=1",
           "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
           cwd=tmp_path)  # fmt: skip
    (checkpoint,) = tmp_path.rglob("last.ckpt")
    vistra("predict", "--config", config, *args, "--ckpt_path", checkpoint,
           "--trainer.enable_progress_bar=false", "--predictions.output", "from_config",
           cwd=tmp_path)  # fmt: skip
    vistra("predict", "--ckpt", checkpoint, "--input", held_out, "--output", "from_checkpoint",
           "--batch-size", BATCH, cwd=tmp_path)  # fmt: skip
    files = assert_same_files(tmp_path / "from_config", tmp_path / "from_checkpoint")
    assert EXPECTED[family] <= set(files)
    images = json.loads((tmp_path / "from_config/images.json").read_text())
    assert len(images) == 5
    results = tmp_path / "from_config"
    if family == "detr":  # every query of every image (not an empty run that agrees)
        assert len(json.loads((results / "detections.json").read_text())) == 5 * 10
    if family == "mask2former":  # the thing classes reached inference: panoptic and instances
        panoptic = json.loads((results / "panoptic.json").read_text())["annotations"]
        assert len(panoptic) == 5 and json.loads((results / "instances.json").read_text())


def test_a_model_option_on_the_command_line_wins_over_the_checkpoints(data, tmp_path):
    """``--ckpt_path`` brings the trained task's hyper-parameters; an inference option given
    on the command line (here ``top_k``) must still be the one used, not silently replaced."""
    from collections import Counter

    config, args, _ = family_args(data, "mask2former")
    vistra("fit", "--config", config, *args, "--trainer.max_epochs=1",
           "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
           cwd=tmp_path)  # fmt: skip
    (checkpoint,) = tmp_path.rglob("last.ckpt")
    per_image = {}
    for top_k in (100, 2):
        out = f"top{top_k}"
        vistra("predict", "--config", config, *args, "--ckpt_path", checkpoint,
               f"--model.init_args.top_k={top_k}", "--trainer.enable_progress_bar=false",
               "--predictions.output", out, cwd=tmp_path)  # fmt: skip
        instances = json.loads((tmp_path / out / "instances.json").read_text())
        per_image[top_k] = Counter(result["image_id"] for result in instances)
    assert max(per_image[100].values()) > 2  # 8 queries: more than 2 kept by default
    assert max(per_image[2].values()) == 2
