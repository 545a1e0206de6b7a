"""Mask2Former training with panoptic / instance / semantic evaluation and prediction files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from vistra.checkpoint import CATEGORIES_KEY, describe_for_inference
from vistra.evaluation.coco import STAT_NAMES, COCOEvaluator, masks_to_coco, tensor_image_ids
from vistra.evaluation.panoptic import PanopticQuality, Segment, merge_counts
from vistra.evaluation.semantic import CONVENTIONS as MIOU_CONVENTIONS
from vistra.evaluation.semantic import MeanIoU
from vistra.losses import MaskHungarianMatcher, MaskSetCriterion
from vistra.models.mask2former.postprocess import (
    instance_inference,
    panoptic_inference,
    resize_mask_logits,
    semantic_inference,
)
from vistra.tasks.class_count import ClassCountCheck
from vistra.tasks.optim import adamw, cosine_with_warmup, poly_with_warmup, training_steps
from vistra.tasks.set_prediction import SetPredictionSteps


class SegmentationTask(ClassCountCheck, SetPredictionSteps, L.LightningModule):
    """Mask2Former training (``network``: a ``Mask2Former``) with universal evaluation.

    Validation reports what the data allows: PQ / SQ / RQ (all, things, stuff) on COCO
    panoptic data, mIoU always (the semantic map of panoptic data: void and crowd ignored), and
    mask + box AP through pycocotools when the data module has ``val_instances``. The tables are
    printed; numbers are logged as ``val/PQ``, ``val/mIoU``, ``val/mask_AP``, ...

    Args:
        network: the model.
        cost_class, cost_mask, cost_dice: matching costs (2, 5, 5).
        weight_ce, weight_mask, weight_dice, eos_coef: loss weights (2, 5, 5, 0.1).
        num_points, oversample, importance: point-sampled loss (12544, 3, 0.75).
        lr, backbone_multiplier, weight_decay: AdamW (paper: 1e-4, 0.1, 0.05).
        warmup_steps: linear warm-up; schedule: "poly" (paper: power 0.9) or "cosine".
        object_mask_threshold, overlap_threshold: panoptic inference (0.8, 0.8).
        top_k: instances kept per image (100).
        miou_convention: "detectron2" (mean over classes in the ground truth: the paper's
            numbers) or "mmseg" (over classes with a non-empty union); see
            ``vistra.evaluation.semantic``.
        ignore_crowd: panoptic data's crowd pixels are left out of the semantic ground truth
            (default: labelled with their category, as Mask2Former's conversion does).
    """

    def __init__(
        self,
        network: nn.Module,
        cost_class: float = 2.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        weight_ce: float = 2.0,
        weight_mask: float = 5.0,
        weight_dice: float = 5.0,
        eos_coef: float = 0.1,
        num_points: int = 12544,
        oversample: float = 3.0,
        importance: float = 0.75,
        lr: float = 1e-4,
        backbone_multiplier: float = 0.1,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        schedule: str = "poly",
        object_mask_threshold: float = 0.8,
        overlap_threshold: float = 0.8,
        top_k: int = 100,
        miou_convention: str = "detectron2",
        ignore_crowd: bool = False,
    ) -> None:
        super().__init__()
        if schedule not in ("poly", "cosine"):
            raise ValueError(f"schedule must be 'poly' or 'cosine', got {schedule!r}")
        if miou_convention not in MIOU_CONVENTIONS:
            raise ValueError(f"miou_convention must be one of {MIOU_CONVENTIONS}, "
                             f"got {miou_convention!r}")  # fmt: skip
        self.save_hyperparameters(ignore=["network"])
        self.network = network
        matcher = MaskHungarianMatcher(cost_class, cost_mask, cost_dice, num_points)
        self.criterion = MaskSetCriterion(network.num_classes, matcher, eos_coef, weight_ce,
                                          weight_mask, weight_dice, num_points, oversample,
                                          importance)  # fmt: skip
        self.category_ids: list[int] | None = None
        self.class_names: list[str] | None = None
        self.thing_labels: list[int] | None = None
        self.last_metrics: dict[str, float] = {}

    def configured_classes(self) -> int:
        return self.network.num_classes

    # -- inference -------------------------------------------------------------------------------

    def _categories_from_data(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None and hasattr(datamodule, "category_ids"):
            self.category_ids = list(datamodule.category_ids)
            self.class_names = list(datamodule.classes)
            self.thing_labels = list(datamodule.thing_labels)
        if self.category_ids is None:
            self.category_ids = list(range(self.network.num_classes))
            self.thing_labels = []

    def infer(self, outputs: dict, images: Tensor, targets: list[dict]) -> list[dict]:
        """Per image, at its original size: ``{"semantic" [H, W], "panoptic" (ids [H, W],
        segments with "category_id"), "instances"}`` (panoptic only for models with things and
        stuff, instances only with things)."""
        if self.category_ids is None:
            self._categories_from_data()
        hp = self.hparams
        padded = tuple(images.shape[-2:])
        things = set(self.thing_labels or [])
        stuff_present = len(things) < self.network.num_classes
        results = []
        for index, target in enumerate(targets):
            size = tuple(int(v) for v in target["size"])
            original = tuple(int(v) for v in target["orig_size"])
            logits = outputs["pred_logits"][index].float()
            masks = resize_mask_logits(outputs["pred_masks"][index], padded, size, original)
            result = {"image_id": tensor_image_ids([target])[0],
                      "semantic": semantic_inference(logits, masks).argmax(0)}  # fmt: skip
            if things:
                result["instances"] = instance_inference(logits, masks, hp.top_k, sorted(things))
                if stuff_present:
                    ids, segments = panoptic_inference(
                        logits, masks, things, hp.object_mask_threshold, hp.overlap_threshold
                    )
                    for segment in segments:
                        segment["category_id"] = self.category_ids[segment["label"]]
                    result["panoptic"] = (ids, segments)
            results.append(result)
        return results

    # -- evaluation ------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._categories_from_data()
        datamodule = getattr(self.trainer, "datamodule", None)
        self.val_source = getattr(datamodule, "val_source", None)
        self.index_of = {}
        if self.val_source is not None and hasattr(self.val_source, "image_ids"):
            self.index_of = {image_id: i for i, image_id in enumerate(self.val_source.image_ids)}
        is_panoptic = hasattr(self.val_source, "ground_truth")
        things = {self.category_ids[i] for i in self.thing_labels or []}
        stuff = set(self.category_ids) - things
        self.pq = PanopticQuality(things, stuff) if is_panoptic and things and stuff else None
        has_semantic = hasattr(self.val_source, "label_map") or is_panoptic
        self.miou = (MeanIoU(self.network.num_classes, convention=self.hparams.miou_convention)
                     if has_semantic else None)  # fmt: skip
        hparams = getattr(datamodule, "hparams", None) or {}
        self.instance_file = hparams.get("val_instances")
        self.coco_results: list[dict] = []
        self.coco_images: list[int] = []

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch, batch_idx: int) -> None:
        _, outputs = self._step(batch, "val")
        self._score(outputs, batch)

    def test_step(self, batch, batch_idx: int) -> None:
        _, outputs = self._step(batch, "test")
        self._score(outputs, batch)

    def _score(self, outputs: dict, batch) -> None:
        if self.val_source is None:
            return
        images, _, targets = batch
        for result in self.infer(outputs, images, targets):
            index = self.index_of.get(result["image_id"], result["image_id"])
            if self.miou is not None:
                truth = torch.from_numpy(self._semantic_truth(index))
                self.miou.update(result["semantic"].cpu(), truth)
            if self.pq is not None and "panoptic" in result:
                truth_ids, truth_segments = self.val_source.ground_truth(index)
                ids, segments = result["panoptic"]
                predicted = [Segment(s["id"], s["category_id"]) for s in segments]
                self.pq.update(ids.cpu().numpy(), predicted, truth_ids, truth_segments)
            if self.instance_file is not None and "instances" in result:
                self.coco_results += masks_to_coco(result["image_id"], result["instances"],
                                                   self.category_ids)  # fmt: skip
                self.coco_images.append(result["image_id"])

    def _semantic_truth(self, index: int) -> np.ndarray:
        if hasattr(self.val_source, "label_map"):
            return self.val_source.label_map(index)
        return self.val_source.semantic_map(index, self.hparams.ignore_crowd)

    def on_validation_epoch_end(self) -> None:
        self._report("val")

    def on_test_epoch_end(self) -> None:
        self._report("test")

    def _report(self, stage: str) -> None:
        if self.val_source is None or self.trainer.sanity_checking:
            return
        self._gather()
        metrics = {}
        lines = [f"\nMask2Former, {stage}, epoch {self.current_epoch}"]
        if self.pq is not None:
            metrics.update(self.pq.compute())
            lines += ["panoptic quality (%):", self.pq.table()]
        if self.miou is not None:
            semantic = self.miou.compute()
            metrics["mIoU"] = semantic["mIoU"]
            lines.append(f"semantic: mIoU {100 * semantic['mIoU']:.1f}, pixel accuracy "
                         f"{100 * semantic['pixel_accuracy']:.1f}")  # fmt: skip
        if self.instance_file is not None:
            log_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
            output = log_dir / "predictions" / f"{stage}_instances_{self.current_epoch:04d}.json"
            for iou_type, prefix in (("segm", "mask_"), ("bbox", "box_")):
                evaluator = COCOEvaluator(self.instance_file, iou_type)
                evaluator.update(self.coco_images, self.coco_results)
                stats, table = evaluator.compute(output if iou_type == "segm" else None)
                metrics.update({prefix + name: stats[name] for name in STAT_NAMES})
                lines += [f"COCO {iou_type} AP:", table]
        if self.trainer.is_global_zero:
            print("\n".join(lines))
        self.log_dict({f"{stage}/{k}": (0.0 if math.isnan(v) else v) for k, v in metrics.items()},
                      rank_zero_only=True)  # fmt: skip
        self.last_metrics = metrics

    def _gather(self) -> None:
        """Merge PQ counts, the confusion matrix and instance results over ranks."""
        if self.trainer.world_size <= 1:
            return
        if self.miou is not None:
            torch.distributed.all_reduce(self.miou.confusion)
        gathered = [None] * self.trainer.world_size
        counts = self.pq.counts if self.pq is not None else {}
        torch.distributed.all_gather_object(gathered, (counts, self.coco_results, self.coco_images))
        if self.pq is not None:
            self.pq.counts = merge_counts([rank_counts for rank_counts, _, _ in gathered])
        self.coco_results = [r for g in gathered for r in g[1]]
        self.coco_images = [i for g in gathered for i in g[2]]

    # -- prediction ------------------------------------------------------------------------------

    def on_predict_epoch_start(self) -> None:
        self._categories_from_data()
        self._predictions: list[dict] = []

    def predict_step(self, batch, batch_idx: int) -> list[dict]:
        images, pixel_mask, targets = batch
        results = self.infer(self.network(images, pixel_mask), images, targets)
        self._predictions.extend(results)
        return results

    def on_predict_epoch_end(self) -> None:
        """Write under ``<log_dir>/predictions/``: ``panoptic.json`` + ``panoptic/<image>.png``
        (COCO panoptic result format), ``instances.json`` (COCO segm results), ``semantic/``
        label PNGs and ``pictures/`` overlays with a legend."""
        from PIL import Image

        from vistra.data.sources.base import load_image
        from vistra.visualize import segmentation_overlay, write_panoptic_png

        out = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "predictions"
        source = getattr(getattr(self.trainer, "datamodule", None), "val_source", None)
        index_of = {i: k for k, i in enumerate(getattr(source, "image_ids", []))}
        names = self.class_names or [str(i) for i in self.category_ids]
        panoptic_entries, instances = [], []
        for folder in ("semantic", "pictures", "panoptic"):
            (out / folder).mkdir(parents=True, exist_ok=True)
        for result in self._predictions:
            image_id = result["image_id"]
            index = index_of.get(image_id, image_id)
            stem = Path(source.image_path(index)).stem if source is not None else str(image_id)
            semantic = result["semantic"].cpu().numpy().astype(np.uint8)
            Image.fromarray(semantic).save(out / "semantic" / f"{stem}.png")
            if "panoptic" in result:
                ids, segments = result["panoptic"]
                write_panoptic_png(ids.cpu().numpy(), out / "panoptic" / f"{stem}.png")
                panoptic_entries.append({
                    "image_id": image_id, "file_name": f"{stem}.png",
                    "segments_info": [{"id": s["id"], "category_id": s["category_id"],
                                       "isthing": int(s["isthing"]), "score": s["score"],
                                       "area": s["area"]} for s in segments],
                })  # fmt: skip
            if "instances" in result:
                instances += masks_to_coco(image_id, result["instances"], self.category_ids)
            if source is not None:
                picture = segmentation_overlay(load_image(source.image_path(index)), result, names)
                picture.save(out / "pictures" / f"{stem}.png")
        (out / "instances.json").write_text(json.dumps(instances))
        (out / "panoptic.json").write_text(json.dumps({"annotations": panoptic_entries}))
        print(f"wrote {out}: panoptic.json + panoptic/ ({len(panoptic_entries)} images), "
              f"instances.json ({len(instances)} instances), semantic/, pictures/")  # fmt: skip

    # -- optimisation and checkpoints --------------------------------------------------------------

    def configure_optimizers(self):
        hp = self.hparams
        backbone = [p for p in self.network.backbone.parameters() if p.requires_grad]
        backbone_ids = {id(p) for p in backbone}
        decay, no_decay = [], []
        for name, p in self.network.named_parameters():
            if not p.requires_grad or id(p) in backbone_ids:
                continue
            # The paper's recipe: no weight decay on embeddings (queries, levels) and norms.
            (no_decay if p.ndim == 1 or "embed" in name and "mask_embed" not in name
             else decay).append(p)  # fmt: skip
        groups = [{"params": decay, "lr": hp.lr},
                  {"params": no_decay, "lr": hp.lr, "weight_decay": 0.0}]  # fmt: skip
        if backbone:
            groups.append({"params": backbone, "lr": hp.lr * hp.backbone_multiplier})
        optimizer = adamw(groups, self.trainer, lr=hp.lr, weight_decay=hp.weight_decay)
        _, total_steps = training_steps(self.trainer)
        if hp.schedule == "cosine":
            schedule = cosine_with_warmup(optimizer, hp.warmup_steps, total_steps)
        else:
            schedule = poly_with_warmup(optimizer, hp.warmup_steps, total_steps)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}  # fmt: skip

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        describe_for_inference(checkpoint, self.network, self._trainer)
        if self.category_ids is None and self._trainer is not None:
            self._categories_from_data()
        checkpoint[CATEGORIES_KEY] = {"ids": self.category_ids, "names": self.class_names,
                                      "thing_labels": self.thing_labels}  # fmt: skip

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        categories = checkpoint.get(CATEGORIES_KEY) or {}
        self.category_ids, self.class_names = categories.get("ids"), categories.get("names")
        self.thing_labels = categories.get("thing_labels")
