"""DETR model contract, batching invariance, checkpoint conversion and the COCO evaluator."""

from __future__ import annotations

import copy

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vistra.data.shapes import write_shapes
from vistra.evaluation.coco import COCOEvaluator, detections_to_coco
from vistra.models import DETR, detr_postprocess

SMALL = dict(backbone="resnet18", hidden_dim=64, num_heads=4, num_encoder_layers=2,
             num_decoder_layers=2, ffn_dim=128, num_queries=7)  # fmt: skip


@pytest.mark.parametrize("options", [dict(), dict(backbone_stage=3, frozen_batchnorm=False),
                                     dict(dilation=True, aux_loss=False)])  # fmt: skip
def test_forward_backward_shapes(options):
    torch.manual_seed(0)
    model = DETR(5, **{**SMALL, **options})
    images = torch.randn(2, 3, 96, 64)
    outputs = model(images)
    assert outputs["pred_logits"].shape == (2, 7, 6) and outputs["pred_boxes"].shape == (2, 7, 4)
    assert ((outputs["pred_boxes"] > 0) & (outputs["pred_boxes"] < 1)).all()
    assert len(outputs.get("aux_outputs", [])) == (1 if model.aux_loss else 0)
    outputs["pred_logits"].sum().backward()
    assert model.class_embed.weight.grad is not None
    frozen = [n for n, p in model.backbone.named_parameters() if not p.requires_grad]
    assert all(n.startswith(("conv1", "bn1", "layer1")) for n in frozen) and frozen


def test_batched_with_padding_gives_the_detections_of_the_image_alone():
    torch.manual_seed(0)
    model = DETR(3, **SMALL).eval()
    small, large = torch.randn(3, 64, 96), torch.randn(3, 128, 128)
    images = torch.zeros(2, 3, 128, 128)
    images[0, :, :64, :96], images[1] = small, large
    pixel_mask = torch.zeros(2, 128, 128, dtype=torch.bool)
    pixel_mask[0, :64, :96], pixel_mask[1] = True, True
    with torch.no_grad():
        batched = detr_postprocess(model(images, pixel_mask), torch.tensor([[64, 96], [128, 128]]))
        alone = detr_postprocess(model(small[None]), torch.tensor([[64, 96]]))
    # The transformer honours the mask exactly; the CNN sees zero padding where the image alone
    # sees its own zero border, which moves boxes by a fraction of a pixel at most.
    assert torch.equal(batched[0]["labels"], alone[0]["labels"])
    assert torch.allclose(batched[0]["scores"], alone[0]["scores"], atol=2e-3)
    assert torch.allclose(batched[0]["boxes"], alone[0]["boxes"], atol=0.25)


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("shapes"), train=0, val=10, size=64, seed=1)["val"]


def _ground_truth_as_predictions(coco: COCO) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0} for a in coco.dataset["annotations"]]  # fmt: skip


def test_evaluator_gives_one_for_the_ground_truth(shapes_val):
    evaluator = COCOEvaluator(shapes_val["instances"])
    evaluator.update(evaluator.coco.getImgIds(), _ground_truth_as_predictions(evaluator.coco))
    stats, table = evaluator.compute()
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    assert "Average Precision" in table


def test_evaluator_matches_pycocotools_on_a_perturbed_set(shapes_val, tmp_path):
    evaluator = COCOEvaluator(shapes_val["instances"])
    coco = evaluator.coco
    generator = torch.Generator().manual_seed(0)
    category_ids = sorted(coco.getCatIds())
    results, reference = [], []
    for image_id in coco.getImgIds():
        annotations = coco.imgToAnns[image_id]
        xywh = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32)
        xywh = xywh + 3 * torch.randn(xywh.shape, generator=generator)
        xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        labels = torch.tensor([category_ids.index(a["category_id"]) for a in annotations])
        scores = torch.rand(len(annotations), generator=generator)
        detection = {"boxes": xyxy, "scores": scores, "labels": labels}
        results += detections_to_coco(image_id, detection, category_ids)
        reference += [{"image_id": image_id, "category_id": category_ids[int(c)],
                       "bbox": b.tolist(), "score": float(s)}
                      for b, c, s in zip(xywh, labels, scores)]  # fmt: skip
    evaluator.update(coco.getImgIds(), results)
    stats, _ = evaluator.compute(tmp_path / "predictions.json")
    direct = COCOeval(copy.deepcopy(coco), coco.loadRes(reference), "bbox")
    direct.evaluate(), direct.accumulate(), direct.summarize()
    assert 0.05 < stats["AP"] < 0.95  # perturbed: neither perfect nor useless
    assert stats["AP"] == pytest.approx(direct.stats[0], abs=2e-3)
    assert stats["AP50"] == pytest.approx(direct.stats[1], abs=2e-3)
    assert (tmp_path / "predictions.json").is_file()
