"""LightningModules joining a model, its criterion, its optimizer recipe and its metrics."""

from vistra.tasks.box_map_pretraining import BoxMapPretraining
from vistra.tasks.classification import LinearProbe
from vistra.tasks.contrastive import ContrastivePretraining
from vistra.tasks.detection import DetectionTask
from vistra.tasks.finetune import FineTuning
from vistra.tasks.pretrain_mae import MAEPretraining
from vistra.tasks.segmentation import SegmentationTask

__all__ = [
    "BoxMapPretraining",
    "ContrastivePretraining",
    "DetectionTask",
    "FineTuning",
    "LinearProbe",
    "MAEPretraining",
    "SegmentationTask",
]
