"""Mask2Former through the `vistra` command and the data layer: fit with PQ / AP / mIoU,
predict files that load back, empty images, bad panoptic files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runner import run_vistra

from vistra.data.segmentation import SegmentationDataModule
from vistra.data.shapes import write_shapes
from vistra.data.sources.coco_panoptic import COCOPanopticSource, decode_segment_ids
from vistra.losses import MaskSetCriterion
from vistra.models import Mask2Former

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mask2former" / "shapes.yaml"
NETWORK = "--model.init_args.network.init_args."
TINY = [f"{NETWORK}dim=32", f"{NETWORK}mask_dim=32", f"{NETWORK}num_queries=8",
        f"{NETWORK}decoder_layers=3", f"{NETWORK}pixel_decoder_layers=1"]  # fmt: skip


def vistra(*args, cwd):
    return run_vistra(*args, cwd=cwd)


def _data_args(root: Path) -> list[str]:
    ann = root / "annotations"
    return ["--data.train_annotations", str(ann / "panoptic_train.json"),
            "--data.train_images", str(root / "images" / "train"),
            "--data.val_annotations", str(ann / "panoptic_val.json"),
            "--data.val_images", str(root / "images" / "val"),
            "--data.val_instances", str(ann / "instances_val.json")]  # fmt: skip


def test_fit_reports_pq_ap_miou_and_predict_writes_files_that_load_back(tmp_path):
    write_shapes(tmp_path / "s", train=8, val=4, size=64, seed=1)
    fit = vistra("fit", "--config", CONFIG, *_data_args(tmp_path / "s"), *TINY,
                 "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
                 "--trainer.check_val_every_n_epoch=1", "--data.batch_size=4",
                 "--trainer.default_root_dir", tmp_path / "run", cwd=tmp_path)  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    for printed in ("panoptic quality", "Things", "mIoU", "COCO segm AP", "COCO bbox AP"):
        assert printed in fit.stdout, printed
    checkpoint = next((tmp_path / "run").rglob("last.ckpt"))
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["vistra_categories"]["ids"] == [1, 2, 3, 10, 11, 12]
    assert saved["vistra_categories"]["thing_labels"] == [0, 1, 2]

    predict = vistra("predict", "--config", CONFIG, *_data_args(tmp_path / "s"), *TINY,
                     "--ckpt_path", checkpoint, "--trainer.enable_progress_bar=false",
                     "--trainer.default_root_dir", tmp_path / "pred", cwd=tmp_path)  # fmt: skip
    assert predict.returncode == 0, predict.stderr[-3000:]
    out = next((tmp_path / "pred").rglob("predictions"))
    panoptic = json.loads((out / "panoptic.json").read_text())["annotations"]
    assert {entry["image_id"] for entry in panoptic} == {1, 2, 3, 4}
    for entry in panoptic:  # every id in the PNG is a listed segment, and back
        ids = decode_segment_ids(out / "panoptic" / entry["file_name"])
        assert ids.shape == (64, 64)
        assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in entry["segments_info"]}
    semantic = np.asarray(Image.open(out / "semantic" / "000001.png"))
    assert semantic.shape == (64, 64) and semantic.max() < 6
    assert len(list((out / "pictures").glob("*.png"))) == 4
    from pycocotools.coco import COCO

    instances = json.loads((out / "instances.json").read_text())
    ground_truth = COCO(str(tmp_path / "s" / "annotations" / "instances_val.json"))
    assert len(ground_truth.loadRes(instances).getAnnIds()) == len(instances) > 0
    assert {r["category_id"] for r in instances} <= {1, 2, 3}


def test_batches_with_empty_images_train(tmp_path):
    model = Mask2Former(3, backbone="resnet18", frozen_batchnorm=False, dim=32, mask_dim=32,
                        pixel_decoder_layers=1, decoder_layers=2, num_queries=5)  # fmt: skip
    criterion = MaskSetCriterion(3, num_points=64)
    images = torch.randn(2, 3, 64, 64)
    empty = {"labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 64, 64, dtype=torch.bool)}  # fmt: skip
    one = {"labels": torch.tensor([1]), "masks": torch.zeros(1, 64, 64, dtype=torch.bool)}
    one["masks"][0, 10:30, 10:40] = True
    for targets in ([empty, empty], [empty, one]):
        terms = criterion(model(images), targets)
        loss = criterion.total(terms)
        assert torch.isfinite(loss)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.zero_grad()
    assert terms["loss_mask"] > 0  # the second batch has a mask to learn


def test_panoptic_source_reads_the_real_coco_sample():
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-sample"
    if not shared.is_dir():
        pytest.skip("the shared COCO sample is not on this machine")
    source = COCOPanopticSource(shared / "panoptic.json", shared / "images", shared / "panoptic")
    assert source.num_classes == 133 and len(source.thing_labels) == 80
    image, target = source[0]
    ids, segments = source.ground_truth(0)
    kept = [s for s in segments if not s.iscrowd]
    assert target["masks"].shape == (len(kept), *image.shape[-2:])
    for mask, segment in zip(target["masks"], kept):
        assert torch.equal(mask, torch.from_numpy(ids == segment.id))


def test_bad_panoptic_files_are_named(tmp_path):
    paths = write_shapes(tmp_path / "s", train=2, val=0, size=48)["train"]
    data = json.loads(paths["panoptic"].read_text())
    data["annotations"][0]["segments_info"][0]["category_id"] = 99
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"annotations\[0\]\.segments_info\[0\]\.category_id"):
        COCOPanopticSource(broken, paths["images"], paths["panoptic_pngs"])
    broken.write_text('{"images": [}')
    with pytest.raises(ValueError, match="broken.json: malformed JSON at line 1"):
        COCOPanopticSource(broken, paths["images"], paths["panoptic_pngs"])
    data = json.loads(paths["panoptic"].read_text())
    data["annotations"][0]["segments_info"] = data["annotations"][0]["segments_info"][1:]
    broken.write_text(json.dumps(data))
    source = COCOPanopticSource(broken, paths["images"], paths["panoptic_pngs"])
    with pytest.raises(ValueError, match="000001.png: segment id"):
        source[0]


def test_large_scale_jitter_keeps_masks_with_their_pixels(tmp_path):
    paths = write_shapes(tmp_path / "s", train=6, val=0, size=64)["train"]
    datamodule = SegmentationDataModule(str(paths["panoptic"]), str(paths["images"]),
                                        batch_size=6, size=64, scale_range=(0.3, 2.0))  # fmt: skip
    source = datamodule.train_source
    originals = [len(source[i][1]["labels"]) for i in range(len(source))]
    dropped = 0
    for epoch in range(3):
        datamodule.hparams.seed = epoch
        images, pixel_mask, targets = next(iter(datamodule.train_dataloader()))
        assert images.shape == (6, 3, 64, 64)
        pad = torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225])[:, None, None]
        for image, target in zip(images, targets):
            masks = target["masks"]
            assert len(masks) == len(target["labels"]) and masks.flatten(1).any(1).all()
            # Shapes have no void: the masks cover exactly the pixels that are not padding.
            real = ~torch.isclose(image, pad, atol=1e-4).all(0)
            assert torch.equal(masks.any(0), real)
            assert not (masks.sum(0) > 1).any()  # panoptic masks do not overlap
        dropped += sum(originals) - sum(len(t["labels"]) for t in targets)
    assert dropped > 0  # zooming in crops some segments away entirely


def test_mask2former_learns_held_out_shapes(tmp_path):
    """The demo recipe on a smaller set: held-out PQ from ~0 (random weights) to >= 0.3 in
    200 steps (about 2 minutes on 2 CPU cores)."""
    from vistra.cli import VistraCLI

    write_shapes(tmp_path / "s", train=800, val=100, size=96, seed=3)
    args = ["--config", str(CONFIG), "--trainer.default_root_dir", str(tmp_path / "run"),
            "--trainer.enable_progress_bar=false", "--trainer.max_epochs=4",
            "--trainer.check_val_every_n_epoch=4", *_data_args(tmp_path / "s")]  # fmt: skip
    before = VistraCLI(args=["validate", *args]).model.last_metrics
    after = VistraCLI(args=["fit", *args]).model.last_metrics
    print(
        f"PQ {before['PQ']:.3f} -> {after['PQ']:.3f}, things {after['PQ_th']:.3f}, "
        f"stuff {after['PQ_st']:.3f}, mIoU {before['mIoU']:.3f} -> {after['mIoU']:.3f}"
    )
    assert before["PQ"] < 0.1
    assert after["PQ"] >= 0.3 and after["PQ_st"] >= 0.6
    assert after["mIoU"] > before["mIoU"] + 0.2


def test_instance_format_trains_and_reports_mask_ap(tmp_path):
    from vistra.cli import VistraCLI

    write_shapes(tmp_path / "s", train=8, val=4, size=64, seed=2)
    ann = tmp_path / "s" / "annotations"
    cli = VistraCLI(args=[
        "fit", "--config", str(CONFIG), *TINY, "--data.format=instances",
        "--model.init_args.network.init_args.num_classes=3",
        "--data.train_annotations", str(ann / "instances_train.json"),
        "--data.train_images", str(tmp_path / "s" / "images" / "train"),
        "--data.val_annotations", str(ann / "instances_val.json"),
        "--data.val_images", str(tmp_path / "s" / "images" / "val"),
        "--data.batch_size=4", "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1",
        "--trainer.enable_progress_bar=false", "--trainer.default_root_dir", str(tmp_path / "r"),
    ])  # fmt: skip
    metrics = cli.model.last_metrics
    assert "mask_AP" in metrics and "box_AP50" in metrics
    assert "PQ" not in metrics and "mIoU" not in metrics  # instance data: no panoptic truth
    assert cli.datamodule.thing_labels == [0, 1, 2]
