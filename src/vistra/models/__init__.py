"""Plain ``nn.Module``s: no training engine imported here."""

from vistra.models.backbones import create_encoder
from vistra.models.mae import MaskedAutoencoder
from vistra.models.supcon import SupConModel

__all__ = ["MaskedAutoencoder", "SupConModel", "create_encoder"]
