"""Building blocks shared by the detection and segmentation models."""

from vistra.models.layers.mlp import MLP
from vistra.models.layers.multihead import Attention, FeedForward
from vistra.models.layers.position import sine_position_encoding

__all__ = ["MLP", "Attention", "FeedForward", "sine_position_encoding"]
