"""DETR training, COCO evaluation and prediction."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import nn

from vistra.evaluation.coco import COCOEvaluator, detections_to_coco, tensor_image_ids
from vistra.losses import HungarianMatcher, SetCriterion
from vistra.models.detr import detr_postprocess
from vistra.tasks.class_count import ClassCountCheck
from vistra.tasks.inference import InferenceSteps
from vistra.tasks.optim import (
    adamw,
    cosine_with_warmup,
    dense_parameter_groups,
    training_steps,
)
from vistra.tasks.set_prediction import SetPredictionSteps


class DetectionTask(InferenceSteps, ClassCountCheck, SetPredictionSteps, L.LightningModule):
    """Set-prediction training of ``network`` (a ``DETR``) with COCO box AP at validation.

    Batches are ``(images [B,3,H,W], pixel_mask [B,H,W], targets)`` from
    ``DetectionDataModule``. Validation logs the loss terms and the 12 COCO numbers
    (``val/AP``, ``val/AP50``, ...), prints the standard table and writes the predictions as
    COCO result JSON to ``<log_dir>/predictions/val_epoch_NNNN.json``.

    Args:
        network: the detector.
        cost_class, cost_bbox, cost_giou: matching costs (paper: 1, 5, 2).
        weight_ce, weight_bbox, weight_giou: loss weights (paper: 1, 5, 2).
        eos_coef: weight of the "no object" class (paper: 0.1).
        lr, lr_backbone, weight_decay: AdamW (paper: 1e-4, 1e-5, 1e-4).
        layer_decay: a ViT backbone's blocks train at ``lr_backbone`` x layer_decay^(depth + 1 -
            layer) (ViTDet); None: the backbone's own (0.7 for ViT-B, 0.8 L, 0.9 H); 1 turns it
            off. A timm backbone ignores it.
        lr_drop_epoch: multiply the learning rates by 0.1 after this epoch (paper: 200 of 300);
            None keeps them constant.
        warmup_steps: linear learning-rate warm-up (0 in the paper; helps short runs).
        schedule: "step" (the paper's drop by 10x at ``lr_drop_epoch``) or "cosine" (decay to
            0 over the run, for short runs such as the demo).
    """

    def __init__(
        self,
        network: nn.Module,
        cost_class: float = 1.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        weight_ce: float = 1.0,
        weight_bbox: float = 5.0,
        weight_giou: float = 2.0,
        eos_coef: float = 0.1,
        lr: float = 1e-4,
        lr_backbone: float = 1e-5,
        weight_decay: float = 1e-4,
        layer_decay: float | None = None,
        lr_drop_epoch: int | None = None,
        warmup_steps: int = 0,
        schedule: str = "step",
    ) -> None:
        super().__init__()
        if schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be 'step' or 'cosine', got {schedule!r}")
        self.save_hyperparameters(ignore=["network"])
        self.network = network
        matcher = HungarianMatcher(cost_class, cost_bbox, cost_giou)
        self.criterion = SetCriterion(
            network.num_classes, matcher, eos_coef, weight_ce, weight_bbox, weight_giou
        )
        self.evaluator: COCOEvaluator | None = None
        self.category_ids: list[int] | None = None
        self.class_names: list[str] | None = None

    first_category_id = 1  # COCO's

    def configured_classes(self) -> int:
        return self.network.num_classes

    # -- evaluation ----------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._categories_from_data()
        source = getattr(getattr(self.trainer, "datamodule", None), "val_source", None)
        annotations = getattr(source, "annotation_file", None)
        self.evaluator = COCOEvaluator(annotations) if annotations is not None else None

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch, batch_idx: int) -> None:
        _, outputs = self._step(batch, "val")
        self._collect(outputs, batch[2])

    def test_step(self, batch, batch_idx: int) -> None:
        _, outputs = self._step(batch, "test")
        self._collect(outputs, batch[2])

    def _collect(self, outputs: dict, targets: list[dict]) -> None:
        if self.evaluator is None:
            return
        sizes = torch.stack([t["orig_size"] for t in targets]).to(outputs["pred_boxes"].device)
        detections = detr_postprocess(outputs, sizes)
        image_ids = tensor_image_ids(targets)
        results = []
        for image_id, detection in zip(image_ids, detections):
            results += detections_to_coco(image_id, detection, self.category_ids)
        self.evaluator.update(image_ids, results)

    def on_validation_epoch_end(self) -> None:
        self._evaluate("val")

    def on_test_epoch_end(self) -> None:
        self._evaluate("test")

    def _evaluate(self, stage: str) -> None:
        if self.evaluator is None or self.trainer.sanity_checking:
            return
        gathered = self.gathered((self.evaluator.image_ids, self.evaluator.results))
        image_ids = set().union(*(ids for ids, _ in gathered))
        results = [result for _, rank_results in gathered for result in rank_results]
        self.evaluator.image_ids, self.evaluator.results = image_ids, results
        log_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        output = log_dir / "predictions" / f"{stage}_epoch_{self.current_epoch:04d}.json"
        stats, table = self.evaluator.compute(output if self.trainer.is_global_zero else None)
        if self.trainer.is_global_zero:
            print(f"\nCOCO box AP, {stage}, epoch {self.current_epoch} ({len(image_ids)} images)")
            print(table)
        self.log_metrics(stage, stats)
        self.last_coco_stats = stats

    # -- optimisation and checkpoints ---------------------------------------------------------

    def configure_optimizers(self):
        hp = self.hparams
        groups = dense_parameter_groups(self.network, hp.lr, hp.lr_backbone, hp.layer_decay)
        optimizer = adamw(groups, self.trainer, lr=hp.lr, weight_decay=hp.weight_decay)
        steps_per_epoch, total_steps = training_steps(self.trainer)
        if hp.schedule == "cosine":
            schedule = cosine_with_warmup(optimizer, hp.warmup_steps, total_steps)
        else:

            def factor(step: int) -> float:
                warm = min(1.0, (step + 1) / hp.warmup_steps) if hp.warmup_steps else 1.0
                drop = hp.lr_drop_epoch is not None and step >= hp.lr_drop_epoch * steps_per_epoch
                return warm * (0.1 if drop else 1.0)

            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}  # fmt: skip
