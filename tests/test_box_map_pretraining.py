"""Box-map backbone pre-training: the per-pixel targets, learning, and the file DETR loads."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from vistra.cli import VistraCLI
from vistra.convert.files import CheckpointMismatchError
from vistra.data.box_maps import IGNORE_INDEX, box_class_maps
from vistra.data.shapes import write_shapes
from vistra.models import DETR

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "detr" / "shapes_backbone.yaml"


def test_box_class_maps_by_hand():
    # image 0: 8x6 real pixels of a 10x8 padded canvas; a big box of class 2 and a small one
    # of class 0 inside it; image 1: no boxes.
    pixel_mask = torch.zeros(2, 8, 10, dtype=torch.bool)
    pixel_mask[0, :6, :8] = True
    pixel_mask[1] = True
    big = [4 / 8, 3 / 6, 8 / 8, 6 / 6]  # the whole real image, cxcywh normalized
    small = [3 / 8, 2 / 6, 2 / 8, 2 / 6]  # x 2..4, y 1..3
    targets = [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([small, big])},
        {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)},
    ]
    maps = box_class_maps(targets, pixel_mask)
    expected = torch.full((8, 10), IGNORE_INDEX)
    expected[:6, :8] = 3
    expected[1:3, 2:4] = 1  # the smaller box wins where they overlap
    assert torch.equal(maps[0], expected)
    assert torch.equal(maps[1], torch.zeros(8, 10, dtype=torch.long))


def test_box_map_pretraining_learns_and_detr_loads_the_backbone(tmp_path):
    shapes = write_shapes(tmp_path / "s", train=256, val=4, size=64, seed=1, max_objects=3)
    out = tmp_path / "backbone.pt"
    cli = VistraCLI(args=[
        "fit", "--config", str(CONFIG),
        "--data.train_annotations", str(shapes["train"]["instances"]),
        "--data.train_images", str(shapes["train"]["images"]),
        "--data.val_annotations", str(shapes["val"]["instances"]),
        "--data.val_images", str(shapes["val"]["images"]),
        "--trainer.max_epochs=80", "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false", "--trainer.logger=false",
        "--trainer.default_root_dir", str(tmp_path / "run"),
        "--model.init_args.backbone_out", str(out),
    ])  # fmt: skip
    task = cli.model
    # 640 steps; then training images in evaluation mode against their box maps
    loader = cli.datamodule.eval_loader(cli.datamodule.train_source)
    images, pixel_mask, targets = next(iter(loader))
    labels = box_class_maps(targets, pixel_mask)
    task.eval()
    with torch.no_grad():
        correct = task(images).argmax(1) == labels
    foreground = (labels > 0) & (labels != IGNORE_INDEX)
    background = labels == 0
    # "all background" would score 0 on foreground pixels; chance among 3 shapes is 1/3
    assert correct[foreground].float().mean() > 0.45, correct[foreground].float().mean()
    assert correct[background].float().mean() > 0.95, correct[background].float().mean()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every backbone weight is in the file
        detr = DETR(3, backbone="lcnet_050", backbone_stage=2, frozen_batchnorm=False,
                    backbone_checkpoint=str(out), hidden_dim=32, num_encoder_layers=1,
                    num_decoder_layers=1, ffn_dim=64, num_queries=4)  # fmt: skip
    for name, tensor in task.backbone.state_dict().items():
        assert torch.equal(detr.backbone.state_dict()[name], tensor), name

    partial = {k: v for k, v in torch.load(out).items() if not k.startswith("blocks.1")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(
        CheckpointMismatchError, match=r"partial\.pt: .* \d+ of its \d+ weights are not in the file"
    ):
        DETR(
            3,
            backbone="lcnet_050",
            backbone_stage=2,
            backbone_checkpoint=str(tmp_path / "partial.pt"),
        )
