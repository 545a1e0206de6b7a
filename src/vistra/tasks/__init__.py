"""LightningModules joining a model, its criterion, its optimizer recipe and its metrics."""

from vistra.tasks.classification import LinearProbe
from vistra.tasks.contrastive import ContrastivePretraining
from vistra.tasks.pretrain_mae import MAEPretraining

__all__ = ["ContrastivePretraining", "LinearProbe", "MAEPretraining"]
