"""Plain ``nn.Module``s: no training engine imported here."""

from vistra.models.backbones import create_encoder
from vistra.models.supcon import SupConModel

__all__ = ["SupConModel", "create_encoder"]
