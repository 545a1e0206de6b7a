"""vistra: MAE, SupCon, DETR and Mask2Former for your own images."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``vistra.Predictor`` without importing torch on ``import vistra``.
    if name == "Predictor":
        from vistra.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'vistra' has no attribute {name!r}")
