"""The README's "Pre-train on your images, then detect or segment", through ``vistra fit``: the
session's MAE and SupCon runs, then the pre-trained templates with their ``backbone_checkpoint``
set to those runs, for one step. The fine-tuning run must start from exactly the pre-trained
encoder: after one AdamW step no weight can be further from its start than the step's largest
learning rate (Adam's first update is lr x g / |g| per weight, plus the decoupled decay), and
frozen weights not at all; random weights would be orders of magnitude further."""

from __future__ import annotations

from pathlib import Path

import torch
from command import SMALL, shapes_data_args
from families import CONFIGS, NETWORK
from runner import run_vistra

ONE_STEP = ["--trainer.max_steps=1", "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false", "--data.init_args.num_workers=0"]  # fmt: skip


def fine_tune(config: str, shapes: Path, kind: str, folder: Path, *args: str) -> dict:
    done = run_vistra("fit", "--config", CONFIGS / config, *shapes_data_args(shapes, kind),
                      *ONE_STEP, *args, cwd=folder)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "starts from" in done.stderr  # the loader says what the backbone starts from
    (checkpoint,) = folder.rglob("last.ckpt")
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["global_step"] == 1
    return saved


def assert_one_step_from(tuned: dict, start: dict, largest_lr: float, weight_decay: float,
                         frozen=lambda key: False) -> None:  # fmt: skip
    assert tuned.keys() <= start.keys() and tuned
    moved = 0
    for key, value in tuned.items():
        change = (value.float() - start[key].float()).abs()
        if frozen(key):
            assert not change.any(), key
            continue
        bound = largest_lr * (1 + weight_decay * start[key].float().abs()) * 1.001 + 1e-7
        assert (change <= bound).all(), (key, float(change.max()))
        moved += bool(change.any())
    assert moved  # the step did train the encoder


def parameters_of(saved: dict, prefix: str, names) -> dict:
    return {k: saved["state_dict"][prefix + k] for k in names}


def test_mae_then_mask2former_with_the_vit_backbone(trained, family_data, tmp_path):
    mae = trained("mae")  # configs/mae/vit_tiny_digits.yaml: ViT-tiny, 4 blocks, 8-pixel patches
    shrink = [a for a in SMALL["mask2former"] if "backbone=" not in a]
    tuned = fine_tune(
        "mask2former/custom_panoptic_pretrained.yaml", family_data / "shapes", "panoptic",
        tmp_path, *shrink, f"{NETWORK}backbone=vit_tiny", f"{NETWORK}backbone_checkpoint={mae}",
        f"{NETWORK}backbone_options={{depth: 4, patch_size: 8, pretrain_image_size: 32, "
        "image_size: 64, window_size: 4}", "--data.init_args.size=64",
        "--data.init_args.eval_size=64",
    )  # fmt: skip
    encoder = torch.load(mae, weights_only=True)["state_dict"]
    trunk = [k[len("network.backbone.body.") :] for k in tuned["state_dict"]
             if k.startswith("network.backbone.body.") and ".pyramid." not in k
             and "rel_pos" not in k]  # fmt: skip
    assert len(trunk) == 2 + 1 + 4 * 12  # patch projection, position table, 4 blocks
    hp = tuned["hyper_parameters"]
    assert_one_step_from(parameters_of(tuned, "network.backbone.body.", trunk),
                         parameters_of({"state_dict": encoder}, "network.", trunk),
                         hp["lr"] * hp["backbone_multiplier"], hp["weight_decay"])  # fmt: skip


def test_supcon_then_detr_with_the_resnet(trained, family_data, tmp_path):
    supcon = trained("supcon")  # configs/supcon/resnet18_digits.yaml: ResNet-18
    tuned = fine_tune("detr/custom_coco_pretrained.yaml", family_data / "shapes", "instances",
                      tmp_path, *SMALL["detr"], f"{NETWORK}backbone_checkpoint={supcon}",
                      "--data.init_args.scales=[64]", "--data.init_args.crop=null",
                      "--data.init_args.eval_size=64")  # fmt: skip
    encoder = torch.load(supcon, weights_only=True)["state_dict"]
    backbone = [k[len("network.backbone.") :] for k in tuned["state_dict"]
                if k.startswith("network.backbone.")]  # fmt: skip
    assert any(k.startswith("layer4.") for k in backbone)
    hp = tuned["hyper_parameters"]

    # DETR's recipe: frozen BatchNorm, the stem and first stage not trained.
    def frozen(key: str) -> bool:
        return (
            key.startswith(("conv1.", "bn1.", "layer1.")) or ".bn" in key or ("downsample.1" in key)
        )

    assert_one_step_from(parameters_of(tuned, "network.backbone.", backbone),
                         parameters_of({"state_dict": encoder}, "network.encoder.", backbone),
                         hp["lr_backbone"], hp["weight_decay"], frozen)  # fmt: skip
