"""DETR through the `vistra` command: data shapes/check, fit with COCO AP, predict, learning."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import torch
from runner import run_vistra

from vistra.cli import VistraCLI

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "detr" / "shapes.yaml"


def vistra(*args, cwd):
    return run_vistra(*args, cwd=cwd)


def _data_args(root: Path) -> list[str]:
    ann = root / "annotations"
    return ["--data.train_annotations", str(ann / "instances_train.json"),
            "--data.train_images", str(root / "images" / "train"),
            "--data.val_annotations", str(ann / "instances_val.json"),
            "--data.val_images", str(root / "images" / "val")]  # fmt: skip


def test_data_shapes_and_check_commands(tmp_path):
    made = vistra("data", "shapes", tmp_path / "s", "--train", 6, "--val", 2, "--size", 48,
                  cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    annotations = tmp_path / "s" / "annotations" / "instances_train.json"
    good = vistra("data", "check", annotations, "--images", tmp_path / "s" / "images" / "train",
                  cwd=tmp_path)  # fmt: skip
    assert good.returncode == 0 and "problems" in good.stdout and "circle" in good.stdout
    data = json.loads(annotations.read_text())
    data["annotations"][0]["bbox"] = [40, 40, 30, 30]
    annotations.write_text(json.dumps(data))
    bad = vistra("data", "check", annotations, cwd=tmp_path)
    field = f"annotations[0] (id {data['annotations'][0]['id']}).bbox"
    assert bad.returncode == 1 and field in bad.stdout and "outside" in bad.stdout


def test_fit_validate_predict_write_coco_results(tmp_path):
    made = vistra("data", "shapes", tmp_path / "s", "--train", 8, "--val", 4, "--size", 64,
                  cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0
    fit = vistra("fit", "--config", CONFIG, *_data_args(tmp_path / "s"),
                 "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
                 "--trainer.check_val_every_n_epoch=1", "--data.batch_size=4",
                 "--trainer.default_root_dir", tmp_path / "run", cwd=tmp_path)  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "Average Precision" in fit.stdout  # the COCO table is printed
    checkpoint = next((tmp_path / "run").rglob("last.ckpt"))
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["vistra_categories"] == {"ids": [1, 2, 3],
                                          "names": ["circle", "square", "triangle"]}  # fmt: skip
    assert saved["vistra_version"] == importlib.metadata.version("vistra")  # GET /info says it
    assert list((tmp_path / "run").rglob("val_epoch_0000.json"))
    predict = vistra("predict", "--config", CONFIG, *_data_args(tmp_path / "s"),
                     "--ckpt_path", checkpoint, "--trainer.enable_progress_bar=false",
                     "--trainer.default_root_dir", tmp_path / "pred", cwd=tmp_path)  # fmt: skip
    assert predict.returncode == 0, predict.stderr[-3000:]
    results = json.loads(next((tmp_path / "pred").rglob("detections.json")).read_text())
    assert {r["image_id"] for r in results} == {1, 2, 3, 4}
    assert {r["category_id"] for r in results} <= {1, 2, 3}
    assert len(list((tmp_path / "pred").rglob("pictures/*.png"))) == 4
    from pycocotools.coco import COCO

    ground_truth = COCO(str(tmp_path / "s" / "annotations" / "instances_val.json"))
    assert len(ground_truth.loadRes(results).getAnnIds()) == len(results)


def test_a_wrong_config_key_is_named(tmp_path):
    run = vistra("fit", "--config", CONFIG, "--model.init_args.network.init_args.num_querys=5",
                 cwd=tmp_path)  # fmt: skip
    assert run.returncode != 0 and "num_querys" in run.stderr


def test_detr_learns_a_small_shapes_set(tmp_path):
    """Learning: on 8 shapes images, box AP50 measured on those images rises from ~0 to a
    high value in about a minute of CPU, showing the model, matcher, loss, post-processing and
    evaluator work together (generalisation to held-out images needs far longer, see README)."""
    from vistra.data.shapes import write_shapes

    split = write_shapes(tmp_path / "s", train=8, val=0, size=64, seed=5, max_objects=2)["train"]
    same = ["--data.train_annotations", str(split["instances"]),
            "--data.train_images", str(split["images"]),
            "--data.val_annotations", str(split["instances"]),
            "--data.val_images", str(split["images"]),
            "--data.batch_size=8", "--data.scales=[64]", "--data.max_size=96",
            "--data.eval_size=64", "--data.eval_max_size=96",
            "--model.init_args.lr=5e-4", "--model.init_args.lr_backbone=5e-4",
            "--model.init_args.warmup_steps=20", "--trainer.enable_progress_bar=false"]  # fmt: skip
    before = VistraCLI(args=["validate", "--config", str(CONFIG), *same,
                             "--trainer.default_root_dir", str(tmp_path / "before")])  # fmt: skip
    trained = VistraCLI(args=["fit", "--config", str(CONFIG), *same,
                              "--trainer.max_epochs=150", "--trainer.check_val_every_n_epoch=150",
                              "--trainer.default_root_dir", str(tmp_path / "fit")])  # fmt: skip
    start, end = before.model.last_coco_stats["AP50"], trained.model.last_coco_stats["AP50"]
    print(f"box AP50 on the training images: {start:.3f} -> {end:.3f}")
    assert start < 0.05 and end > 0.5
