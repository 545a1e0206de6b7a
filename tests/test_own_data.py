"""Your own data through the documented commands: the class count comes from the data, a
contradicting one stops before training with both numbers, a detector trained on other
classes starts a new task, categories reach `vistra predict`, unlabelled folders pre-train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from runner import run_vistra

from vistra.data.shapes import write_shapes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY_DETR = dict(backbone="resnet18", backbone_stage=3, hidden_dim=32, num_heads=2,
                 num_encoder_layers=1, num_decoder_layers=2, ffn_dim=64, num_queries=5)  # fmt: skip


def vistra(*args, cwd):
    return run_vistra(*args, cwd=cwd)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "shapes"
    write_shapes(root, 8, 4, 64, seed=0)
    return root


def detection_data(root: Path) -> list[str]:
    return ["--data.init_args.train_annotations", root / "annotations/instances_train.json",
            "--data.init_args.train_images", root / "images/train",
            "--data.init_args.val_annotations", root / "annotations/instances_val.json",
            "--data.init_args.val_images", root / "images/val"]  # fmt: skip


def panoptic_data(root: Path) -> list[str]:
    return ["--data.init_args.train_annotations", root / "annotations/panoptic_train.json",
            "--data.init_args.train_images", root / "images/train",
            "--data.init_args.val_annotations", root / "annotations/panoptic_val.json",
            "--data.init_args.val_images", root / "images/val",
            "--data.init_args.val_instances", root / "annotations/instances_val.json"]  # fmt: skip


@pytest.mark.parametrize(
    "config, data, wrong, right, origin",
    [
        ("detr/shapes.yaml", detection_data, 2, 3, "instances_train.json"),
        ("mask2former/shapes.yaml", panoptic_data, 5, 6, "panoptic_train.json"),
        ("mae/finetune_digits.yaml", lambda root: [], 7, 10, "digits"),
    ],
    ids=["detr", "mask2former", "classifier"],
)
def test_num_classes_that_contradicts_the_data_stops_before_training(
    shapes, tmp_path, config, data, wrong, right, origin
):
    result = vistra("fit", "--config", CONFIGS / config, *data(shapes),
                    f"--model.init_args.network.init_args.num_classes={wrong}",
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert f"num_classes is {wrong} but" in message and f"defines {right} categories" in message
    assert origin in message and "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*.ckpt"))  # stopped before the first step


def test_num_classes_left_out_is_taken_from_the_data(shapes, tmp_path):
    config = (CONFIGS / "detr" / "shapes.yaml").read_text()
    assert "        num_classes: 3\n" in config
    (tmp_path / "mine.yaml").write_text(config.replace("        num_classes: 3\n", ""))
    result = vistra("fit", "--config", tmp_path / "mine.yaml", *detection_data(shapes),
                    "--trainer.max_steps=1", "--data.init_args.batch_size=4",
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    saved = torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu", weights_only=True)
    assert saved["vistra_network"]["init_args"]["num_classes"] == 3
    assert saved["state_dict"]["network.class_embed.weight"].shape[0] == 3 + 1


def test_python_api_checks_the_class_count_before_the_first_step(shapes, tmp_path):
    import lightning as L

    from vistra.data import DetectionDataModule
    from vistra.engine.classes import ClassCountError
    from vistra.models import DETR
    from vistra.tasks import DetectionTask

    annotations = shapes / "annotations"
    data = DetectionDataModule(annotations / "instances_train.json", shapes / "images/train",
                               batch_size=4, scales=[64], crop=None)  # fmt: skip
    trainer = L.Trainer(max_steps=1, logger=False, default_root_dir=tmp_path,
                        enable_progress_bar=False)  # fmt: skip
    with pytest.raises(ClassCountError, match="num_classes is 2 but .* defines 3 categories"):
        trainer.fit(DetectionTask(DETR(2, **TINY_DETR)), data)
    assert trainer.global_step == 0


def test_a_91_class_detr_starts_a_3_class_run(shapes, tmp_path, capfd):
    from vistra.models import DETR

    torch.manual_seed(0)
    coco = DETR(91, **TINY_DETR)
    coco_file = tmp_path / "detr_coco91.pth"
    torch.save({"model": coco.state_dict()}, coco_file)

    mine = DETR(3, checkpoint=str(coco_file), **TINY_DETR)
    assert "91 classes in the file, 3 in the model" in capfd.readouterr().err
    fresh = DETR(3, **TINY_DETR).state_dict()
    for name, value in mine.state_dict().items():
        if name.startswith("class_embed."):
            assert value.shape[0] == 3 + 1
        else:
            torch.testing.assert_close(value, coco.state_dict()[name], rtol=0, atol=0, msg=name)
            assert name not in fresh or fresh[name].shape == value.shape
    with pytest.raises(ValueError, match="wrong shape"):  # only the class head may differ
        DETR(3, checkpoint=str(coco_file), **{**TINY_DETR, "num_queries": 7})

    run = vistra("fit", "--config", CONFIGS / "detr/shapes.yaml", *detection_data(shapes),
                 "--model.init_args.network.init_args.checkpoint", coco_file,
                 *[f"--model.init_args.network.init_args.{k}={v}" for k, v in TINY_DETR.items()],
                 "--trainer.max_steps=1", "--data.init_args.batch_size=4",
                 cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "class head (class_embed) starts from scratch" in run.stderr


def test_a_133_class_mask2former_starts_a_6_class_model(tmp_path, capfd):
    from vistra.models import Mask2Former

    small = dict(backbone="resnet18", dim=32, mask_dim=32, pixel_decoder_layers=1,
                 pixel_ffn_dim=64, decoder_layers=2, ffn_dim=64, heads=2,
                 num_queries=4)  # fmt: skip
    torch.manual_seed(0)
    coco = Mask2Former(133, **small)
    path = tmp_path / "mask2former_coco133.pth"
    torch.save(coco.state_dict(), path)
    mine = Mask2Former(6, checkpoint=str(path), **small)
    assert "133 classes in the file, 6 in the model" in capfd.readouterr().err
    for name, value in mine.state_dict().items():
        if not name.startswith("decoder.class_embed."):
            torch.testing.assert_close(value, coco.state_dict()[name], rtol=0, atol=0, msg=name)
    assert mine.decoder.class_embed.weight.shape[0] == 6 + 1


def test_a_diverging_run_stops_at_the_step_and_keeps_the_good_checkpoint(shapes, tmp_path):
    result = vistra("fit", "--config", CONFIGS / "detr/shapes.yaml", *detection_data(shapes),
                    *[f"--model.init_args.network.init_args.{k}={v}" for k, v in TINY_DETR.items()],
                    "--data.init_args.batch_size=4", "--model.init_args.warmup_steps=0",
                    "--model.init_args.lr=1e6", "--model.init_args.lr_backbone=1e6",
                    "--trainer.max_steps=4", "--checkpoint.every_n_train_steps=1",
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "training diverged at step 1 (epoch 0, batch 1, image ids [" in message
    assert "non-finite loss terms: loss_ce" in message
    # The checkpoint of step 1 (huge but finite weights) is the last one: nothing after it.
    saved = torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu", weights_only=True)
    assert saved["global_step"] == 1
    assert all(torch.isfinite(value).all() for value in saved["state_dict"].values())


def test_predict_refuses_to_write_nan_from_a_diverged_checkpoint(shapes, tmp_path):
    from vistra.models import DETR

    network = DETR(3, **TINY_DETR)
    state = {f"network.{k}": v for k, v in network.state_dict().items()}
    state["network.class_embed.bias"][0] = float("nan")  # what a diverged run leaves
    spec = {"class_path": "vistra.models.detr.DETR", "init_args": network.config}
    path = tmp_path / "diverged.ckpt"
    torch.save({"vistra_network": spec, "state_dict": state,
                "vistra_preprocess": {"resize": "shorter_side", "size": 64, "max_size": 128}},
               path)  # fmt: skip
    result = vistra("predict", "--ckpt", path, "--input", shapes / "images/val", "--output", "out",
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2 and "outputs are not finite" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "detections.json").exists()
