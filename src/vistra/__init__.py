"""vistra: MAE, SupCon, DETR and Mask2Former for your own images."""

__version__ = "0.1.0"
