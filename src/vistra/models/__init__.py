"""Plain ``nn.Module``s: no training engine imported here."""

from vistra.models.backbones import create_encoder
from vistra.models.detr import DETR, detr_postprocess
from vistra.models.mae import MaskedAutoencoder
from vistra.models.mask2former import Mask2Former
from vistra.models.supcon import SupConModel
from vistra.models.vit_classifier import ViTClassifier

__all__ = [
    "DETR",
    "Mask2Former",
    "MaskedAutoencoder",
    "detr_postprocess",
    "SupConModel",
    "ViTClassifier",
    "create_encoder",
]
