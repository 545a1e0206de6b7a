"""Mask2Former training with panoptic / instance / semantic evaluation and prediction files."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from vistra.evaluation.coco import STAT_NAMES, COCOEvaluator, masks_to_coco, tensor_image_ids
from vistra.evaluation.panoptic import PanopticQuality, Segment, merge_counts
from vistra.evaluation.semantic import CONVENTIONS as MIOU_CONVENTIONS
from vistra.evaluation.semantic import MeanIoU
from vistra.inference.network import named_outputs
from vistra.inference.postprocess import to_results
from vistra.inference.results import Segmentation
from vistra.inference.spec import InferenceSpec, Thresholds
from vistra.losses import MaskHungarianMatcher, MaskSetCriterion
from vistra.tasks.class_count import ClassCountCheck
from vistra.tasks.inference import InferenceSteps
from vistra.tasks.optim import (
    adamw,
    cosine_with_warmup,
    dense_parameter_groups,
    poly_with_warmup,
    training_steps,
)
from vistra.tasks.sample_randomness import sample_generators
from vistra.tasks.set_prediction import SetPredictionSteps


class SegmentationTask(InferenceSteps, ClassCountCheck, SetPredictionSteps, L.LightningModule):
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
        layer_decay: a ViT backbone's blocks train at lr x backbone_multiplier x
            layer_decay^(depth + 1 - layer) (ViTDet); None: the backbone's own (0.7 for ViT-B,
            0.8 L, 0.9 H); 1 turns it off. A timm backbone ignores it.
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
        layer_decay: float | None = None,
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

    def inference_thresholds(self) -> Thresholds:
        hp = self.hparams
        return Thresholds(hp.object_mask_threshold, hp.overlap_threshold, hp.top_k)

    def infer(self, outputs: dict, images: Tensor, targets: list[dict]) -> list[Segmentation]:
        """Per image, at its original size: the semantic map, panoptic segments (models with
        things and stuff) and instances (with things), as ``vistra predict`` gives them."""
        if self.category_ids is None:
            self._categories_from_data()
        categories = self.inference_categories()
        spec = InferenceSpec("segmentation", None, categories["names"], categories["ids"],
                             categories["thing_labels"], self.inference_thresholds())  # fmt: skip
        raw = named_outputs("segmentation", (outputs["pred_logits"], outputs["pred_masks"]),
                            cpu=False)  # fmt: skip
        input_sizes = [tuple(int(v) for v in t["size"]) for t in targets]
        original_sizes = [tuple(int(v) for v in t["orig_size"]) for t in targets]
        return to_results(raw, spec, tuple(images.shape[-2:]), input_sizes, original_sizes)

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
        image_ids = tensor_image_ids(targets)
        for image_id, result in zip(image_ids, self.infer(outputs, images, targets)):
            index = self.index_of.get(image_id, image_id)
            if self.miou is not None:
                truth = torch.from_numpy(self._semantic_truth(index))
                self.miou.update(result.semantic.cpu(), truth)
            if self.pq is not None and result.panoptic is not None:
                truth_ids, truth_segments = self.val_source.ground_truth(index)
                predicted = [Segment(s["id"], s["category_id"]) for s in result.segments]
                self.pq.update(result.panoptic.cpu().numpy(), predicted, truth_ids, truth_segments)
            if self.instance_file is not None and result.instances is not None:
                self.coco_results += masks_to_coco(image_id, result.instances, self.category_ids)
                self.coco_images.append(image_id)

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
        self.log_metrics(stage, metrics)
        self.last_metrics = metrics

    def _gather(self) -> None:
        """Merge PQ counts, the confusion matrix and instance results over ranks."""
        if self.trainer.world_size <= 1:
            return
        if self.miou is not None:
            torch.distributed.all_reduce(self.miou.confusion)
        counts = self.pq.counts if self.pq is not None else {}
        gathered = self.gathered((counts, self.coco_results, self.coco_images))
        if self.pq is not None:
            self.pq.counts = merge_counts([rank_counts for rank_counts, _, _ in gathered])
        self.coco_results = [r for g in gathered for r in g[1]]
        self.coco_images = [i for g in gathered for i in g[2]]

    # -- optimisation and checkpoints --------------------------------------------------------------

    def criterion_options(self, batch_idx: int, count: int) -> dict:
        """Each image's matching and loss points from its own generator (engine.seeding)."""
        return {"generators": sample_generators(self, batch_idx, count, self.device)}

    def configure_optimizers(self):
        hp = self.hparams
        # The paper's recipe: no weight decay on embeddings (queries, levels) and norms.
        groups = dense_parameter_groups(
            self.network, hp.lr, hp.lr * hp.backbone_multiplier, hp.layer_decay,
            no_decay=lambda name, p: p.ndim == 1 or "embed" in name and "mask_embed" not in name,
        )  # fmt: skip
        optimizer = adamw(groups, self.trainer, lr=hp.lr, weight_decay=hp.weight_decay)
        _, total_steps = training_steps(self.trainer)
        if hp.schedule == "cosine":
            schedule = cosine_with_warmup(optimizer, hp.warmup_steps, total_steps)
        else:
            schedule = poly_with_warmup(optimizer, hp.warmup_steps, total_steps)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}  # fmt: skip
